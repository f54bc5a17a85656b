//! netd's conntrack map, opened from its pin the way the daemon's own tools would,
//! to fill it to capacity for the API-latency figures.
use std::{
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, IterableMap, Map, MapData};
use netd_common::{
    batch::{bpf_batch, BatchAttr, BPF_MAP_UPDATE_BATCH},
    ct_kind, ct_tcp, map_names, CtEntry, CtKey, IPPROTO_TCP,
};

use crate::dp::{CTR_NET, HOST_IP, P_RR};

/// Entries per batch syscall.
const BATCH: usize = 8192;
/// The fake clients' addresses: 198.18.0.0/15, the range set aside for benchmarks
/// (RFC 2544), which no flow of the bench uses.
const CLIENTS: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Source ports per fake client.
const PORTS_PER_CLIENT: u32 = 60_000;

pub struct CtTable {
    map: HashMap<MapData, CtKey, CtEntry>,
    capacity: u32,
}

impl CtTable {
    /// Opens the map pinned under a daemon's bpffs directory.
    pub fn open(bpf_dir: &Path) -> Result<CtTable> {
        let path = bpf_dir.join(map_names::CONNTRACK);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening netd's conntrack map {}", path.display()))?;
        // The daemon sizes the map (`--ct-max`): ask the kernel, do not assume.
        let capacity = data.info()?.max_entries();
        let map = HashMap::try_from(Map::HashMap(data))
            .with_context(|| format!("{} is not a hash of CtKey", path.display()))?;
        Ok(CtTable { map, capacity })
    }

    /// Kernel ids of the maps pinned under `bpf_dir`.
    pub fn pinned_map_ids(bpf_dir: &Path) -> BTreeSet<u64> {
        std::fs::read_dir(bpf_dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| MapData::from_pin(e.path()).ok())
                    .filter_map(|m| m.info().ok())
                    .map(|i| u64::from(i.id()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// max_entries of the map.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Entries in the table now (one key walk).
    pub fn len(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    /// Fills the table to capacity with established, answered TCP flows through a
    /// published port (both directions, as the datapath inserts them), last seen now:
    /// the GC keeps every one of them and walks them all on each run. Returns the keys
    /// inserted, for [`CtTable::remove`].
    pub fn fill(&mut self) -> Result<Vec<CtKey>> {
        let now = monotonic_ns();
        // Network byte order, as the datapath compares them with packet bytes.
        let host = u32::from_ne_bytes(parse_ip(HOST_IP)?);
        let ctr = u32::from_ne_bytes(parse_ip(&format!("{CTR_NET}.2"))?);
        let port = P_RR.to_be();
        let flows = self.capacity / 2;
        let mut keys = Vec::with_capacity(2 * flows as usize);
        let mut values = Vec::with_capacity(2 * flows as usize);
        for i in 0..flows {
            let client = (CLIENTS + i / PORTS_PER_CLIENT).to_be();
            let cport = (1024 + (i % PORTS_PER_CLIENT) as u16).to_be();
            let entry = |saddr, daddr, sport, dport, kind| CtEntry {
                saddr,
                daddr,
                sport,
                dport,
                kind,
                tcp_flags: ct_tcp::SYN | ct_tcp::ESTABLISHED,
                last_seen_ns: now,
                packets: 10,
                bytes: 1000,
                ..Default::default()
            };
            let fwd = CtKey {
                saddr: client,
                daddr: host,
                sport: cport,
                dport: port,
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            };
            // The original direction is rewritten to the container, the reply to the
            // published address: each entry's tuple reversed is its peer's key.
            keys.push(fwd);
            values.push(entry(client, ctr, cport, port, ct_kind::DNAT));
            keys.push(CtKey {
                saddr: ctr,
                daddr: client,
                sport: port,
                dport: cport,
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            });
            values.push(entry(host, client, port, cport, ct_kind::DNAT_REPLY));
        }
        for (k, v) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
            self.update_batch(k, v)?;
        }
        Ok(keys)
    }

    /// Deletes `keys` (those the LRU evicted are gone already).
    pub fn remove(&mut self, keys: &[CtKey]) {
        for k in keys {
            let _ = self.map.remove(k);
        }
    }

    /// One BPF_MAP_UPDATE_BATCH: the kernel inserts the whole chunk in one syscall.
    fn update_batch(&self, keys: &[CtKey], values: &[CtEntry]) -> Result<()> {
        let fd = self.map.map().fd().as_fd().as_raw_fd();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len().min(values.len()) as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: keys and values point at `count` initialised #[repr(C)] elements of
        // the map's key and value sizes, alive for the call; the kernel only reads them.
        if let Err(e) = unsafe { bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr) } {
            bail!(
                "BPF_MAP_UPDATE_BATCH on netd's conntrack map: {e} (after {} entries)",
                attr.count
            );
        }
        Ok(())
    }
}

fn parse_ip(s: &str) -> Result<[u8; 4]> {
    Ok(s.parse::<std::net::Ipv4Addr>()
        .with_context(|| format!("{s} is not an IPv4 address"))?
        .octets())
}

/// CLOCK_MONOTONIC in ns: bpf_ktime_get_ns()'s clock, which `last_seen_ns` holds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
