//! The uplink guard's decision, for IPv4 (`check`) and IPv6 (`check6`) side by side:
//! what must never come in from outside. That is a packet with a container or loopback
//! source, one to loopback or to a port published only there, and one straight to a
//! container's address that its network's gateway mode does not let in (`direct`).
//! Neighbour discovery on the uplink is none of these and passes. `uplink_guard` (XDP)
//! and `uplink_ingress`/`uplink_ingress6` (TC, on virtual uplinks) all ask it.
use aya_ebpf::maps::lpm_trie::Key;
use netd_common::{
    drop_reason, drop_reason::DropReason, PortKey, PortKey6, SUBNET_F_FILTERED, SUBNET_F_PROTECTED,
};

use crate::{
    direct,
    maps::{PORTS, PORTS6, SUBNETS, SUBNETS6},
    parse::{Ipv4, Packet},
    parse6::{loopback, Ipv6},
    proto::has_ports,
};

const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

/// The guard's verdict on an IPv4 packet from outside, in XDP or in TC.
#[inline(always)]
pub fn check<C: Packet>(ctx: &C, ip: &Ipv4) -> Result<(), DropReason> {
    // The ports, where the packet carries them.
    let with_ports = has_ports(ip.proto) && ip.has_l4_header();
    let ports = if with_ports {
        direct::ports_of(ctx.load::<u32>(ip.l4_off))
    } else {
        (0, 0)
    };
    match decide(ctx.ifindex(), ip, with_ports, ports) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// The drop reason, or None to pass.
#[inline(always)]
fn decide(ifindex: u32, ip: &Ipv4, with_ports: bool, ports: (u16, u16)) -> Option<DropReason> {
    let (saddr, daddr, proto) = (ip.saddr, ip.daddr, ip.proto);
    let first = |a: u32| a.to_ne_bytes()[0];
    if first(saddr) == 127 || subnet_flags(saddr).is_some() {
        return Some(drop_reason::GUARD_SPOOFED);
    }
    if first(daddr) == 127 {
        return Some(drop_reason::GUARD_LOOPBACK);
    }
    if let Some(v) = subnet_flags(daddr) {
        if v & (SUBNET_F_PROTECTED | SUBNET_F_FILTERED) != 0 {
            let l4 = ip.has_l4_header();
            return direct::judge(ifindex, v, (&saddr, &daddr), proto, ports, l4);
        }
    }
    if !with_ports {
        return None;
    }
    let dport = ports.1;
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

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The guard's verdict on an IPv6 packet from outside, in XDP or in TC.
#[inline(always)]
pub fn check6<C: Packet>(ctx: &C, ip: &Ipv6) -> Result<(), DropReason> {
    if loopback(&ip.saddr) || subnet_flags6(&ip.saddr).is_some() {
        return Err(drop_reason::GUARD_SPOOFED);
    }
    if loopback(&ip.daddr) {
        return Err(drop_reason::GUARD_LOOPBACK);
    }
    if let Some(v) = subnet_flags6(&ip.daddr) {
        if v & (SUBNET_F_PROTECTED | SUBNET_F_FILTERED) != 0 {
            return to_container(ctx, ip, v);
        }
    }
    let proto = ip.proto;
    if !has_ports(proto) || !ip.has_l4_header() {
        return Ok(());
    }
    let Ok(dport) = ctx.load::<u16>(ip.l4_off + 2) else {
        return Ok(());
    };
    // A port published only on [::1] is not for outside (as 127.0.0.1 above).
    let mut key = PortKey6 {
        host_ip: LOOPBACK6,
        host_port: dport,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if unsafe { PORTS6.get(&key) }.is_none() {
        return Ok(());
    }
    key.host_ip = ip.daddr;
    if unsafe { PORTS6.get(&key) }.is_some() {
        return Ok(());
    }
    key.host_ip = [0; 16];
    if unsafe { PORTS6.get(&key) }.is_some() {
        return Ok(());
    }
    Err(drop_reason::GUARD_LOOPBACK)
}

/// Straight to a container of a protected or filtered subnet (`direct`). A
/// subprogram of its own: its temporaries stay off the callers' frames.
#[inline(never)]
fn to_container<C: Packet>(ctx: &C, ip: &Ipv6, subnet: u32) -> Result<(), DropReason> {
    let l4 = ip.has_l4_header();
    let ports = if has_ports(ip.proto) && l4 {
        direct::ports_of(ctx.load::<u32>(ip.l4_off))
    } else {
        (0, 0)
    };
    let addrs = (&ip.saddr, &ip.daddr);
    match direct::judge(ctx.ifindex(), subnet, addrs, ip.proto, ports, l4) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// The trie value of the container subnet `addr` is in, if any.
#[inline(always)]
fn subnet_flags6(addr: &[u8; 16]) -> Option<u32> {
    SUBNETS6.get(Key::new(128, *addr)).copied()
}
