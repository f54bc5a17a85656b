//! The agent's side of conntrack: listing, flushing and expiring flows in the pinned
//! LRU map. The table can hold hundreds of thousands of entries, so every walk is
//! batched (BPF_MAP_LOOKUP_BATCH / BPF_MAP_DELETE_BATCH: a few syscalls per 4,096
//! entries instead of two per entry), and the garbage collector runs on a thread of its
//! own with a handle of its own on the pinned map: it never takes the daemon's lock, so
//! API latency does not grow with the table.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd, AsRawFd},
    path::Path,
    time::Duration,
};

use anyhow::Context;
use aya::maps::MapData;
use netd_common::{ct_kind, ct_tcp, CtEntry, CtKey, IPPROTO_TCP, IPPROTO_UDP};

use crate::model::IpProto;

/// Idle timeouts of conntrack entries, by protocol and state.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    /// FIN seen in one direction.
    pub tcp_closing: Duration,
    /// FIN seen both ways, or RST.
    pub tcp_closed: Duration,
    /// UDP with traffic one way only.
    pub udp: Duration,
    /// UDP with replies (a "stream").
    pub udp_stream: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(86_400),
            tcp_closing: Duration::from_secs(120),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

/// The clock bpf_ktime_get_ns() reads.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The key of the other direction of the flow `(k, e)` belongs to.
pub fn peer_key(k: &CtKey, e: &CtEntry) -> CtKey {
    CtKey {
        saddr: e.daddr,
        daddr: e.saddr,
        sport: e.dport,
        dport: e.sport,
        proto: k.proto,
        _pad: [0; 3],
    }
}

/// The idle timeout of a flow whose two directions are `a` and `b`.
pub fn timeout_of(proto: u8, a: &CtEntry, b: Option<&CtEntry>, t: &Timeouts) -> Duration {
    let flags_b = b.map(|b| b.tcp_flags).unwrap_or(0);
    let replied = b.is_some_and(|b| b.packets > 0) && a.packets > 0;
    match proto {
        IPPROTO_TCP => {
            let flags = a.tcp_flags | flags_b;
            let fin_both = a.tcp_flags & ct_tcp::FIN != 0 && flags_b & ct_tcp::FIN != 0;
            if flags & ct_tcp::RST != 0 || fin_both {
                t.tcp_closed
            } else if flags & ct_tcp::FIN != 0 {
                t.tcp_closing
            } else if flags & ct_tcp::ESTABLISHED != 0 && replied {
                t.tcp_established
            } else {
                t.tcp_syn
            }
        }
        IPPROTO_UDP if replied => t.udp_stream,
        IPPROTO_UDP => t.udp,
        _ => t.icmp,
    }
}

/// The keys of the flows in `all` that have been idle past their timeout at `now_ns`.
/// A flow's idle time is that of its most recent direction.
pub fn expired(all: &HashMap<CtKey, CtEntry>, now_ns: u64, t: &Timeouts) -> Vec<CtKey> {
    all.iter()
        .filter(|(k, e)| {
            let peer = all.get(&peer_key(k, e));
            let last = peer.map_or(e.last_seen_ns, |p| p.last_seen_ns.max(e.last_seen_ns));
            let idle = Duration::from_nanos(now_ns.saturating_sub(last));
            idle > timeout_of(k.proto, e, peer, t)
        })
        .map(|(k, _)| *k)
        .collect()
}

/// One direction of a tracked flow, in domain terms (for `netd conntrack ls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub proto: IpProto,
    /// The tuple as packets carry it.
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// "dnat", "dnat-reply", "snat", "snat-reply".
    pub kind: &'static str,
    /// The tuple packets are rewritten to.
    pub to_src: SocketAddrV4,
    pub to_dst: SocketAddrV4,
    /// TCP flags seen in this direction: "syn", "syn-ack", "established", "fin", "rst".
    pub tcp: Vec<&'static str>,
    pub packets: u64,
    pub bytes: u64,
    pub idle: Duration,
}

fn endpoint(addr: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(addr)), u16::from_be(port))
}

impl Flow {
    /// The flow direction an entry records; None for a protocol netd does not track
    /// (the datapath inserts none).
    pub fn new(k: &CtKey, v: &CtEntry, now_ns: u64) -> Option<Flow> {
        let tcp = [
            (ct_tcp::SYN, "syn"),
            (ct_tcp::SYN_ACK, "syn-ack"),
            (ct_tcp::ESTABLISHED, "established"),
            (ct_tcp::FIN, "fin"),
            (ct_tcp::RST, "rst"),
        ]
        .into_iter()
        .filter(|(bit, _)| v.tcp_flags & bit != 0)
        .map(|(_, name)| name)
        .collect();
        Some(Flow {
            proto: super::maps::ipproto_of(k.proto)?,
            src: endpoint(k.saddr, k.sport),
            dst: endpoint(k.daddr, k.dport),
            kind: match v.kind {
                ct_kind::DNAT => "dnat",
                ct_kind::DNAT_REPLY => "dnat-reply",
                ct_kind::SNAT => "snat",
                ct_kind::SNAT_REPLY => "snat-reply",
                _ => "other",
            },
            to_src: endpoint(v.saddr, v.sport),
            to_dst: endpoint(v.daddr, v.dport),
            tcp,
            packets: v.packets,
            bytes: v.bytes,
            idle: Duration::from_nanos(now_ns.saturating_sub(v.last_seen_ns)),
        })
    }
}

