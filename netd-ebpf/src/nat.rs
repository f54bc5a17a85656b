//! Checksum-correct rewrites and delivery. The csum helpers are used rather than
//! hand-computed sums because they also fix up skb->csum for CHECKSUM_COMPLETE packets and
//! leave CHECKSUM_PARTIAL ones (from local containers with offload) consistent.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT},
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
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
/// The route is known but the next hop's MAC is not (yet): a fresh host, or an entry
/// the neighbour table aged out. The packet is routed all the same.
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

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

/// What the FIB says about (saddr -> daddr).
struct Fib {
    ret: i64,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// Asks the FIB about (saddr -> daddr) for a packet of `tot_len` bytes of IP (0: no
/// MTU check).
#[inline(always)]
fn fib_lookup(ctx: &TcContext, proto: u8, saddr: u32, daddr: u32, tot_len: u16) -> Fib {
    // SAFETY: a zeroed plain-data struct of the kernel's ABI; every field is an integer.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto;
    p.__bindgen_anon_1.tot_len = tot_len;
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
    Fib {
        ret,
        ifindex: p.ifindex,
        smac: p.smac,
        dmac: p.dmac,
    }
}

/// The interface the route for (saddr -> daddr) leaves by, whatever the state of the
/// next hop's neighbour entry and whatever the packet's size: deciding whether a packet
/// leaves the host (and so must be masqueraded) must never depend on either, or the
/// first packet to a next hop with no ARP entry yet (NO_NEIGH), or a datagram too big
/// for the MTU, would leave with the container's private source.
#[inline(always)]
pub fn route_out(ctx: &TcContext, proto: u8, saddr: u32, daddr: u32) -> Option<u32> {
    let f = fib_lookup(ctx, proto, saddr, daddr, 0);
    (f.ret == BPF_FIB_LKUP_RET_SUCCESS || f.ret == BPF_FIB_LKUP_RET_NO_NEIGH).then_some(f.ifindex)
}

/// Sends an already rewritten packet out by the route, without the stack: to the next
/// hop's MAC when the FIB knows it, else through bpf_redirect_neigh, which resolves the
/// neighbour as the stack would. None: let the stack deliver it (TC_ACT_OK), e.g. when it
/// must be fragmented.
#[inline(always)]
fn redirect_routed(ctx: &TcContext, proto: u8, saddr: u32, daddr: u32, len: u32) -> Option<i32> {
    let tot_len = (len as u16).wrapping_sub(ETH_HLEN as u16);
    let f = fib_lookup(ctx, proto, saddr, daddr, tot_len);
    // SAFETY (both arms): plain helper calls; the kernel checks the ifindex.
    let r = match f.ret {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if ctx.store(0, &f.dmac, 0).is_err() || ctx.store(6, &f.smac, 0).is_err() {
                return None;
            }
            unsafe { bpf_redirect(f.ifindex, 0) }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => unsafe {
            bpf_redirect_neigh(f.ifindex, core::ptr::null_mut(), 0, 0)
        },
        _ => {
            count(stat::REDIRECT_FAILED);
            return None;
        }
    };
    if r == TC_ACT_REDIRECT as i64 {
        count(stat::REDIRECT);
        Some(TC_ACT_REDIRECT as i32)
    } else {
        count(stat::REDIRECT_FAILED);
        None
    }
}
