//! IPv6 rewrites and delivery. IPv6 has no header checksum; the TCP, UDP and ICMPv6
//! checksums cover a pseudo-header with both addresses, so an address change is folded
//! into the upper-layer checksum (bpf_csum_diff of the 16 bytes, then
//! bpf_l4_csum_replace with BPF_F_PSEUDO_HDR, which keeps skb->csum right for
//! CHECKSUM_COMPLETE and leaves CHECKSUM_PARTIAL packets consistent). Unlike ICMP,
//! ICMPv6's checksum covers the pseudo-header too.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, bpf_redir_neigh as RedirNeigh,
        bpf_redir_neigh__bindgen_ty_1 as RedirNeighAddr, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_F_PSEUDO_HDR,
        BPF_F_RECOMPUTE_CSUM, TC_ACT_OK, TC_ACT_UNSPEC,
    },
    helpers::{bpf_csum_diff, bpf_fib_lookup},
    programs::TcContext,
};
use netd_common::{drop_reason, drop_reason::DropReason, event, CtEntry6, CONFIG_F_FAST_PATH};

use crate::{
    conntrack, frag, guard,
    maps::config,
    metrics::count,
    nat,
    outcome::Outcome,
    parse::Kind,
    parse6::{self, Flow6, IP6_DADDR, IP6_SADDR},
};

// The stages both hook points share. Each is a BPF subprogram with a frame of its own,
// so only one stage's temporaries are on the stack at a time: IPv6's tuples and
// entries are too wide for one frame to hold them all within the 512-byte limit.

/// Parses the packet into `out`; with `guard`, the uplink guard judges it first.
#[inline(always)]
pub fn parse_into(ctx: &TcContext, out: &mut Flow6, guard: bool) -> Result<Kind, DropReason> {
    parse_stage(ctx, out, guard).kind()
}

#[inline(never)]
fn parse_stage(ctx: &TcContext, out: &mut Flow6, guard: bool) -> Outcome {
    let ip = match parse6::ipv6(ctx) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Outcome::of_kind(Kind::Pass(drop_reason::UNTRANSLATABLE)),
        Err(()) => return Outcome::of_kind(Kind::Pass(drop_reason::MALFORMED)),
    };
    if guard {
        if let Err(e) = guard::check6(ctx, &ip) {
            return Outcome::of(Err(e));
        }
    }
    Outcome::of_kind(parse6::l4(ctx, &ip, out))
}

/// A packet of a tracked flow: its entry's rewrite and delivery. None: not tracked.
#[inline(always)]
pub fn known(ctx: &TcContext, flow: &Flow6, may_route: bool) -> Option<Result<i32, DropReason>> {
    known_stage(ctx, flow, may_route).get()
}

#[inline(never)]
fn known_stage(ctx: &TcContext, flow: &Flow6, may_route: bool) -> Outcome {
    let Some(ct) = conntrack::lookup(flow) else {
        return Outcome::none();
    };
    if ct.ifindex == 0 && may_route && nat::too_big_for_uplink(ctx) {
        // Left as it is for the stack, which answers "packet too big" to its sender
        // and drops it (IPv6 routers never fragment). Rewritten first, the answer
        // would go to the host's own address and the sender would never learn the
        // path MTU.
        count(event::PMTU_PASSED);
        return Outcome::of(Ok(TC_ACT_UNSPEC));
    }
    if let Err(e) = apply(ctx, flow, &ct) {
        return Outcome::of(Err(e));
    }
    conntrack::account(flow, &ct);
    Outcome::of(Ok(deliver(ctx, &ct, may_route)))
}

const AF_INET6: u8 = 10;

/// Replaces the 16-byte address at `off` (`old` there now) with `new`, folding the
/// change into the checksum at `csum` (`flags`: BPF_F_PSEUDO_HDR when the address is
/// part of that checksum's pseudo-header, 0 when it is in its payload).
#[inline(always)]
pub fn store_addr(
    ctx: &TcContext,
    off: usize,
    old: &[u8; 16],
    new: &[u8; 16],
    csum: usize,
    flags: u64,
) -> Result<(), i64> {
    // SAFETY: both pointers are to 16 readable bytes for the duration of the call.
    let diff = unsafe {
        bpf_csum_diff(
            old.as_ptr() as *mut u32,
            16,
            new.as_ptr() as *mut u32,
            16,
            0,
        )
    };
    if diff < 0 {
        return Err(diff);
    }
    ctx.l4_csum_replace(csum, 0, diff as u64, flags)?;
    ctx.store(off, new, 0)?;
    Ok(())
}

