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
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_F_PSEUDO_HDR, TC_ACT_OK,
        TC_ACT_REDIRECT, TC_ACT_UNSPEC,
    },
    helpers::{
        bpf_check_mtu, bpf_csum_diff, bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh,
        bpf_redirect_peer,
    },
    programs::TcContext,
};
use netd_common::{
    drop_reason, drop_reason::DropReason, event, CtEntry6, CONFIG_F_FAST_PATH, IPPROTO_ICMPV6,
    IPPROTO_TCP,
};

use crate::{
    conntrack, guard6,
    maps::config,
    metrics::count,
    parse::ParsedOf,
    parse6::{self, Flow6, IP6_DADDR, IP6_SADDR},
    policy6,
};

const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

// The stages both hook points share. Each is a BPF subprogram with a frame of its own,
// so only one stage's temporaries are on the stack at a time: IPv6's tuples and
// entries are too wide for one frame to hold them all within the 512-byte limit.

/// What the parser made of the packet.
pub enum Kind {
    /// A flow, written to the caller's `Flow6`.
    Flow,
    /// An ICMPv6 error; its header is at the offset.
    IcmpError(usize),
    /// Not NAT66's (counted where it is worth it): on to the next program.
    Pass,
}

/// A stage's outcome in one register. An enum with a payload comes back from a BPF
/// subprogram through the stack, with the bytes its variant leaves undefined, and the
/// verifier refuses to let them be read: a single integer has none.
#[derive(Clone, Copy)]
pub struct Outcome(i64);

const OUTCOME_NONE: i64 = i64::MIN;
/// Drops are encoded below this, verdicts (TC_ACT_*, -1 and up) above.
const OUTCOME_DROP: i64 = -1_000;

impl Outcome {
    fn none() -> Outcome {
        Outcome(OUTCOME_NONE)
    }
    fn of(r: Result<i32, DropReason>) -> Outcome {
        match r {
            Ok(v) => Outcome(v as i64),
            Err(reason) => Outcome(OUTCOME_DROP - reason.0 as i64),
        }
    }
    /// None: the stage did not apply.
    #[inline(always)]
    pub fn get(self) -> Option<Result<i32, DropReason>> {
        match self.0 {
            OUTCOME_NONE => None,
            v if v <= OUTCOME_DROP => Some(Err(DropReason((OUTCOME_DROP - v) as u32))),
            v => Some(Ok(v as i32)),
        }
    }
}

/// Parses the packet into `out`; with `guard`, the uplink guard judges it first.
#[inline(always)]
pub fn parse_into(ctx: &TcContext, out: &mut Flow6, guard: bool) -> Result<Kind, DropReason> {
    // Flow: Ok(0); ICMPv6 error: Ok(its offset); not ours: none.
    match parse_stage(ctx, out, guard).get() {
        None => Ok(Kind::Pass),
        Some(Ok(0)) => Ok(Kind::Flow),
        Some(Ok(off)) => Ok(Kind::IcmpError(off as usize)),
        Some(Err(e)) => Err(e),
    }
}

#[inline(never)]
fn parse_stage(ctx: &TcContext, out: &mut Flow6, guard: bool) -> Outcome {
    let ip = match parse6::ipv6(ctx) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Outcome::none(),
        Err(()) => {
            count(event::MALFORMED_PASSED);
            return Outcome::none();
        }
    };
    if guard {
        if let Err(e) = guard6::check(ctx, &ip) {
            return Outcome::of(Err(e));
        }
    }
    match parse6::l4(ctx, &ip) {
        ParsedOf::Flow(f) => {
            *out = f;
            Outcome::of(Ok(0))
        }
        ParsedOf::IcmpError(off) => Outcome::of(Ok(off as i32)),
        ParsedOf::NotOurs => Outcome::none(),
        ParsedOf::Skip(e) => {
            count(e);
            Outcome::none()
        }
    }
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
    if ct.ifindex == 0 && may_route && too_big_for_uplink(ctx) {
        // Left as it is for the stack, which answers "packet too big" to its sender
        // and drops it (IPv6 routers never fragment). Rewritten first, the answer
        // would go to the host's own address and the sender would never learn the
        // path MTU.
        return Outcome::of(Ok(TC_ACT_UNSPEC));
    }
    if let Err(e) = apply(ctx, flow, &ct) {
        return Outcome::of(Err(e));
    }
    policy6::account(&ct);
    Outcome::of(Ok(deliver(ctx, &ct, may_route)))
}

const AF_INET6: u8 = 10;

/// Whether the packet is larger than the uplink's MTU (GSO packets by their segments).
#[inline(always)]
pub fn too_big_for_uplink(ctx: &TcContext) -> bool {
    let mut mtu_len: u32 = 0;
    // SAFETY: mtu_len lives on the stack for the call.
    unsafe {
        bpf_check_mtu(
            ctx.skb.skb as *mut _,
            config().uplink_ifindex,
            &mut mtu_len,
            0,
            0,
        ) != 0
    }
}

