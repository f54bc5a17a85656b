//! Checksum-correct rewrites and delivery. The csum helpers are used rather than
//! hand-computed sums because they also fix up skb->csum for CHECKSUM_COMPLETE packets and
//! leave CHECKSUM_PARTIAL ones (from local containers with offload) consistent.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, bpf_redir_neigh as RedirNeigh,
        bpf_redir_neigh__bindgen_ty_1 as RedirNeighAddr, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_F_PSEUDO_HDR, TC_ACT_OK,
        TC_ACT_REDIRECT,
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{
    drop_reason, drop_reason::DropReason, event, CtEntry, CtEntryOf, CONFIG_F_FAST_PATH,
    IPPROTO_ICMP, IPPROTO_TCP,
};

use crate::{
    maps::config,
    metrics::count,
    parse::{Flow, FlowOf, ETH_HLEN},
};

const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
const AF_INET: u8 = 2;

/// Makes the packet carry the entry's tuple. Only fields that differ are written.
#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow, ct: &CtEntry) -> Result<(), DropReason> {
    apply_inner(ctx, flow, ct).map_err(|_| drop_reason::REWRITE_FAILED)
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
    rewrite_ports(ctx, flow, ct, csum_off, icmp, mangled)
}

/// The port half of a rewrite, the same for both families: the echo id (stored once,
/// `echo`) or the two ports, each change folded into the checksum at `csum_off`.
#[inline(always)]
pub fn rewrite_ports<A>(
    ctx: &TcContext,
    flow: &FlowOf<A>,
    ct: &CtEntryOf<A>,
    csum_off: usize,
    echo: bool,
    mangled: u64,
) -> Result<(), i64> {
    if echo {
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
/// host along its route, or (no fast path, or anything the stack must handle) back to
/// the stack. A failed redirect is never a drop.
#[inline(always)]
pub fn deliver(ctx: &TcContext, ct: &CtEntry, flow: &Flow, may_route: bool) -> i32 {
    if config().flags & CONFIG_F_FAST_PATH == 0 {
        return TC_ACT_OK as i32;
    }
    if ct.ifindex != 0 {
        return redirect_into(ctx, ct.ifindex, &ct.mac, &ct.gw_mac);
    }
    if may_route {
        if let Some(v) = redirect_routed(ctx, flow.proto, ct.saddr, ct.daddr) {
            return v;
        }
    }
    TC_ACT_OK as i32
}

/// Into a container, past its veth (bpf_redirect_peer), with its MAC and its gateway's:
/// TC_ACT_REDIRECT, or TC_ACT_OK (the stack delivers it) if that fails.
#[inline(always)]
pub fn redirect_into(ctx: &TcContext, ifindex: u32, mac: &[u8; 6], gw_mac: &[u8; 6]) -> i32 {
    if ctx.store(0, mac, 0).is_ok() && ctx.store(6, gw_mac, 0).is_ok() {
        // SAFETY: a plain helper call; the kernel checks the ifindex.
        let r = unsafe { bpf_redirect_peer(ifindex, 0) };
        if r == TC_ACT_REDIRECT as i64 {
            count(event::REDIRECT);
            return TC_ACT_REDIRECT as i32;
        }
    }
    count(event::REDIRECT_FAILED);
    TC_ACT_OK as i32
}

/// Out of device `ifindex`: with (source, destination) MACs when the next hop is
/// resolved, else through bpf_redirect_neigh to `nh`, which resolves it (queueing the
/// packet on the neighbour entry, as the stack would). None: the stack should send it.
#[inline(always)]
pub fn redirect_out(
    ctx: &TcContext,
    ifindex: u32,
    macs: Option<([u8; 6], [u8; 6])>,
    nh: &mut RedirNeigh,
) -> Option<i32> {
    let r = match macs {
        Some((smac, dmac)) => {
            if ctx.store(0, &dmac, 0).is_err() || ctx.store(6, &smac, 0).is_err() {
                count(event::REDIRECT_FAILED);
                return None;
            }
            // SAFETY: a plain helper call; the kernel checks the ifindex.
            unsafe { bpf_redirect(ifindex, 0) }
        }
        None => {
            // The lookup checked no MTU for an unresolved next hop: a packet that does
            // not fit goes to the stack, which fragments it or answers.
            let mut mtu_len: u32 = 0;
            // SAFETY: mtu_len lives on the stack for the call.
            let fits =
                unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, ifindex, &mut mtu_len, 0, 0) } == 0;
            if !fits {
                count(event::REDIRECT_FAILED);
                return None;
            }
            // SAFETY: nh is a valid bpf_redir_neigh of the size passed.
            let r = unsafe {
                bpf_redirect_neigh(ifindex, nh, core::mem::size_of::<RedirNeigh>() as i32, 0)
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

/// Where the routing table sends a packet.
pub struct Route {
    /// The egress device.
    pub ifindex: u32,
    pub next_hop: NextHop,
}

/// What is known about the next hop of a route, which is not part of the routing
/// decision: a route holds whether or not its next hop answered ARP yet.
pub enum NextHop {
    /// The neighbour entry is valid and the packet fits the device: (source,
    /// destination) MACs to write before bpf_redirect.
    Resolved([u8; 6], [u8; 6]),
    /// No valid neighbour entry yet (a fresh host, or one the kernel garbage-collected):
    /// the next hop's address, network byte order, for bpf_redirect_neigh to resolve.
    Unresolved(u32),
    /// Larger than the device's MTU and not GSO: only the stack fragments it or answers
    /// "fragmentation needed".
    TooBig,
}

/// The route the FIB picks for (saddr -> daddr), as if the packet were forwarded from
/// the device it arrived on; None when nothing routes it out (unreachable, blackhole,
/// local, forwarding off).
///
/// The answer depends on the routing table only, never on the neighbour table: masquerade
/// decides by it, and reading "no neighbour entry yet" as "not routed out" once sent the
/// first packet to a new next hop out with the container's private source.
#[inline(always)]
pub fn route(ctx: &TcContext, proto: u8, saddr: u32, daddr: u32) -> Option<Route> {
    // SAFETY: a zeroed plain-data struct of the kernel's ABI; every field is an integer.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto;
    // tot_len stays 0. With it set, the kernel checks the MTU before it fills in the
    // route, so a too-big packet gets FRAG_NEEDED with no ifindex (and a GSO packet is
    // always too big by its total length). With 0, it checks the skb after the lookup,
    // GSO-aware, and FRAG_NEEDED comes with the route filled in.
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
    let next_hop = match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => NextHop::Resolved(p.smac, p.dmac),
        // On NO_NEIGH the kernel has filled in the egress device and replaced ipv4_dst
        // with the gateway of the route (or left the destination, on a connected route).
        // SAFETY: a plain integer field of the kernel's ABI union.
        BPF_FIB_LKUP_RET_NO_NEIGH => NextHop::Unresolved(unsafe { p.__bindgen_anon_4.ipv4_dst }),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => NextHop::TooBig,
        _ => return None,
    };
    Some(Route {
        ifindex: p.ifindex,
        next_hop,
    })
}

/// Redirects a packet out along its route: with the neighbour's MAC when the kernel has
/// it, else through bpf_redirect_neigh, which resolves the next hop (queueing the packet
/// on the neighbour entry, as the stack would). None: the stack should send it.
#[inline(always)]
fn redirect_routed(ctx: &TcContext, proto: u8, saddr: u32, daddr: u32) -> Option<i32> {
    let Some(route) = route(ctx, proto, saddr, daddr) else {
        count(event::REDIRECT_FAILED);
        return None;
    };
    let (macs, next_hop) = match route.next_hop {
        NextHop::Resolved(smac, dmac) => (Some((smac, dmac)), 0),
        NextHop::Unresolved(next_hop) => (None, next_hop),
        NextHop::TooBig => {
            count(event::REDIRECT_FAILED);
            return None;
        }
    };
    let mut nh = RedirNeigh {
        nh_family: AF_INET as u32,
        __bindgen_anon_1: RedirNeighAddr { ipv4_nh: next_hop },
    };
    redirect_out(ctx, route.ifindex, macs, &mut nh)
}
