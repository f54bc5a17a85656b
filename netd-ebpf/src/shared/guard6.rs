//! The uplink guard's IPv6 checks (`guard.rs` for IPv4): from outside, nothing may come
//! addressed straight to a NAT-protected or internal container subnet, with a container
//! or loopback source, or to loopback or a port published only on [::1]. Neighbour
//! discovery on the uplink is none of these and passes.
use aya_ebpf::maps::lpm_trie::Key;
use netd_common::{
    drop_reason, drop_reason::DropReason, PortKey6, SUBNET_F_FILTERED, SUBNET_F_PROTECTED,
};

use crate::{
    direct,
    maps::{PORTS6, SUBNETS6},
    parse::Packet,
    parse6::{loopback, Ipv6},
    proto::has_ports,
};

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The guard's verdict on an IPv6 packet from outside, in XDP or in TC.
#[inline(always)]
pub fn check<C: Packet>(ctx: &C, ip: &Ipv6) -> Result<(), DropReason> {
    if loopback(&ip.saddr) || subnet_flags(&ip.saddr).is_some() {
        return Err(drop_reason::GUARD_SPOOFED);
    }
    if loopback(&ip.daddr) {
        return Err(drop_reason::GUARD_LOOPBACK);
    }
    if let Some(v) = subnet_flags(&ip.daddr) {
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
    // A port published only on [::1] is not for outside (see guard.rs).
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
fn subnet_flags(addr: &[u8; 16]) -> Option<u32> {
    SUBNETS6.get(Key::new(128, *addr)).copied()
}