/// How many entries one batch syscall moves.
const BATCH: usize = 4096;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of union bpf_attr.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: attr points at buffers the caller sized for `count` keys and values (and
    // 8-byte batch cursors); the kernel writes only within them and into attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One conntrack map, walked and pruned in batches.
pub struct CtMap {
    map: MapData,
    capacity: u32,
}

/// The conntrack table: confirmed flows and new ones (see netd-ebpf's conntrack.rs for
/// why there are two maps). Each holder (the API's datapath, the GC thread) opens its
/// own handles, so none waits for another.
pub struct CtTable {
    confirmed: CtMap,
    new: CtMap,
}

impl CtTable {
    /// Opens the two maps pinned at `confirmed` and `new`.
    pub fn open(confirmed: &Path, new: &Path) -> anyhow::Result<CtTable> {
        Ok(CtTable {
            confirmed: CtMap::open(confirmed)?,
            new: CtMap::open(new)?,
        })
    }

    /// Confirmed entries the table can hold (both directions of a flow take one each):
    /// --ct-max flows.
    pub fn capacity(&self) -> u32 {
        self.confirmed.capacity
    }

    /// Entries the map of new, unanswered flows holds at most.
    pub fn new_capacity(&self) -> u32 {
        self.new.capacity
    }

    /// How many entries the table holds now (a full walk of both maps).
    pub fn count(&self) -> anyhow::Result<usize> {
        Ok(self.confirmed.entries()?.len() + self.new.entries()?.len())
    }

    /// Every entry of both maps.
    pub fn entries(&self) -> anyhow::Result<Vec<(CtKey, CtEntry)>> {
        let mut all = self.confirmed.entries()?;
        all.extend(self.new.entries()?);
        Ok(all)
    }

    /// Deletes `keys` wherever they are; returns how many entries went.
    pub fn delete(&self, keys: &[CtKey]) -> usize {
        self.confirmed.delete(keys) + self.new.delete(keys)
    }
}

impl CtMap {
    pub fn new(map: MapData) -> anyhow::Result<CtMap> {
        let capacity = map.info().context("conntrack map info")?.max_entries();
        Ok(CtMap { map, capacity })
    }

    pub fn open(pin: &Path) -> anyhow::Result<CtMap> {
        let map = MapData::from_pin(pin)
            .with_context(|| format!("opening the conntrack map {}", pin.display()))?;
        CtMap::new(map)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    fn fd(&self) -> u32 {
        self.map.fd().as_fd().as_raw_fd() as u32
    }

    /// Every entry, read in batches.
    pub fn entries(&self) -> anyhow::Result<Vec<(CtKey, CtEntry)>> {
        let mut out = Vec::new();
        let mut keys = vec![CtKey::default(); BATCH];
        let mut vals = vec![CtEntry::default(); BATCH];
        let (mut cursor_in, mut cursor_out) = (0u64, 0u64);
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    &mut cursor_in as *mut u64 as u64
                },
                out_batch: &mut cursor_out as *mut u64 as u64,
                keys: keys.as_mut_ptr() as u64,
                values: vals.as_mut_ptr() as u64,
                count: BATCH as u32,
                map_fd: self.fd(),
                ..Default::default()
            };
            let r = bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let n = attr.count as usize;
            out.extend(keys[..n].iter().copied().zip(vals[..n].iter().copied()));
            match r {
                Ok(()) => {}
                // ENOENT: the walk reached the end (with `n` entries in this last call).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e).context("BPF_MAP_LOOKUP_BATCH on conntrack"),
            }
            cursor_in = cursor_out;
            first = false;
        }
        Ok(out)
    }

    /// Deletes `keys` in batches; keys not in this map (evicted, deleted by another
    /// handle, or in the other map) are skipped. Returns how many this call removed.
    pub fn delete(&self, keys: &[CtKey]) -> usize {
        let mut removed = 0;
        let mut rest = keys;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(BATCH)];
            let mut attr = BatchAttr {
                keys: chunk.as_ptr() as u64,
                count: chunk.len() as u32,
                map_fd: self.fd(),
                ..Default::default()
            };
            let r = bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr);
            let done = attr.count as usize;
            removed += done;
            match r {
                Ok(()) => rest = &rest[chunk.len()..],
                // The key at `done` was not there: step over it and go on.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => rest = &rest[done + 1..],
                Err(e) => {
                    log::warn!("BPF_MAP_DELETE_BATCH on conntrack: {e}");
                    break;
                }
            }
        }
        removed
    }
}

