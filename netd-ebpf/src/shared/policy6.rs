//! IPv6 lookups shared by the hook points (`policy.rs` for IPv4): published ports.
use netd_common::{drop_reason, drop_reason::DropReason, Backend6, PortKey6, EP_F_INTERNAL};

use crate::{
    conntrack::Family,
    maps::{ADDRS6, PORTS6},
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

/// A published port of an --internal network's container leads nowhere, and lets in
/// from outside (`from`: the client's address) only the sources the network's
/// restriction allows.
#[inline(always)]
pub fn backend_allowed(b: &Backend6, from: Option<&[u8; 16]>) -> Result<(), DropReason> {
    // SAFETY: a read-only lookup of a plain-data value.
    match unsafe { ADDRS6.get(&b.ip) } {
        Some(a) if a.flags & EP_F_INTERNAL != 0 => Err(drop_reason::INTERNAL),
        Some(a) => match from {
            Some(s) if !<[u8; 16]>::source_allowed(a.net_id, s) => Err(drop_reason::SOURCE_DENIED),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}
