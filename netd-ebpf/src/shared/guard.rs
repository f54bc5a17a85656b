//! The uplink guard's decision for IPv4 (`guard6` for IPv6): what must never come in
//! from outside. `uplink_guard` (XDP) and `uplink_ingress` (TC, on virtual uplinks)
//! both ask it.
use aya_ebpf::maps::lpm_trie::Key;
use netd_common::{
    drop_reason, drop_reason::DropReason, PortKey, SUBNET_F_FILTERED, SUBNET_F_PROTECTED,
};

use crate::{
    direct,
    maps::{PORTS, SUBNETS},
    parse::{Ipv4, Packet},
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
