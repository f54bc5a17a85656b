//! Checksum-correct rewrites and delivery. The csum helpers are used rather than
//! hand-computed sums because they also fix up skb->csum for CHECKSUM_COMPLETE packets and
//! leave CHECKSUM_PARTIAL ones (from local containers with offload) consistent.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, bpf_redir_neigh as RedirNeigh,
        bpf_redir_neigh__bindgen_ty_1 as RedirNeighAddr, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_F_PSEUDO_HDR,
        BPF_F_RECOMPUTE_CSUM, TC_ACT_OK, TC_ACT_REDIRECT,
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{
    crc32c, drop_reason, drop_reason::DropReason, event, CtEntry, CtEntryOf, CONFIG_F_FAST_PATH,
    IPPROTO_DCCP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    IPPROTO_UDPLITE,
};

use crate::{
    conntrack, frag,
    maps::config,
    metrics::count,
    outcome::Outcome,
    parse::{Flow, FlowOf, ETH_HLEN},
};

const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
use crate::consts::{IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF};
const AF_INET: u8 = 2;
/// Below this, a packet fits any uplink netd supports (IPv6's minimum MTU), so the
/// path-MTU check skips the helper call.
const MIN_UPLINK_MTU: u32 = 1280;

/// A packet of a tracked flow (`may_route`: leaving a container, so possibly routed
/// out): its entry's rewrite and delivery; none if the flow is not tracked. A stage of
/// its own (a BPF subprogram): the entry, the FIB lookup and the rewrite's temporaries
/// stay off the entry point's frame.
#[inline(never)]
pub fn known(ctx: &TcContext, flow: &Flow, may_route: bool) -> Outcome {
    let Some(ct) = conntrack::lookup(flow) else {
        return Outcome::none();
    };
    if ct.ifindex == 0 && may_route && keep_for_pmtu(ctx) {
        count(event::PMTU_PASSED);
        return Outcome::of(Ok(TC_ACT_OK as i32));
    }
    if let Err(e) = apply(ctx, flow, &ct) {
        return Outcome::of(Err(e));
    }
    conntrack::account(flow, &ct);
    Outcome::of(Ok(deliver(ctx, &ct, flow, may_route)))
}

/// Makes the packet carry the entry's tuple. Only fields that differ are written; a
/// later fragment (no upper-layer header) gets its addresses only. A first fragment's
/// ports are recorded for the fragments that follow.
/// A subprogram of its own: its branches (protocols, fragments, checksums) end at
/// its return instead of multiplying the paths the verifier walks after it, and its
/// temporaries stay off its callers' frames.
#[inline(never)]
pub fn apply(ctx: &TcContext, flow: &Flow, ct: &CtEntry) -> Result<(), DropReason> {
    settle_fragments(flow, ct)?;
    apply_inner(ctx, flow, ct).map_err(|_| drop_reason::REWRITE_FAILED)?;
    after_rewrite(flow);
    Ok(())
}

/// Refuses what cannot be rewritten in pieces: SCTP's CRC32c covers the whole packet,
/// so a fragment of one whose ports change is dropped (rare: SCTP sizes its packets to
/// the path MTU).
#[inline(always)]
pub fn settle_fragments<A>(flow: &FlowOf<A>, ct: &CtEntryOf<A>) -> Result<(), DropReason> {
    if flow.frag != 0
        && flow.proto == IPPROTO_SCTP
        && (flow.sport != ct.sport || flow.dport != ct.dport)
    {
        return Err(drop_reason::SCTP_FRAGMENT);
    }
    Ok(())
}

/// The fragment bookkeeping of a rewritten packet, for both families.
#[inline(always)]
pub fn after_rewrite<A: crate::family::Family>(flow: &FlowOf<A>) {
    if flow.frag == 0 {
        return;
    }
    if frag::has_l4(flow.frag) {
        frag::note(flow);
    } else {
        count(event::FRAGMENT_FOLLOWED);
    }
}

#[inline(always)]
fn apply_inner(ctx: &TcContext, flow: &Flow, ct: &CtEntry) -> Result<(), i64> {
    let csum = if frag::has_l4(flow.frag) {
        l4_csum(flow.proto, flow.l4_off)
    } else {
        None
    };
    for (old, new, off) in [
        (flow.saddr, ct.saddr, IP_SRC_OFF),
        (flow.daddr, ct.daddr, IP_DST_OFF),
    ] {
        if old != new {
            // ICMP's checksum covers only its own bytes; TCP's, UDP's and their kin's
            // a pseudo-header with both addresses.
            if let Some(c) = &csum {
                if flow.proto != IPPROTO_ICMP {
                    ctx.l4_csum_replace(
                        c.off,
                        old as u64,
                        new as u64,
                        BPF_F_PSEUDO_HDR as u64 | 4 | c.mangled,
                    )?;
                }
            }
            ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 4)?;
            ctx.store(off, &new, 0)?;
        }
    }
    if !frag::has_l4(flow.frag) {
        return Ok(());
    }
    rewrite_ports(ctx, flow, ct, csum)
}

/// The upper-layer checksum the NAT keeps right: where it is, and the flags its
/// updates take.
pub struct L4Csum {
    pub off: usize,
    /// BPF_F_MARK_MANGLED_0 for UDP, whose zero means "no checksum" and must stay so.
    pub mangled: u64,
}

