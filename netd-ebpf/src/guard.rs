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
    programs::{TcContext, XdpContext},
};
use netd_common::{
    drop_reason, drop_reason::DropReason, PortKey, IPPROTO_TCP, IPPROTO_UDP, SUBNET_F_PROTECTED,
};

use crate::{
    maps::{PORTS, SUBNETS},
    metrics::count_drop,
};

const ETH_HLEN: usize = 14;
const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

// `frags`: the program copes with multi-buffer packets (it reads headers only, which
// are in the first buffer). Without it, attaching to a veth makes the kernel turn off
// GSO on the peer.
#[xdp(frags)]
pub fn uplink_guard(ctx: XdpContext) -> u32 {
    match xdp_headers(&ctx).and_then(|h| decide(&h)) {
        Some(reason) => {
            count_drop(reason);
            XDP_DROP
        }
        None => XDP_PASS,
    }
}

/// What the guard looks at.
pub struct Headers {
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    /// Destination port of a first (or only) TCP/UDP fragment.
    pub dport: Option<u16>,
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

#[inline(always)]
fn xdp_headers(ctx: &XdpContext) -> Option<Headers> {
    // SAFETY (all reads): ptr_at checked each read against data_end.
    let ethertype = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 12)? });
    if ethertype != 0x0800 {
        return None;
    }
    let vihl = unsafe { *ptr_at::<u8>(ctx, ETH_HLEN)? };
    let proto = unsafe { *ptr_at::<u8>(ctx, ETH_HLEN + 9)? };
    let saddr = unsafe { *ptr_at::<u32>(ctx, ETH_HLEN + 12)? };
    let daddr = unsafe { *ptr_at::<u32>(ctx, ETH_HLEN + 16)? };
    let frag = u16::from_be(unsafe { *ptr_at::<u16>(ctx, ETH_HLEN + 6)? });
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let dport = if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && frag & 0x1fff == 0 && ihl >= 20
    {
        // The verifier needs a constant-bounded offset: ihl is at most 60.
        let l4 = ETH_HLEN + (ihl & 0x3c);
        ptr_at::<u16>(ctx, l4 + 2).map(|p| unsafe { *p })
    } else {
        None
    };
    Some(Headers {
        saddr,
        daddr,
        proto,
        dport,
    })
}

/// The same headers read from an skb (TC), for virtual uplinks.
#[inline(always)]
pub fn tc_headers(ctx: &TcContext) -> Option<Headers> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    if ethertype != 0x0800 {
        return None;
    }
    let vihl: u8 = ctx.load(ETH_HLEN).ok()?;
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    let saddr: u32 = ctx.load(ETH_HLEN + 12).ok()?;
    let daddr: u32 = ctx.load(ETH_HLEN + 16).ok()?;
    let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let dport = if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && frag & 0x1fff == 0 && ihl >= 20
    {
        ctx.load::<u16>(ETH_HLEN + ihl + 2).ok()
    } else {
        None
    };
    Some(Headers {
        saddr,
        daddr,
        proto,
        dport,
    })
}

/// The drop reason, or None to pass.
#[inline(always)]
pub fn decide(h: &Headers) -> Option<DropReason> {
    let first = |a: u32| a.to_ne_bytes()[0];
    if first(h.saddr) == 127 || subnet_flags(h.saddr).is_some() {
        return Some(drop_reason::GUARD_SPOOFED);
    }
    if first(h.daddr) == 127 {
        return Some(drop_reason::GUARD_LOOPBACK);
    }
    if subnet_flags(h.daddr).is_some_and(|v| v & SUBNET_F_PROTECTED != 0) {
        return Some(drop_reason::GUARD_TO_CONTAINER);
    }
    let dport = h.dport?;
    // A port published only on 127.0.0.1 is not for outside: without this, the host
    // stack would answer with a reset and show that it exists.
    let mut key = PortKey {
        host_ip: LOOPBACK,
        host_port: dport,
        proto: h.proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if unsafe { PORTS.get(&key) }.is_none() {
        return None;
    }
    key.host_ip = h.daddr;
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