/// Makes the packet carry the entry's tuple. Only fields that differ are written; a
/// later fragment (no upper-layer header) gets its addresses only. A first fragment's
/// ports are recorded for the fragments that follow.
/// A subprogram of its own: its branches (protocols, fragments, checksums) end at
/// its return instead of multiplying the paths the verifier walks after it, and its
/// temporaries stay off its callers' frames.
#[inline(never)]
pub fn apply(ctx: &TcContext, flow: &Flow6, ct: &CtEntry6) -> Result<(), DropReason> {
    nat::settle_fragments(flow, ct)?;
    apply_inner(ctx, flow, ct).map_err(|_| drop_reason::REWRITE_FAILED)?;
    nat::after_rewrite(flow);
    Ok(())
}

#[inline(always)]
fn apply_inner(ctx: &TcContext, flow: &Flow6, ct: &CtEntry6) -> Result<(), i64> {
    let l4 = frag::has_l4(flow.frag);
    let csum = if l4 {
        nat::l4_csum(flow.proto, flow.l4_off)
    } else {
        None
    };
    for (old, new, off) in [
        (&flow.saddr, &ct.saddr, IP6_SADDR),
        (&flow.daddr, &ct.daddr, IP6_DADDR),
    ] {
        if old == new {
            continue;
        }
        match &csum {
            // A zero UDP checksum is illegal over IPv6, but one that comes must stay
            // zero rather than turn into a wrong non-zero one.
            Some(c) => store_addr(
                ctx,
                off,
                old,
                new,
                c.off,
                BPF_F_PSEUDO_HDR as u64 | c.mangled,
            )?,
            // No checksum netd knows covers the addresses (a later fragment, a protocol
            // translated by address alone): IPv6 has no header checksum, so only
            // skb->csum follows (CHECKSUM_COMPLETE).
            None => ctx.store(off, new, BPF_F_RECOMPUTE_CSUM as u64)?,
        }
    }
    if !l4 {
        return Ok(());
    }
    nat::rewrite_ports(ctx, flow, ct, csum)
}

/// Sends a rewritten packet on: into the container with bpf_redirect_peer, or out along
/// its route, or (no fast path, or what the stack must handle) back to the stack. A
/// failed redirect is never a drop.
/// A subprogram of its own, as `apply`.
#[inline(never)]
pub fn deliver(ctx: &TcContext, ct: &CtEntry6, may_route: bool) -> i32 {
    if config().flags & CONFIG_F_FAST_PATH == 0 {
        return TC_ACT_OK as i32;
    }
    if ct.ifindex != 0 {
        return nat::redirect_into(ctx, ct.ifindex, &ct.mac, &ct.gw_mac);
    }
    if may_route {
        if let Some(v) = redirect_routed(ctx, &ct.saddr, &ct.daddr) {
            return v;
        }
    }
    TC_ACT_OK as i32
}

/// What the FIB says of (saddr -> daddr) as forwarded from the packet's device: the
/// egress ifindex, and the next hop's MACs or (unresolved) its address.
pub struct Route6 {
    pub ifindex: u32,
    pub macs: Option<([u8; 6], [u8; 6])>,
    pub next_hop: [u32; 4],
    /// Larger than the device's MTU and not GSO: only the stack answers "packet too big".
    pub too_big: bool,
}

/// The route of (saddr -> daddr); None when nothing routes it out (unreachable, local,
/// forwarding off). As for IPv4, the answer does not depend on whether the next hop's
/// neighbour entry exists, nor on the packet's size (tot_len stays 0: see `nat::route`).
#[inline(always)]
pub fn route(ctx: &TcContext, saddr: &[u8; 16], daddr: &[u8; 16]) -> Option<Route6> {
    // SAFETY: a zeroed plain-data struct of the kernel's ABI; every field is an integer.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET6;
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain integer arrays of the kernel's ABI unions, same size as the source.
    unsafe {
        p.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u8; 16], [u32; 4]>(*saddr);
        p.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>(*daddr);
    }
    // SAFETY: p is a valid bpf_fib_lookup of the size passed.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    let (macs, too_big) = match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => (Some((p.smac, p.dmac)), false),
        BPF_FIB_LKUP_RET_NO_NEIGH => (None, false),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => (None, true),
        _ => return None,
    };
    Some(Route6 {
        ifindex: p.ifindex,
        macs,
        too_big,
        // SAFETY: a plain integer array of the kernel's ABI union.
        next_hop: unsafe { p.__bindgen_anon_4.ipv6_dst },
    })
}

#[inline(always)]
fn redirect_routed(ctx: &TcContext, saddr: &[u8; 16], daddr: &[u8; 16]) -> Option<i32> {
    let Some(route) = route(ctx, saddr, daddr).filter(|r| !r.too_big) else {
        count(event::REDIRECT_FAILED);
        return None;
    };
    let mut nh = RedirNeigh {
        nh_family: AF_INET6 as u32,
        __bindgen_anon_1: RedirNeighAddr {
            ipv6_nh: route.next_hop,
        },
    };
    nat::redirect_out(ctx, route.ifindex, route.macs, &mut nh)
}
