//! API latency while the conntrack table is full (issue #16): the garbage collector
//! once walked the whole table with a syscall per entry under the daemon's lock, and
//! `netd ps` stalled up to 750 ms every GC interval. Here netd runs with a GC every
//! second, the table is filled to capacity through its pin with established TCP flows
//! (so the collector walks all of them and expires none), and each of a few hundred
//! `GET /containers/json` calls (what `netd ps` sends) is timed on its own, beside the
//! same with an empty table.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use netd_common::{ct_kind, ct_tcp, map_names, CtEntry, CtKey, IPPROTO_TCP};
use serde::Serialize;

use crate::{Dp, Lab, Opts};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub calls: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CtFull {
    pub capacity: u64,
    pub entries: u64,
    pub gc_interval_s: u64,
    pub empty: Latency,
    pub full: Latency,
}

/// One `GET /containers/json` over the socket, timed from connect to the last byte.
fn call(sock: &Path) -> Result<Duration> {
    let t = Instant::now();
    let mut s =
        UnixStream::connect(sock).with_context(|| format!("connecting {}", sock.display()))?;
    s.write_all(b"GET /containers/json?all=1 HTTP/1.0\r\nHost: netd\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    if !buf.starts_with(b"HTTP/1.0 200") && !buf.starts_with(b"HTTP/1.1 200") {
        return Err(anyhow!(
            "GET /containers/json: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        ));
    }
    Ok(t.elapsed())
}

/// Calls for at least `span` (so that several collections fall in it) and 300 calls.
fn latency(sock: &Path, span: Duration) -> Result<Latency> {
    let start = Instant::now();
    let mut ms = Vec::new();
    while ms.len() < 300 || start.elapsed() < span {
        ms.push(call(sock)?.as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(5));
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        calls: ms.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Fills the confirmed-flow map under `bpf_dir` to capacity with established TCP flows
/// (both directions, seen just now); returns the map's capacity.
fn fill(bpf_dir: &Path) -> Result<u64> {
    let data = MapData::from_pin(bpf_dir.join(map_names::CONNTRACK))
        .context("opening the conntrack pin")?;
    let capacity = data.info()?.max_entries() as u64;
    let mut ct: HashMap<MapData, CtKey, CtEntry> = HashMap::try_from(Map::HashMap(data))?;
    let now = monotonic_ns();
    let flags = ct_tcp::SYN | ct_tcp::SYN_ACK | ct_tcp::ESTABLISHED;
    for i in 0..(capacity / 2) as u32 {
        // Clients 10.200.0.0/16 and ports, to 10.99.0.1:8080, DNATed to the container.
        let client = (0x0ac8_0000u32 | (i >> 14)).to_be();
        let sport = (1024 + (i & 0x3fff) as u16).to_be();
        let (host, ctr) = (0x0a63_0001u32.to_be(), 0xac1e_0002u32.to_be());
        let (hport, cport) = (8080u16.to_be(), 80u16.to_be());
        let key = CtKey {
            saddr: client,
            daddr: host,
            sport,
            dport: hport,
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let fwd = CtEntry {
            saddr: client,
            daddr: ctr,
            sport,
            dport: cport,
            kind: ct_kind::DNAT,
            tcp_flags: flags,
            last_seen_ns: now,
            packets: 2,
            ..Default::default()
        };
        let rkey = CtKey {
            saddr: ctr,
            daddr: client,
            sport: cport,
            dport: sport,
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let rev = CtEntry {
            saddr: host,
            daddr: client,
            sport: hport,
            dport: sport,
            kind: ct_kind::DNAT_REPLY,
            tcp_flags: flags,
            last_seen_ns: now,
            packets: 2,
            ..Default::default()
        };
        ct.insert(key, fwd, 0).context("filling conntrack")?;
        ct.insert(rkey, rev, 0).context("filling conntrack")?;
    }
    Ok(capacity)
}

pub fn measure(opts: &Opts) -> Result<CtFull> {
    let gc = 1;
    let mut lab = Lab::new(Dp::Netd, opts)?;
    lab.daemon_args = vec!["--ct-gc-interval".into(), gc.to_string()];
    let r = (|| {
        lab.start_daemon()?;
        lab.netd(&["run", "-d", "--name", "srv", "--", "sleep", "600"])?;
        let sock = lab.dir.join("run/netd.sock");
        let span = Duration::from_secs(4 * gc);
        let empty = latency(&sock, span)?;
        let capacity = fill(Path::new(&lab.bpf_dir()))?;
        let full = latency(&sock, span)?;
        let stats: serde_json::Value =
            serde_json::from_str(&lab.netd(&["stats", "--format", "json"])?)?;
        Ok(CtFull {
            capacity,
            entries: stats["conntrack_entries"].as_u64().unwrap_or(0),
            gc_interval_s: gc,
            empty,
            full,
        })
    })();
    lab.teardown();
    r
}

pub fn report(c: &CtFull) -> String {
    format!(
        "\nAPI latency, GET /containers/json (what `netd ps` sends), conntrack GC every {} s:\n\
         \x20 table          calls   p50 ms   p99 ms   max ms\n\
         \x20 empty        {:>7} {:>8.2} {:>8.2} {:>8.2}\n\
         \x20 full {:>7}/{:<7} {:>4} {:>8.2} {:>8.2} {:>8.2}\n",
        c.gc_interval_s,
        c.empty.calls,
        c.empty.p50_ms,
        c.empty.p99_ms,
        c.empty.max_ms,
        c.entries,
        c.capacity,
        c.full.calls,
        c.full.p50_ms,
        c.full.p99_ms,
        c.full.max_ms,
    )
}
