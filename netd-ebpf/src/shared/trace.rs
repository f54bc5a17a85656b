//! The datapath trace (see `netd_common::trace`): at each packet program's single exit,
//! while the agent has tracing on, one record of the packet (IPv4 or IPv6) as it leaves
//! and the verdict.
use aya_ebpf::{
    bindings::{__sk_buff, xdp_md, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    programs::{TcContext, XdpContext},
};
use netd_common::{
    drop_reason::DropReason,
    trace::{hook, verdict, TraceRecord},
    CONFIG_F_TRACE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    maps::{config, TRACE},
    metrics::count_drop,
    parse::{Packet, ETH_HLEN, ETH_P_IP},
    parse6::{ETH_P_IPV6, IP6_DADDR, IP6_HLEN, IP6_SADDR},
};

/// Whether the agent has tracing on: one load of the config entry.
#[inline(always)]
pub fn on() -> bool {
    config().flags & CONFIG_F_TRACE != 0
}

/// Records the packet of a TC program. A function of its own (a BPF subprogram, with
/// its own stack frame): inlined, it would not fit beside the program's own frame in
/// the 512 bytes of BPF stack a call chain has. For the same reason it keeps almost
/// nothing live across helper calls (they clobber r1-r5, the rest spills to the
/// stack): the slot is reserved and stamped first, then filled with plain loads.
/// `meta` is `hook | verdict << 8 | reason << 16`.
#[inline(never)]
pub fn tc_packet(skb: *mut __sk_buff, meta: u32) {
    let Some(mut slot) = TRACE.reserve::<TraceRecord>(0) else {
        return;
    };
    let r = slot.as_mut_ptr();
    // SAFETY: `r` is the reserved, TraceRecord-sized slot.
    unsafe { (*r).ts_ns = bpf_ktime_get_ns() };
    let ctx = TcContext::new(skb);
    // Direct reads of the linear part: bpf_skb_load_bytes would need stack room for
    // each value (headers outside the linear part make no record).
    let linear = Linear {
        start: ctx.data(),
        end: ctx.data_end(),
        len: ctx.len(),
    };
    // SAFETY: reading a field of the program's own context.
    let ifindex = unsafe { (*skb).ifindex };
    if fill(&linear, r, ifindex, meta) {
        slot.submit(0);
    } else {
        slot.discard(0);
    }
}

/// Records the packet of the XDP program (see `tc_packet`).
#[inline(never)]
pub fn xdp_packet(md: *mut xdp_md, meta: u32) {
    let Some(mut slot) = TRACE.reserve::<TraceRecord>(0) else {
        return;
    };
    let r = slot.as_mut_ptr();
    // SAFETY: `r` is the reserved, TraceRecord-sized slot.
    unsafe { (*r).ts_ns = bpf_ktime_get_ns() };
    let ctx = XdpContext::new(md);
    let ifindex = ctx.ingress_ifindex() as u32;
    if fill(&ctx, r, ifindex, meta) {
        slot.submit(0);
    } else {
        slot.discard(0);
    }
}

/// `meta` for `tc_packet`/`xdp_packet`.
#[inline(always)]
pub fn meta(hook: u8, verdict: u8, reason: u16) -> u32 {
    hook as u32 | (verdict as u32) << 8 | (reason as u32) << 16
}

/// The linear part of a socket buffer, read in place.
struct Linear {
    start: usize,
    end: usize,
    len: u32,
}

impl Packet for Linear {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()> {
        // The bounds check the verifier wants before a direct read.
        if self.start + off + core::mem::size_of::<T>() > self.end {
            return Err(());
        }
        // SAFETY: checked above to lie inside the linear data; BPF allows unaligned
        // packet reads.
        Ok(unsafe { *((self.start + off) as *const T) })
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        self.len
    }

    /// The trace reads no device: it records headers only.
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        0
    }
}

/// Fills every field of `r` but the time from the packet's headers: false (the slot is
/// then discarded) for a frame this hook does not record (`records`).
#[inline(always)]
fn fill<C: Packet>(ctx: &C, r: *mut TraceRecord, ifindex: u32, meta: u32) -> bool {
    let Ok(t) = ctx.load::<u16>(12) else {
        return false;
    };
    let v6 = match u16::from_be(t) {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        _ => return false,
    };
    if !records(meta, v6) {
        return false;
    }
    let done = if v6 { fill6(ctx, r) } else { fill4(ctx, r) };
    if !done {
        return false;
    }
    // SAFETY: `r` is the reserved, TraceRecord-sized slot of the caller.
    unsafe {
        (*r).ifindex = ifindex;
        (*r).len = ctx.len();
        (*r).hook = meta as u8;
        (*r).verdict = (meta >> 8) as u8;
        (*r).reason = (meta >> 16) as u16;
        (*r).family = if v6 { 6 } else { 4 };
        (*r)._pad = [0; 6];
    }
    true
}

