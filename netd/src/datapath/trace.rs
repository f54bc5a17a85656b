//! The datapath trace as the agent sees it (see `netd_common::trace`): a switch for the
//! programs' CONFIG_F_TRACE bit, counted per reader, and the ring buffer's records as
//! `PacketTrace` values.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{anyhow, Context};
use aya::maps::{Array, Map, MapData, RingBuf};
use netd_common::{
    drop_reason,
    trace::{hook, verdict, TraceRecord},
    Config, CONFIG_F_TRACE,
};

use super::map_names;

/// One packet a program decided on, as it left the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketTrace {
    /// CLOCK_MONOTONIC nanoseconds.
    pub mono_ns: u64,
    pub hook: &'static str,
    pub ifindex: u32,
    /// "pass", "drop" or "redirect".
    pub verdict: &'static str,
    /// The drop reason's name, for a drop.
    pub reason: Option<&'static str>,
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub len: u32,
}

impl PacketTrace {
    /// Decodes one ring buffer record; None for a record of another shape.
    pub fn decode(bytes: &[u8]) -> Option<PacketTrace> {
        let r: TraceRecord = bytemuck::try_pod_read_unaligned(bytes).ok()?;
        let name = |names: &[&'static str], i: usize| names.get(i).copied().unwrap_or("?");
        let addr = |ip: [u8; 16], port: u16| {
            let ip = match r.family {
                6 => IpAddr::V6(Ipv6Addr::from(ip)),
                _ => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
            };
            SocketAddr::new(ip, u16::from_be(port))
        };
        Some(PacketTrace {
            mono_ns: r.ts_ns,
            hook: name(&hook::NAMES, r.hook.into()),
            ifindex: r.ifindex,
            verdict: name(&verdict::NAMES, r.verdict.into()),
            reason: (r.verdict == verdict::DROP)
                .then(|| name(&drop_reason::NAMES, r.reason.into())),
            proto: r.proto,
            src: addr(r.saddr, r.sport),
            dst: addr(r.daddr, r.dport),
            len: r.len,
        })
    }
}

/// Opens the trace ring buffer from its pin under `bpf_dir`.
pub fn open_ring(bpf_dir: &Path) -> anyhow::Result<RingBuf<MapData>> {
    let pin = bpf_dir.join(map_names::TRACE);
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    RingBuf::try_from(Map::RingBuf(data)).map_err(|e| anyhow!("{}: {e}", pin.display()))
}

/// Turns the programs' trace bit on while anyone reads the trace (or always, with
/// `--debug-datapath`), and off again when the last reader leaves, so an idle agent's
/// datapath pays nothing for it.
#[derive(Clone)]
pub struct TraceSwitch {
    inner: Arc<Mutex<SwitchState>>,
}

struct SwitchState {
    config: Array<MapData, Config>,
    readers: usize,
    always: bool,
}

/// A reader's hold on the switch: the trace stays on until every hold is dropped.
pub struct TraceHold {
    switch: TraceSwitch,
}

impl TraceSwitch {
    /// A switch over the config map pinned under `bpf_dir`; `always` keeps it on.
    pub fn open(bpf_dir: &Path, always: bool) -> anyhow::Result<TraceSwitch> {
        let pin = bpf_dir.join(map_names::CONFIG);
        let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
        let config = Array::try_from(Map::Array(data))?;
        let s = TraceSwitch {
            inner: Arc::new(Mutex::new(SwitchState {
                config,
                readers: 0,
                always,
            })),
        };
        s.apply()?;
        Ok(s)
    }

    /// One more reader: the bit goes on with the first.
    pub fn hold(&self) -> anyhow::Result<TraceHold> {
        self.lock().readers += 1;
        let hold = TraceHold {
            switch: self.clone(),
        };
        self.apply()?;
        Ok(hold)
    }

    pub fn is_on(&self) -> bool {
        let s = self.lock();
        s.always || s.readers > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SwitchState> {
        // A panic while holding this lock leaves plain integers behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the bit the readers call for into the config entry (read, modify, write:
    /// the rest of the entry is the daemon's configuration, written once at start).
    fn apply(&self) -> anyhow::Result<()> {
        let mut s = self.lock();
        let want = s.always || s.readers > 0;
        let mut cfg = s.config.get(&0, 0)?;
        let flags = if want {
            cfg.flags | CONFIG_F_TRACE
        } else {
            cfg.flags & !CONFIG_F_TRACE
        };
        if flags != cfg.flags {
            cfg.flags = flags;
            s.config.set(0, cfg, 0)?;
        }
        Ok(())
    }
}

impl Drop for TraceHold {
    fn drop(&mut self) {
        {
            let mut s = self.switch.lock();
            s.readers = s.readers.saturating_sub(1);
        }
        if let Err(e) = self.switch.apply() {
            log::warn!("turning the datapath trace off: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_in_host_order_with_its_names() {
        let v4 = |a: [u8; 4]| {
            let mut f = [0u8; 16];
            f[..4].copy_from_slice(&a);
            f
        };
        let r = TraceRecord {
            ts_ns: 7,
            ifindex: 3,
            saddr: v4([10, 99, 0, 2]),
            daddr: v4([172, 17, 0, 2]),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            len: 74,
            reason: drop_reason::SPOOFED_IP.0 as u16,
            hook: hook::ENDPOINT_EGRESS,
            verdict: verdict::DROP,
            proto: 6,
            family: 4,
            _pad: [0; 6],
        };
        let t = PacketTrace::decode(bytemuck::bytes_of(&r)).expect("decodes");
        assert_eq!(t.src, "10.99.0.2:40000".parse().expect("addr"));
        assert_eq!(t.dst, "172.17.0.2:80".parse().expect("addr"));
        assert_eq!((t.hook, t.verdict), ("endpoint_egress", "drop"));
        assert_eq!(
            t.reason,
            Some(drop_reason::NAMES[drop_reason::SPOOFED_IP.0 as usize])
        );
        let passed = TraceRecord {
            verdict: verdict::PASS,
            ..r
        };
        let t = PacketTrace::decode(bytemuck::bytes_of(&passed)).expect("decodes");
        assert_eq!((t.verdict, t.reason), ("pass", None));
        assert!(PacketTrace::decode(&[0u8; 12]).is_none(), "short record");
        let six = TraceRecord {
            saddr: "fd00:199::2".parse::<Ipv6Addr>().expect("v6").octets(),
            daddr: "fd00:1::2".parse::<Ipv6Addr>().expect("v6").octets(),
            hook: hook::UPLINK_INGRESS6,
            verdict: verdict::REDIRECT,
            family: 6,
            ..r
        };
        let t = PacketTrace::decode(bytemuck::bytes_of(&six)).expect("decodes");
        assert_eq!(t.src, "[fd00:199::2]:40000".parse().expect("addr"));
        assert_eq!(t.dst, "[fd00:1::2]:80".parse().expect("addr"));
        assert_eq!((t.hook, t.verdict), ("uplink_ingress6", "redirect"));
    }
}