/// The offset of the upper-layer checksum of `proto` whose header is at `l4_off`.
#[inline(always)]
pub fn csum_off(proto: u8, l4_off: usize) -> usize {
    match proto {
        IPPROTO_TCP => l4_off + 16,
        IPPROTO_ICMPV6 => l4_off + 2,
        _ => l4_off + 6,
    }
}

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

/// Makes the packet carry the entry's tuple. Only fields that differ are written.
#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow6, ct: &CtEntry6) -> Result<(), DropReason> {
    apply_inner(ctx, flow, ct).map_err(|_| drop_reason::REWRITE_FAILED)
}

#[inline(always)]
fn apply_inner(ctx: &TcContext, flow: &Flow6, ct: &CtEntry6) -> Result<(), i64> {
    let csum = csum_off(flow.proto, flow.l4_off);
    // A zero UDP checksum is illegal over IPv6, but one that comes must stay zero rather
    // than turn into a wrong non-zero one.
    let mangled = if flow.proto == IPPROTO_TCP || flow.proto == IPPROTO_ICMPV6 {
        0
    } else {
        BPF_F_MARK_MANGLED_0
    };
    let pseudo = BPF_F_PSEUDO_HDR as u64 | mangled;
    if flow.saddr != ct.saddr {
        store_addr(ctx, IP6_SADDR, &flow.saddr, &ct.saddr, csum, pseudo)?;
    }
    if flow.daddr != ct.daddr {
        store_addr(ctx, IP6_DADDR, &flow.daddr, &ct.daddr, csum, pseudo)?;
    }
    if flow.proto == IPPROTO_ICMPV6 {
        // One echo id, stored once.
        if flow.sport != ct.sport {
            ctx.l4_csum_replace(csum, flow.sport as u64, ct.sport as u64, 2)?;
            ctx.store(flow.l4_off + 4, &ct.sport, 0)?;
        }
        return Ok(());
    }
    for (old, new, off) in [
        (flow.sport, ct.sport, flow.l4_off),
        (flow.dport, ct.dport, flow.l4_off + 2),
    ] {
        if old != new {
            ctx.l4_csum_replace(csum, old as u64, new as u64, 2 | mangled)?;
            ctx.store(off, &new, 0)?;
        }
    }
    Ok(())
}

/// Sends a rewritten packet on: into the container with bpf_redirect_peer, or out along
/// its route, or (no fast path, or what the stack must handle) back to the stack. A
/// failed redirect is never a drop.
#[inline(always)]
pub fn deliver(ctx: &TcContext, ct: &CtEntry6, may_route: bool) -> i32 {
    if config().flags & CONFIG_F_FAST_PATH == 0 {
        return TC_ACT_OK as i32;
    }
    if ct.ifindex != 0 {
        if ctx.store(0, &ct.mac, 0).is_ok() && ctx.store(6, &ct.gw_mac, 0).is_ok() {
            // SAFETY: a plain helper call; the kernel checks the ifindex.
            let r = unsafe { bpf_redirect_peer(ct.ifindex, 0) };
            if r == TC_ACT_REDIRECT as i64 {
                count(event::REDIRECT);
                return TC_ACT_REDIRECT as i32;
            }
        }
        count(event::REDIRECT_FAILED);
        return TC_ACT_OK as i32;
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
    let r = match route.macs {
        Some((smac, dmac)) => {
            if ctx.store(0, &dmac, 0).is_err() || ctx.store(6, &smac, 0).is_err() {
                count(event::REDIRECT_FAILED);
                return None;
            }
            // SAFETY: a plain helper call; the kernel checks the ifindex.
            unsafe { bpf_redirect(route.ifindex, 0) }
        }
        None => {
            // No MTU was checked for an unresolved next hop: a packet that does not fit
            // goes to the stack, which answers "packet too big".
            let mut mtu_len: u32 = 0;
            // SAFETY: mtu_len lives on the stack for the call.
            let fits =
                unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, route.ifindex, &mut mtu_len, 0, 0) }
                    == 0;
            if !fits {
                count(event::REDIRECT_FAILED);
                return None;
            }
            let mut nh = RedirNeigh {
                nh_family: AF_INET6 as u32,
                __bindgen_anon_1: RedirNeighAddr {
                    ipv6_nh: route.next_hop,
                },
            };
            // SAFETY: nh is a valid bpf_redir_neigh of the size passed.
            let r = unsafe {
                bpf_redirect_neigh(
                    route.ifindex,
                    &mut nh,
                    core::mem::size_of::<RedirNeigh>() as i32,
                    0,
                )
            };
            if r == TC_ACT_REDIRECT as i64 {
                count(event::REDIRECT_NEIGH);
            }
            r
        }
    };
    if r == TC_ACT_REDIRECT as i64 {
        count(event::REDIRECT);
        Some(TC_ACT_REDIRECT as i32)
    } else {
        count(event::REDIRECT_FAILED);
        None
    }
}
