//! Header parsing, one parser for TC and XDP: it reads through `Packet`, which each
//! program context implements its own way. TC loads with bpf_skb_load_bytes, which
//! copes with non-linear skbs and variable IP header lengths without verifier
//! gymnastics; XDP reads the first buffer directly, each read checked against its end.
use aya_ebpf::{
    helpers::bpf_xdp_get_buff_len,
    programs::{TcContext, XdpContext},
};
use netd_common::{drop_reason, drop_reason::DropReason, IPPROTO_ICMP, IPPROTO_TCP};

use crate::{
    family::Family,
    frag,
    outcome::Outcome,
    proto::{has_ports, l4_min},
};

pub use crate::consts::{
    ETH_HLEN, ETH_P_IP, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_PARAMETER_PROB,
    ICMP_REDIRECT, ICMP_SOURCE_QUENCH, ICMP_TIME_EXCEEDED,
};
use crate::consts::{ICMP_ADDRESS_REPLY, ICMP_TIMESTAMP};

/// What the parser needs from a program's context.
pub trait Packet {
    /// The `T` at byte `off` of the frame, or Err if the frame is shorter.
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()>;
    /// Length of the whole frame, every fragment buffer included.
    fn len(&self) -> u32;
    /// The device the packet came in on.
    fn ifindex(&self) -> u32;
}

impl Packet for TcContext {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()> {
        TcContext::load(self, off).map_err(|_| ())
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
        unsafe { (*self.skb.skb).ifindex }
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()> {
        let start = self.data();
        // The bounds check the verifier wants before any direct read. Headers are in the
        // first buffer of a multi-buffer frame, which is all data..data_end covers.
        if start + off + core::mem::size_of::<T>() > self.data_end() {
            return Err(());
        }
        // SAFETY: checked above to lie inside the packet's first buffer; BPF allows
        // unaligned packet reads.
        Ok(unsafe { *((start + off) as *const T) })
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        // SAFETY: a helper call on the program's own context.
        unsafe { bpf_xdp_get_buff_len(self.ctx) as u32 }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }
}

/// An IPv4 header: version 4 and a header length of at least 20, the least that makes
/// its addresses mean anything. Its lengths are checked by `l4`, not here: the guard
/// judges addresses even of packets whose total length is off (a BIG TCP aggregate
/// says 0, and the stack still takes it). Addresses are raw (network byte order), as in
/// the packet and in the maps.
pub struct Ipv4 {
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    /// Offset of the L4 header (after IP options).
    pub l4_off: usize,
    /// Header length and total length, bytes.
    ihl: usize,
    tot_len: usize,
    /// Flags and fragment offset, host byte order.
    frag: u16,
}

impl Ipv4 {
    /// Whether this packet carries its L4 header: unfragmented, or the first fragment.
    #[inline(always)]
    pub fn has_l4_header(&self) -> bool {
        self.frag & 0x1fff == 0
    }

    /// Whether it is a fragment, first or not (offset, or more-fragments set).
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.frag & 0x3fff != 0
    }
}

/// The IPv4 header of the frame: Ok(None) for other ethertypes (ARP, IPv6), Err for a
/// broken header.
#[inline(always)]
pub fn ipv4<C: Packet>(ctx: &C) -> Result<Option<Ipv4>, ()> {
    let ethertype: u16 = ctx.load(12)?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return Ok(None);
    }
    let vihl: u8 = ctx.load(ETH_HLEN)?;
    // At most 60: a bound the XDP verifier follows into the offsets built on it.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(());
    }
    Ok(Some(Ipv4 {
        saddr: ctx.load(ETH_HLEN + 12)?,
        daddr: ctx.load(ETH_HLEN + 16)?,
        proto: ctx.load(ETH_HLEN + 9)?,
        l4_off: ETH_HLEN + ihl,
        ihl,
        tot_len: u16::from_be(ctx.load::<u16>(ETH_HLEN + 2)?) as usize,
        frag: u16::from_be(ctx.load::<u16>(ETH_HLEN + 6)?),
    }))
}