/// The checksum of `proto` whose header is at `l4_off`, for both families (the offsets
/// agree; ICMP's is ICMPv6's). None for SCTP, whose CRC `sctp_ports` keeps, and for the
/// protocols netd translates by address alone (the kernel's NAT leaves theirs too).
#[inline(always)]
pub fn l4_csum(proto: u8, l4_off: usize) -> Option<L4Csum> {
    let (off, mangled) = match proto {
        IPPROTO_TCP => (16, 0),
        IPPROTO_UDP => (6, BPF_F_MARK_MANGLED_0),
        IPPROTO_UDPLITE | IPPROTO_DCCP => (6, 0),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => (2, 0),
        _ => return None,
    };
    Some(L4Csum {
        off: l4_off + off,
        mangled,
    })
}

/// The port half of a rewrite, the same for both families: an ICMP query's id (stored
/// once), SCTP's ports (`sctp_ports`), or the two ports of the others with ports, each
/// change folded into the checksum `csum`.
#[inline(always)]
pub fn rewrite_ports<A>(
    ctx: &TcContext,
    flow: &FlowOf<A>,
    ct: &CtEntryOf<A>,
    csum: Option<L4Csum>,
) -> Result<(), i64> {
    if flow.sport == ct.sport && flow.dport == ct.dport {
        return Ok(());
    }
    if flow.proto == IPPROTO_SCTP {
        return sctp_ports(ctx, flow, ct);
    }
    let Some(c) = csum else {
        // No ports to rewrite.
        return Ok(());
    };
    if flow.proto == IPPROTO_ICMP || flow.proto == IPPROTO_ICMPV6 {
        ctx.l4_csum_replace(c.off, flow.sport as u64, ct.sport as u64, 2)?;
        ctx.store(flow.l4_off + 4, &ct.sport, 0)?;
        return Ok(());
    }
    for (old, new, off) in [
        (flow.sport, ct.sport, flow.l4_off),
        (flow.dport, ct.dport, flow.l4_off + 2),
    ] {
        if old != new {
            ctx.l4_csum_replace(c.off, old as u64, new as u64, 2 | c.mangled)?;
            ctx.store(off, &new, 0)?;
        }
    }
    Ok(())
}

/// SCTP's ports, and its CRC32c by the change they make (`netd_common::crc32c`): the
/// CRC covers the SCTP packet from its header to the end of the IP packet. A zero CRC
/// is one the stack has yet to compute (CHECKSUM_PARTIAL: the SCTP stack leaves the
/// field zero for the device to fill in) and stays zero, as the kernel's NAT leaves
/// such packets. The stores keep skb->csum right for CHECKSUM_COMPLETE packets.
#[inline(always)]
fn sctp_ports<A>(ctx: &TcContext, flow: &FlowOf<A>, ct: &CtEntryOf<A>) -> Result<(), i64> {
    // The IP packet's end: IPv4's total length, or IPv6's payload length after its
    // 40-byte header (the address width tells the family).
    let end = if core::mem::size_of::<A>() == 16 {
        let payload: u16 = ctx.load(ETH_HLEN + 4).map_err(|_| -1i64)?;
        ETH_HLEN + 40 + u16::from_be(payload) as usize
    } else {
        let tot: u16 = ctx.load(ETH_HLEN + 2).map_err(|_| -1i64)?;
        ETH_HLEN + u16::from_be(tot) as usize
    };
    // The four port bytes as a little-endian word, the CRC's own convention.
    let word = |s: u16, d: u16| s as u32 | (d as u32) << 16;
    let (old, new) = (word(flow.sport, flow.dport), word(ct.sport, ct.dport));
    let crc: u32 = ctx.load(flow.l4_off + 8).map_err(|_| -1i64)?;
    if crc != 0 && end > flow.l4_off {
        let crc = crc ^ crc32c_delta(old ^ new, (end - flow.l4_off) as u32);
        ctx.store(flow.l4_off + 8, &crc, BPF_F_RECOMPUTE_CSUM as u64)?;
    }
    ctx.store(flow.l4_off, &new, BPF_F_RECOMPUTE_CSUM as u64)?;
    Ok(())
}

/// `crc32c::delta` in a subprogram of its own: its loops stay out of the callers.
#[inline(never)]
fn crc32c_delta(d: u32, len: u32) -> u32 {
    crc32c::delta(d, len)
}

/// Whether an IPv4 packet leaving through the uplink should go to the stack as it is,
/// for path-MTU discovery: it has DF and does not fit the uplink (GSO packets by their
/// segments). The stack drops it and tells the sender "fragmentation needed", as the
/// kernel's NAT lets it (its NAT comes after the forwarding MTU check). Translated
/// first, the answer would go to the host's own address and the container would never
/// learn the path MTU; and a packet with DF never leaves in pieces, so nothing private
/// gets out. A subprogram returning one bit: its branches end at its return (see
/// `apply`).
#[inline(never)]
pub fn keep_for_pmtu(ctx: &TcContext) -> bool {
    if ctx.len() <= MIN_UPLINK_MTU {
        return false;
    }
    let Ok(frag) = ctx.load::<u16>(ETH_HLEN + 6) else {
        return false;
    };
    u16::from_be(frag) & 0x4000 != 0 && too_big_for_uplink(ctx)
}

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

/// Sends a rewritten packet on: into the container with bpf_redirect_peer, or out of the
/// host along its route, or (no fast path, or anything the stack must handle) back to
/// the stack. A failed redirect is never a drop.
/// A subprogram of its own, as `apply`.
#[inline(never)]
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

/// Whether the route of (saddr -> daddr) goes out of the uplink, in a subprogram of its
/// own (see `apply`): masquerade and the untranslated path decide by it.
#[inline(never)]
pub fn routes_out(ctx: &TcContext, proto: u8, saddr: u32, daddr: u32) -> bool {
    route(ctx, proto, saddr, daddr).is_some_and(|r| r.ifindex == config().uplink_ifindex)
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