impl CtTable {
    /// Every flow direction, for listings.
    pub fn flows(&self) -> anyhow::Result<Vec<Flow>> {
        let now = monotonic_ns();
        Ok(self
            .entries()?
            .iter()
            .filter_map(|(k, v)| Flow::new(k, v, now))
            .collect())
    }

    /// Removes the flows of protocol `proto` (IPPROTO_*), or all of them.
    pub fn flush_proto(&self, proto: Option<u8>) -> anyhow::Result<usize> {
        self.flush(|k, _| proto.is_none_or(|p| p == k.proto))
    }

    /// Removes every flow (both directions) one of whose entries `pred` selects.
    pub fn flush(&self, pred: impl Fn(&CtKey, &CtEntry) -> bool) -> anyhow::Result<usize> {
        let mut doomed: Vec<CtKey> = Vec::new();
        for (k, e) in self.entries()? {
            if pred(&k, &e) {
                doomed.push(k);
                doomed.push(peer_key(&k, &e));
            }
        }
        doomed.sort_unstable_by_key(|k| (k.saddr, k.daddr, k.sport, k.dport, k.proto));
        doomed.dedup();
        Ok(self.delete(&doomed))
    }

    /// Removes flows idle for longer than their timeout; returns how many entries went.
    pub fn gc(&self, now_ns: u64, t: &Timeouts) -> anyhow::Result<usize> {
        let all: HashMap<CtKey, CtEntry> = self.entries()?.into_iter().collect();
        let doomed = expired(&all, now_ns, t);
        drop(all);
        Ok(self.delete(&doomed))
    }
}

/// Runs the garbage collector every `every` on a thread of its own, until the process
/// ends. It holds its own map handle and no lock of the daemon's.
pub fn spawn_gc(table: CtTable, every: Duration, timeouts: Timeouts) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("netd-ct-gc".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match table.gc(monotonic_ns(), &timeouts) {
                Ok(0) => {}
                Ok(n) => log::debug!("conntrack gc: {n} entries expired"),
                Err(e) => log::warn!("conntrack gc: {e:#}"),
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(last_seen_s: u64, packets: u64, tcp_flags: u8) -> CtEntry {
        CtEntry {
            last_seen_ns: last_seen_s * 1_000_000_000,
            packets,
            tcp_flags,
            ..Default::default()
        }
    }

    /// A flow a->b rewritten to c: its two keys point at each other through peer_key.
    fn flow(proto: u8, fwd: CtEntry, rev: CtEntry) -> [(CtKey, CtEntry); 2] {
        let k = CtKey {
            saddr: 1,
            daddr: 2,
            sport: 10,
            dport: 20,
            proto,
            _pad: [0; 3],
        };
        let fwd = CtEntry {
            saddr: 1,
            daddr: 3,
            sport: 10,
            dport: 30,
            ..fwd
        };
        let rk = peer_key(&k, &fwd);
        let rev = CtEntry {
            saddr: 2,
            daddr: 1,
            sport: 20,
            dport: 10,
            ..rev
        };
        assert_eq!(peer_key(&rk, &rev), k, "the pair must point at each other");
        [(k, fwd), (rk, rev)]
    }

    #[test]
    fn a_flow_lives_as_long_as_its_most_recent_direction() {
        let t = Timeouts {
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            ..Default::default()
        };
        // Answered UDP: the stream timeout applies, from the newest of the two.
        let all: HashMap<_, _> = flow(IPPROTO_UDP, entry(0, 5, 0), entry(100, 5, 0))
            .into_iter()
            .collect();
        assert!(expired(&all, 150 * 1_000_000_000, &t).is_empty());
        assert_eq!(expired(&all, 221 * 1_000_000_000, &t).len(), 2);
        // One-way UDP: the short timeout.
        let all: HashMap<_, _> = flow(IPPROTO_UDP, entry(0, 5, 0), entry(0, 0, 0))
            .into_iter()
            .collect();
        assert_eq!(expired(&all, 31 * 1_000_000_000, &t).len(), 2);
    }

    #[test]
    fn tcp_state_picks_the_timeout() {
        let t = Timeouts::default();
        let est = ct_tcp::SYN | ct_tcp::ESTABLISHED;
        let all: HashMap<_, _> = flow(IPPROTO_TCP, entry(0, 3, est), entry(0, 3, est))
            .into_iter()
            .collect();
        assert!(expired(&all, 3_600 * 1_000_000_000, &t).is_empty());
        let all: HashMap<_, _> = flow(
            IPPROTO_TCP,
            entry(0, 3, est | ct_tcp::FIN),
            entry(0, 3, est | ct_tcp::FIN),
        )
        .into_iter()
        .collect();
        assert_eq!(expired(&all, 11 * 1_000_000_000, &t).len(), 2);
    }
}