/// A packet's tuple and the offsets needed to rewrite it, with addresses of type `A`
/// (`u32` for IPv4, `[u8; 16]` for IPv6: `parse6`). Addresses and ports are raw
/// (network byte order), as in the packet and in the maps. For ICMP queries both ports
/// are the query's id; for protocols without ports (`has_ports`) both are 0.
pub struct FlowOf<A> {
    /// The upper-layer header; in a later fragment, where its payload starts.
    pub l4_off: usize,
    pub proto: u8,
    pub tcp_flags: u8,
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub len: u32,
    /// Fragment state (`frag`): 0 for a whole packet. A later fragment's ports are its
    /// first fragment's.
    pub frag: u64,
}

/// An IPv4 flow.
pub type Flow = FlowOf<u32>;

/// This CPU's slot for the packet's flow, which the parser fills and every stage reads.
/// In a map rather than on the stack: a flow in the entry point's frame came back from
/// each parser path with different contents the verifier knew of (constants here,
/// loaded values there), and each such state walked the rest of the program again; in
/// map memory every field is simply unknown to it. It also keeps the flow (40 bytes,
/// 56 for IPv6) off the frames of programs near the 512-byte limit. One program runs
/// per CPU at a time, and none of them uses the slot across a packet.
#[inline(always)]
pub fn flow_slot<A: Family>() -> Option<&'static mut FlowOf<A>> {
    // SAFETY: this CPU's slot of a per-CPU array, used only while this program runs.
    A::flow_scratch().get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// What the parser made of a packet, for both families. A flow is written to the
/// caller's `FlowOf` rather than carried here: an enum with a flow inside was built
/// from registers some paths leave undefined, which the verifier refuses to read.
#[derive(Clone, Copy)]
pub enum Kind {
    /// Any IP protocol but ICMP's other messages, whole or in fragments whose first
    /// fragment was seen.
    Flow,
    /// An ICMP error (unreachable, time exceeded, ...); its header is at the offset.
    IcmpError(usize),
    /// Not translated, for the reason given: UNTRANSLATABLE (not IP; ICMP messages
    /// that are neither queries by id nor errors; an IPv6 header chain too long to
    /// follow), MALFORMED, or FRAG_UNKNOWN (a later fragment whose first fragment was
    /// not seen). Left to the stack, unless it is leaving a masquerading network, which
    /// drops it for that reason (`metrics::count_passed` counts the ones that pass).
    Pass(DropReason),
}

/// Parses the frame into `out`; with `guard`, the uplink guard judges it first. A BPF
/// subprogram with one integer for a result (`Outcome::kind`): its temporaries stay off
/// the entry points' frames.
#[inline(never)]
pub fn parse_stage(ctx: &TcContext, out: &mut Flow, guard: bool) -> Outcome {
    let ip = match ipv4(ctx) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Outcome::of_kind(Kind::Pass(drop_reason::UNTRANSLATABLE)),
        Err(()) => return Outcome::of_kind(Kind::Pass(drop_reason::MALFORMED)),
    };
    if guard {
        if let Err(e) = crate::guard::check(ctx, &ip) {
            return Outcome::of(Err(e));
        }
    }
    Outcome::of_kind(l4(ctx, &ip, out))
}

/// Parses what follows an IPv4 header `ipv4` returned, into `out`.
#[inline(always)]
pub fn l4<C: Packet>(ctx: &C, ip: &Ipv4, out: &mut Flow) -> Kind {
    try_l4(ctx, ip, out).unwrap_or(Kind::Pass(drop_reason::MALFORMED))
}

