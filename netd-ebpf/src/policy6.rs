//! IPv6 lookups shared by the hook points (`policy.rs` for IPv4): published ports, and
//! accounting by kind.
use netd_common::{
    ct_kind, drop_reason, drop_reason::DropReason, event, Backend6, CtEntry6, PortKey6,
    EP_F_INTERNAL,
};

use crate::{
    maps::{ADDRS6, PORTS6},
    metrics::count,
    parse6::Flow6,
};

/// The backend of the IPv6 port `flow` is addressed to: the exact host-address entry
/// first, then the wildcard ([::]) one. The bool says whether it was the wildcard.
#[inline(always)]
pub fn published(flow: &Flow6) -> Option<(Backend6, bool)> {
    let mut key = PortKey6 {
        host_ip: flow.daddr,
        host_port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if let Some(b) = unsafe { PORTS6.get(&key) } {
        return Some((*b, false));
    }
    key.host_ip = [0; 16];
    unsafe { PORTS6.get(&key) }.map(|b| (*b, true))
}

/// A published port of an --internal network's container leads nowhere.
#[inline(always)]
pub fn backend_allowed(b: &Backend6) -> Result<(), DropReason> {
    // SAFETY: a read-only lookup of a plain-data value.
    match unsafe { ADDRS6.get(&b.ip) } {
        Some(a) if a.flags & EP_F_INTERNAL != 0 => Err(drop_reason::INTERNAL),
        _ => Ok(()),
    }
}

/// Counts a rewritten packet by kind (per-port counters are IPv4's only).
#[inline(always)]
pub fn account(ct: &CtEntry6) {
    count(match ct.kind {
        ct_kind::DNAT => event::DNAT,
        ct_kind::DNAT_REPLY => event::DNAT_REPLY,
        ct_kind::SNAT => event::SNAT,
        _ => event::SNAT_REPLY,
    });
}
