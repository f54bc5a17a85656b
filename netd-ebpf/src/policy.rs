//! Lookups shared by the hook points: published ports and per-kind accounting.
use netd_common::{ct_flag, ct_kind, stat, Backend, CtEntry, PortKey};

use crate::{conntrack::count_port, maps::PORTS, metrics::count, parse::Flow};

/// The backend of the port `flow` is addressed to: the exact host-IP entry first, then
/// the wildcard one. The bool says whether it was the wildcard.
#[inline(always)]
pub fn published(flow: &Flow) -> Option<(Backend, bool)> {
    let mut key = PortKey {
        host_ip: flow.daddr,
        host_port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if let Some(b) = unsafe { PORTS.get(&key) } {
        return Some((*b, false));
    }
    key.host_ip = 0;
    unsafe { PORTS.get(&key) }.map(|b| (*b, true))
}

/// Counts a rewritten packet by kind, and against its published port where it has one.
#[inline(always)]
pub fn account(flow: &Flow, ct: &CtEntry) {
    let (reason, port) = match ct.kind {
        // Original direction: the published address is the packet's destination.
        ct_kind::DNAT => (stat::DNAT, Some((flow.daddr, flow.dport))),
        // Reply: it is the rewritten source.
        ct_kind::DNAT_REPLY => (stat::DNAT_REPLY, Some((ct.saddr, ct.sport))),
        ct_kind::SNAT => (stat::SNAT, None),
        _ => (stat::SNAT_REPLY, None),
    };
    count(reason);
    if let Some((ip, port)) = port {
        let key = PortKey {
            host_ip: if ct.flags & ct_flag::WILDCARD_PORT != 0 {
                0
            } else {
                ip
            },
            host_port: port,
            proto: flow.proto,
            _pad: 0,
        };
        count_port(&key, flow.len);
    }
}