#[inline(always)]
fn try_l4<C: Packet>(ctx: &C, ip: &Ipv4, out: &mut Flow) -> Result<Kind, ()> {
    if ip.tot_len < ip.ihl || ip.tot_len + ETH_HLEN > ctx.len() as usize {
        return Err(());
    }
    let proto = ip.proto;
    let mut frag = 0;
    if ip.is_fragment() {
        let id: u16 = ctx.load(ETH_HLEN + 4)?;
        frag = frag::info(id as u32, proto, ip.has_l4_header());
        if !ip.has_l4_header() {
            return Ok(later_fragment(
                ctx, ip.l4_off, ip.saddr, ip.daddr, frag, out,
            ));
        }
    }
    let l4_off = ip.l4_off;
    if ip.tot_len < ip.ihl + l4_min(proto) {
        return Err(());
    }
    if proto == IPPROTO_ICMP {
        let ty: u8 = ctx.load(l4_off)?;
        if icmp_error(ty) {
            return Ok(Kind::IcmpError(l4_off));
        }
        if !icmp_query(ty) {
            return Ok(Kind::Pass(drop_reason::UNTRANSLATABLE));
        }
    }
    let at = (l4_off, proto, proto == IPPROTO_ICMP, frag);
    flow(ctx, at, ip.saddr, ip.daddr, out)?;
    Ok(Kind::Flow)
}

/// ICMP errors (the kernel's list): they quote a packet of a flow.
#[inline(always)]
fn icmp_error(ty: u8) -> bool {
    matches!(
        ty,
        ICMP_DEST_UNREACH
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAMETER_PROB
    )
}

/// ICMP queries and answers with an id, tracked like echo.
#[inline(always)]
fn icmp_query(ty: u8) -> bool {
    ty == ICMP_ECHO_REQUEST
        || ty == ICMP_ECHO_REPLY
        || (ICMP_TIMESTAMP..=ICMP_ADDRESS_REPLY).contains(&ty)
}

/// A later fragment (`frag`, its payload at `off`): the flow of its datagram, with the
/// ports its first fragment recorded, into `out`; without a record, FRAG_UNKNOWN.
#[inline(always)]
pub fn later_fragment<C: Packet, A: Family>(
    ctx: &C,
    off: usize,
    saddr: A,
    daddr: A,
    frag: u64,
    out: &mut FlowOf<A>,
) -> Kind {
    let Some((sport, dport, proto)) = frag::unpack(frag::first_of(&saddr, &daddr, frag)) else {
        return Kind::Pass(drop_reason::FRAG_UNKNOWN);
    };
    *out = FlowOf {
        l4_off: off,
        proto,
        tcp_flags: 0,
        saddr,
        daddr,
        sport,
        dport,
        len: ctx.len(),
        frag,
    };
    Kind::Flow
}

/// The flow of a packet into `out`, for both families, given where its upper-layer
/// header is: (offset, protocol, whether it is an ICMP query, fraginfo). A query's id
/// stands for both ports; protocols without ports have both 0; TCP's flags are read.
#[inline(always)]
pub fn flow<C: Packet, A>(
    ctx: &C,
    (l4_off, proto, query, frag): (usize, u8, bool, u64),
    saddr: A,
    daddr: A,
    out: &mut FlowOf<A>,
) -> Result<(), ()> {
    let (sport, dport, tcp_flags) = if query {
        let id: u16 = ctx.load(l4_off + 4)?;
        (id, id, 0)
    } else if has_ports(proto) {
        let sport: u16 = ctx.load(l4_off)?;
        let dport: u16 = ctx.load(l4_off + 2)?;
        let flags: u8 = if proto == IPPROTO_TCP {
            ctx.load(l4_off + 13)?
        } else {
            0
        };
        (sport, dport, flags)
    } else {
        (0, 0, 0)
    };
    *out = FlowOf {
        l4_off,
        proto,
        tcp_flags,
        saddr,
        daddr,
        sport,
        dport,
        len: ctx.len(),
        frag,
    };
    Ok(())
}
