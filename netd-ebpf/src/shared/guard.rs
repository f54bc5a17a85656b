//! The uplink guard's decision for IPv4 (`guard6` for IPv6): what must never come in
//! from outside. `uplink_guard` (XDP) and `uplink_ingress` (TC, on virtual uplinks)
//! both ask it.
use aya_ebpf::maps::lpm_trie::Key;
use netd_common::{drop_reason, drop_reason::DropReason, PortKey, SUBNET_F_PROTECTED};

use crate::{
    maps::{PORTS, SUBNETS},
    parse::{Ipv4, Packet},
    proto::has_ports,
};

const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

/// The guard's verdict on an IPv4 packet from outside, in XDP or in TC.
#[inline(always)]
pub fn check<C: Packet>(ctx: &C, ip: &Ipv4) -> Result<(), DropReason> {
    // The destination port, where the packet carries one.
    let dport = if has_ports(ip.proto) && ip.has_l4_header() {
        ctx.load::<u16>(ip.l4_off + 2).ok()
    } else {
        None
    };
    match decide(ip.saddr, ip.daddr, ip.proto, dport) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// The drop reason, or None to pass.
#[inline(always)]
fn decide(saddr: u32, daddr: u32, proto: u8, dport: Option<u16>) -> Option<DropReason> {
    let first = |a: u32| a.to_ne_bytes()[0];
    if first(saddr) == 127 || subnet_flags(saddr).is_some() {
        return Some(drop_reason::GUARD_SPOOFED);
    }
    if first(daddr) == 127 {
        return Some(drop_reason::GUARD_LOOPBACK);
    }
    if subnet_flags(daddr).is_some_and(|v| v & SUBNET_F_PROTECTED != 0) {
        return Some(drop_reason::GUARD_TO_CONTAINER);
    }
    let dport = dport?;
    // A port published only on 127.0.0.1 is not for outside: without this, the host
    // stack would answer with a reset and show that it exists.
    let mut key = PortKey {
        host_ip: LOOPBACK,
        host_port: dport,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if unsafe { PORTS.get(&key) }.is_none() {
        return None;
    }
    key.host_ip = daddr;
    if unsafe { PORTS.get(&key) }.is_some() {
        return None;
    }
    key.host_ip = 0;
    if unsafe { PORTS.get(&key) }.is_some() {
        return None;
    }
    Some(drop_reason::GUARD_LOOPBACK)
}

/// The trie value of the container subnet `addr` is in, if any.
#[inline(always)]
fn subnet_flags(addr: u32) -> Option<u32> {
    SUBNETS.get(Key::new(32, addr)).copied()
}
