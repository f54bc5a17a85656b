//! `uplink_guard`: XDP on the uplink. Drops, before the kernel allocates an skb, what
//! must never come in from outside: packets addressed straight to a container subnet
//! (containers are reached through published ports only), packets claiming a container
//! or loopback source, and packets for loopback or for ports published only on it.
//! Everything else passes untouched.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use netd_common::{stat, PortKey, IPPROTO_TCP, IPPROTO_UDP, SUBNET_F_PROTECTED};

use crate::{
    maps::{PORTS, SUBNETS},
    metrics::count,
};

const ETH_HLEN: usize = 14;
const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

#[xdp]
pub fn uplink_guard(ctx: XdpContext) -> u32 {
    match verdict(&ctx) {
        Some(reason) => {
            count(reason);
            XDP_DROP
        }
        None => XDP_PASS,
    }
}

/// Bounds-checked pointer into the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// The drop reason, or None to pass.
#[inline(always)]
fn verdict(ctx: &XdpContext) -> Option<u32> {
    // SAFETY (all reads): ptr_at checked each read against data_end.
    let ethertype = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 12)? });
    if ethertype != 0x0800 {
        return None;
    }
    let vihl = unsafe { *ptr_at::<u8>(ctx, ETH_HLEN)? };
    let proto = unsafe { *ptr_at::<u8>(ctx, ETH_HLEN + 9)? };
    let saddr = unsafe { *ptr_at::<u32>(ctx, ETH_HLEN + 12)? };
    let daddr = unsafe { *ptr_at::<u32>(ctx, ETH_HLEN + 16)? };
    let first = |a: u32| a.to_ne_bytes()[0];
    if first(saddr) == 127 || subnet_flags(saddr).is_some() {
        return Some(stat::XDP_DROP_SPOOFED);
    }
    if first(daddr) == 127 {
        return Some(stat::XDP_DROP_LOOPBACK);
    }
    if subnet_flags(daddr).is_some_and(|v| v & SUBNET_F_PROTECTED != 0) {
        return Some(stat::XDP_DROP_TO_CONTAINER);
    }
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let frag = u16::from_be(unsafe { *ptr_at::<u16>(ctx, ETH_HLEN + 6)? });
    if frag & 0x1fff != 0 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    // The verifier needs a constant-bounded offset: ihl is at most 60.
    let l4 = ETH_HLEN + (ihl & 0x3c);
    let dport = unsafe { *ptr_at::<u16>(ctx, l4 + 2)? };
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
    Some(stat::XDP_DROP_LOOPBACK)
}

/// The trie value of the container subnet `addr` is in, if any.
#[inline(always)]
fn subnet_flags(addr: u32) -> Option<u32> {
    SUBNETS.get(Key::new(32, addr)).copied()
}
