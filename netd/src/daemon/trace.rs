//! `netd trace` and `--debug-datapath`: the datapath's per-packet records, read from the
//! ring buffer by one task and handed to every reader (and to the log).
use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use log::{info, warn};
use serde::{Deserialize, Serialize};
use tokio::{io::unix::AsyncFd, sync::broadcast};

use super::{Daemon, FlowFilter};
use crate::{
    datapath::{self, monotonic_ns, PacketTrace, TraceHold},
    error::Result,
};

/// Records a slow reader may fall behind by before it is told it lost some.
const BACKLOG: usize = 4096;

/// One traced packet (`GET /netd/trace`: a JSON line each).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceLine {
    /// Microseconds since the Unix epoch.
    pub time_us: u64,
    /// The program: uplink_guard (XDP), uplink_ingress, uplink_ingress6,
    /// endpoint_egress, endpoint_egress6, overlay_egress, overlay_ingress (TC).
    pub hook: String,
    /// The interface it runs on (its name in the daemon's namespace, else its index).
    pub iface: String,
    /// pass, drop or redirect.
    pub verdict: String,
    /// For a drop: the reason, as `netd stats` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// tcp, udp, icmp, or the protocol number.
    pub proto: String,
    /// Source and destination as the packet left the program (after any rewrite);
    /// ports are 0 without ports, the echo id for ICMP echo.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub len: u32,
}

/// A `GET /netd/trace` stream item: a packet, or how many a slow reader missed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TraceItem {
    Packet(TraceLine),
    Lost { lost: u64 },
}

/// A reader of the trace: the datapath writes records while it is alive.
pub struct TraceReader {
    rx: broadcast::Receiver<TraceLine>,
    filter: FlowFilter,
    _hold: TraceHold,
}

impl TraceReader {
    /// The next packet that passes the filter, or how many were lost; None once the
    /// daemon stops.
    pub async fn next(&mut self) -> Option<TraceItem> {
        loop {
            match self.rx.recv().await {
                Ok(l) if self.filter.matches_trace(&l) => return Some(TraceItem::Packet(l)),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some(TraceItem::Lost { lost: n })
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Daemon {
    /// Starts tracing for one reader (until it is dropped).
    pub fn trace(&self, filter: FlowFilter) -> Result<TraceReader> {
        let hold = self.trace.switch.hold()?;
        Ok(TraceReader {
            rx: self.trace.tx.subscribe(),
            filter,
            _hold: hold,
        })
    }
}

/// The daemon's side of the trace: the switch and the channel readers subscribe to.
pub struct Trace {
    switch: datapath::TraceSwitch,
    tx: broadcast::Sender<TraceLine>,
}

impl Trace {
    /// Opens the ring buffer and the switch under `bpf_dir` and starts the task that
    /// drains the ring; with `log`, every record also goes to the daemon's log.
    pub fn start(bpf_dir: &std::path::Path, log: bool) -> anyhow::Result<Trace> {
        let switch = datapath::TraceSwitch::open(bpf_dir, log)?;
        let ring = datapath::open_trace_ring(bpf_dir)?;
        // SAFETY: the RingBuf owns its map fd and returns that same fd for as long as
        // it lives, which is as long as the AsyncFd that owns it.
        let ring = unsafe {
            AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
                .map_err(|e| anyhow::anyhow!("watching the trace ring: {e}"))?
        };
        let (tx, _) = broadcast::channel(BACKLOG);
        tokio::spawn(drain(ring, tx.clone(), log));
        if log {
            info!("datapath trace on (--debug-datapath): every packet the datapath decides on is logged");
        }
        Ok(Trace { switch, tx })
    }
}

/// Moves records from the ring to the readers until the daemon stops. The ring wakes
/// the task only when there is something to read (and the programs write only while
/// tracing is on), so an idle trace costs nothing.
async fn drain(
    mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    tx: broadcast::Sender<TraceLine>,
    log: bool,
) {
    let mut names = IfNames::default();
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                warn!("datapath trace: {e}; trace stopped");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        let clock = Clock::now();
        while let Some(item) = ring.next() {
            let Some(p) = PacketTrace::decode(&item) else {
                continue;
            };
            let line = line_of(&p, &clock, &mut names);
            if log {
                info!(target: "netd::datapath", "{}", line.brief());
            }
            // No reader is fine: the record just goes nowhere.
            let _ = tx.send(line);
        }
        guard.clear_ready();
    }
}

/// Turns CLOCK_MONOTONIC stamps into wall time.
struct Clock {
    wall_us: u64,
    mono_ns: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            wall_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            mono_ns: monotonic_ns(),
        }
    }

    fn wall_us(&self, mono_ns: u64) -> u64 {
        self.wall_us
            .saturating_sub(self.mono_ns.saturating_sub(mono_ns) / 1000)
    }
}

/// Interface names by index, looked up once each.
#[derive(Default)]
struct IfNames(HashMap<u32, String>);

impl IfNames {
    fn get(&mut self, ifindex: u32) -> String {
        self.0
            .entry(ifindex)
            .or_insert_with(|| if_name(ifindex).unwrap_or_else(|| ifindex.to_string()))
            .clone()
    }
}

fn if_name(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

fn line_of(p: &PacketTrace, clock: &Clock, names: &mut IfNames) -> TraceLine {
    TraceLine {
        time_us: clock.wall_us(p.mono_ns),
        hook: p.hook.into(),
        iface: names.get(p.ifindex),
        verdict: p.verdict.into(),
        reason: p.reason.map(String::from),
        proto: datapath::ipproto_of(p.proto).to_string(),
        src: p.src,
        dst: p.dst,
        len: p.len,
    }
}

impl TraceLine {
    /// One line for a log or a terminal: `uplink_ingress eth0 tcp 10.99.0.2:40000 >
    /// 172.17.0.2:80 74B redirect`.
    pub fn brief(&self) -> String {
        let verdict = match &self.reason {
            Some(r) => format!("{} ({r})", self.verdict),
            None => self.verdict.clone(),
        };
        format!(
            "{} {} {} {} > {} {}B {verdict}",
            self.hook, self.iface, self.proto, self.src, self.dst, self.len
        )
    }
}
