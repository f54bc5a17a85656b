//! Checksum-correct rewrites and delivery. The csum helpers are used rather than
//! hand-computed sums because they also fix up skb->csum for CHECKSUM_COMPLETE packets and
//! leave CHECKSUM_PARTIAL ones (from local containers with offload) consistent.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT},
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{stat, CtEntry, CONFIG_F_FAST_PATH, IPPROTO_ICMP, IPPROTO_TCP};

use crate::{
    maps::config,
    metrics::count,
    parse::{Flow, ETH_HLEN},
};

const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
const AF_INET: u8 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;

/// Makes the packet carry the entry's tuple. Only fields that differ are written.
#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow, ct: &CtEntry) -> Result<(), u32> {
    apply_inner(ctx, flow, ct).map_err(|_| stat::DROP_REWRITE_FAILED)
}

#[inline(always)]
fn apply_inner(ctx: &TcContext, flow: &Flow, ct: &CtEntry) -> Result<(), i64> {
    let icmp = flow.proto == IPPROTO_ICMP;
    // The L4 checksum: TCP and UDP cover a pseudo-header with both addresses, ICMP only
    // its own bytes. UDP's zero ("no checksum") must stay zero: MARK_MANGLED_0.
    let (csum_off, mangled) = if flow.proto == IPPROTO_TCP {
        (flow.l4_off + 16, 0)
    } else if icmp {
        (flow.l4_off + 2, 0)
    } else {
        (flow.l4_off + 6, BPF_F_MARK_MANGLED_0)
    };
    for (old, new, off) in [
        (flow.saddr, ct.saddr, IP_SRC_OFF),
        (flow.daddr, ct.daddr, IP_DST_OFF),
    ] {
        if old != new {
            if !icmp {
                ctx.l4_csum_replace(
                    csum_off,
                    old as u64,
                    new as u64,
                    BPF_F_PSEUDO_HDR as u64 | 4 | mangled,
                )?;
            }
            ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 4)?;
            ctx.store(off, &new, 0)?;
        }
    }
    if icmp {
        // One echo id, stored once.
        if flow.sport != ct.sport {
            ctx.l4_csum_replace(csum_off, flow.sport as u64, ct.sport as u64, 2)?;
            ctx.store(flow.l4_off + 4, &ct.sport, 0)?;
        }
        return Ok(());
    }
    for (old, new, off) in [
        (flow.sport, ct.sport, flow.l4_off),
        (flow.dport, ct.dport, flow.l4_off + 2),
    ] {
        if old != new {
            ctx.l4_csum_replace(csum_off, old as u64, new as u64, 2 | mangled)?;
            ctx.store(off, &new, 0)?;
        }
    }
    Ok(())
}

/// Sends a rewritten packet on: into the container with bpf_redirect_peer, or out of the
/// host after a FIB lookup, or (no fast path, or anything unresolved) back to the stack.
/// A failed redirect is never a drop.
#[inline(always)]
pub fn deliver(ctx: &TcContext, ct: &CtEntry, flow: &Flow, may_route: bool) -> i32 {
    if config().flags & CONFIG_F_FAST_PATH == 0 {
        return TC_ACT_OK as i32;
    }
    if ct.ifindex != 0 {
        if ctx.store(0, &ct.mac, 0).is_ok() && ctx.store(6, &ct.gw_mac, 0).is_ok() {
            // SAFETY: a plain helper call; the kernel checks the ifindex.
            let r = unsafe { bpf_redirect_peer(ct.ifindex, 0) };
            if r == TC_ACT_REDIRECT as i64 {
                count(stat::REDIRECT);
                return TC_ACT_REDIRECT as i32;
            }
        }
        count(stat::REDIRECT_FAILED);
        return TC_ACT_OK as i32;
    }
    if may_route {
        if let Some(v) = redirect_routed(ctx, flow.proto, ct.saddr, ct.daddr, flow.len) {
            return v;
        }
    }
    TC_ACT_OK as i32
}

/// The egress ifindex the FIB picks for (saddr -> daddr), or None.
#[inline(always)]
pub fn fib_egress(
    ctx: &TcContext,
    proto: u8,
    saddr: u32,
    daddr: u32,
    len: u32,
) -> Option<(u32, [u8; 6], [u8; 6])> {
    // SAFETY: a zeroed plain-data struct of the kernel's ABI; every field is an integer.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto;
    p.__bindgen_anon_1.tot_len = (len as u16).wrapping_sub(ETH_HLEN as u16);
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    p.__bindgen_anon_3.ipv4_src = saddr;
    p.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: p is a valid bpf_fib_lookup of the size passed.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret != BPF_FIB_LKUP_RET_SUCCESS {
        return None;
    }
    Some((p.ifindex, p.smac, p.dmac))
}

#[inline(always)]
fn redirect_routed(ctx: &TcContext, proto: u8, saddr: u32, daddr: u32, len: u32) -> Option<i32> {
    let Some((ifindex, smac, dmac)) = fib_egress(ctx, proto, saddr, daddr, len) else {
        count(stat::REDIRECT_FAILED);
        return None;
    };
    if ctx.store(0, &dmac, 0).is_err() || ctx.store(6, &smac, 0).is_err() {
        return None;
    }
    // SAFETY: a plain helper call; the kernel checks the ifindex.
    let r = unsafe { bpf_redirect(ifindex, 0) };
    if r == TC_ACT_REDIRECT as i64 {
        count(stat::REDIRECT);
        Some(TC_ACT_REDIRECT as i32)
    } else {
        count(stat::REDIRECT_FAILED);
        None
    }
}
