//! The uplink guard: drops what must never come in from outside. That covers packets
//! addressed straight to a NAT-protected or internal container subnet (containers are
//! reached through published ports only), packets claiming a container or loopback
//! source, and packets for loopback or for ports published only on it. Everything else
//! passes untouched.
//!
//! `uplink_guard` runs it in XDP on physical uplinks, before the kernel allocates an
//! skb. On virtual uplinks (veth), native XDP would switch the device to its NAPI path
//! and lose GRO batching (a measured 4x loss of throughput), so uplink_ingress runs the
//! same decision in TC instead (CONFIG_F_GUARD_IN_TC).
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use netd_common::{
    drop_reason,
    drop_reason::DropReason,
    trace::{hook, verdict as trace_verdict},
    PortKey, SUBNET_F_PROTECTED,
};

use crate::{
    maps::{PORTS, SUBNETS},
    metrics::count_drop,
    parse::{self, Ipv4, Packet},
    proto::has_ports,
    trace,
};

const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

// `frags`: the program copes with multi-buffer packets (it reads headers only, which
// are in the first buffer). Without it, attaching to a veth makes the kernel turn off
// GSO on the peer.
#[xdp(frags)]
pub fn uplink_guard(ctx: XdpContext) -> u32 {
    // A broken IPv4 header passes: the stack's ip_rcv drops it before routing it
    // anywhere.
    let verdict = match parse::ipv4(&ctx) {
        Ok(Some(ip)) => check(&ctx, &ip),
        Ok(None) => match crate::parse6::ipv6(&ctx) {
            Ok(Some(ip)) => crate::guard6::check(&ctx, &ip),
            _ => Ok(()),
        },
        Err(()) => Ok(()),
    };
    // The single exit: every drop counted with its reason.
    match verdict {
        Ok(()) => {
            if trace::on() {
                trace::xdp_packet(
                    ctx.ctx,
                    trace::meta(hook::UPLINK_GUARD, trace_verdict::PASS, 0),
                );
            }
            XDP_PASS
        }
        Err(reason) => {
            count_drop(reason);
            if trace::on() {
                let m = trace::meta(hook::UPLINK_GUARD, trace_verdict::DROP, reason.0 as u16);
                trace::xdp_packet(ctx.ctx, m);
            }
            XDP_DROP
        }
    }
}

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