/// Whether the hook in `meta` records a frame of this family: each packet once, by the
/// program that decided on it. The IPv6 programs leave IPv4 to the IPv4 ones; IPv6
/// reaches `endpoint_egress` after `endpoint_egress6` passed it on (or from an endpoint
/// without IPv6, which it drops), and `uplink_ingress` after `uplink_ingress6`.
#[inline(always)]
fn records(meta: u32, v6: bool) -> bool {
    let (h, v) = (meta as u8, (meta >> 8) as u8);
    match h {
        hook::UPLINK_INGRESS6 | hook::ENDPOINT_EGRESS6 => v6,
        hook::ENDPOINT_EGRESS => !v6 || v == verdict::DROP,
        hook::UPLINK_GUARD => true,
        _ => !v6,
    }
}

/// The IPv4 header's addresses, protocol and ports.
#[inline(always)]
fn fill4<C: Packet>(ctx: &C, r: *mut TraceRecord) -> bool {
    let Ok(vihl) = ctx.load::<u8>(ETH_HLEN) else {
        return false;
    };
    // At most 60: a bound the verifier follows into the offsets built on it.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return false;
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9).unwrap_or(0);
    // Ports only in a first (or only) fragment; the echo id for ICMP echo.
    let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).unwrap_or(0));
    let (sport, dport) = if frag & 0x1fff != 0 {
        (0, 0)
    } else {
        ports(ctx, proto, ETH_HLEN + ihl, IPPROTO_ICMP)
    };
    let (s, d): (u32, u32) = (
        ctx.load(ETH_HLEN + 12).unwrap_or(0),
        ctx.load(ETH_HLEN + 16).unwrap_or(0),
    );
    // SAFETY: `r` is the reserved, TraceRecord-sized slot of the caller.
    unsafe {
        (*r).saddr = v4_field(s);
        (*r).daddr = v4_field(d);
        (*r).sport = sport;
        (*r).dport = dport;
        (*r).proto = proto;
    }
    true
}

/// An IPv4 address (network byte order) in a record's 16-byte address field.
#[inline(always)]
fn v4_field(a: u32) -> [u8; 16] {
    let b = a.to_ne_bytes();
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// The IPv6 header's addresses, next header and ports (those of TCP, UDP and ICMPv6
/// echo right after the fixed header; behind extension headers the ports are 0).
#[inline(always)]
fn fill6<C: Packet>(ctx: &C, r: *mut TraceRecord) -> bool {
    let Ok(proto) = ctx.load::<u8>(ETH_HLEN + 6) else {
        return false;
    };
    let (sport, dport) = ports(ctx, proto, ETH_HLEN + IP6_HLEN, IPPROTO_ICMPV6);
    // SAFETY: `r` is the reserved, TraceRecord-sized slot of the caller.
    unsafe {
        (*r).saddr = ctx.load(IP6_SADDR).unwrap_or([0; 16]);
        (*r).daddr = ctx.load(IP6_DADDR).unwrap_or([0; 16]);
        (*r).sport = sport;
        (*r).dport = dport;
        (*r).proto = proto;
    }
    true
}

/// The ports of an upper-layer header at `l4`: TCP's and UDP's, the echo id for an
/// echo of `icmp` (ICMP or ICMPv6), else 0.
#[inline(always)]
fn ports<C: Packet>(ctx: &C, proto: u8, l4: usize, icmp: u8) -> (u16, u16) {
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        (ctx.load(l4).unwrap_or(0), ctx.load(l4 + 2).unwrap_or(0))
    } else if proto == icmp {
        let id: u16 = ctx.load(l4 + 4).unwrap_or(0);
        (id, id)
    } else {
        (0, 0)
    }
}

/// The exit of a TC program: traces `result` (a verdict, or the drop reason that
/// becomes TC_ACT_SHOT after being counted) and returns the TC action.
#[inline(always)]
pub fn tc_exit(ctx: &TcContext, hook: u8, result: Result<i32, DropReason>) -> i32 {
    match result {
        Ok(action) => {
            if on() {
                let v = if action == TC_ACT_REDIRECT {
                    verdict::REDIRECT
                } else if action == TC_ACT_SHOT {
                    verdict::DROP
                } else {
                    verdict::PASS
                };
                tc_packet(ctx.skb.skb, meta(hook, v, 0));
            }
            action
        }
        Err(reason) => {
            count_drop(reason);
            if on() {
                tc_packet(ctx.skb.skb, meta(hook, verdict::DROP, reason.0 as u16));
            }
            TC_ACT_SHOT
        }
    }
}
