//! Header parsing, one parser for TC and XDP: it reads through `Packet`, which each
//! program context implements its own way. TC loads with bpf_skb_load_bytes, which
//! copes with non-linear skbs and variable IP header lengths without verifier
//! gymnastics; XDP reads the first buffer directly, each read checked against its end.
use aya_ebpf::{
    helpers::bpf_xdp_get_buff_len,
    programs::{TcContext, XdpContext},
};
use netd_common::{event, event::Event, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;

/// What the parser needs from a program's context.
pub trait Packet {
    /// The `T` at byte `off` of the frame, or Err if the frame is shorter.
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()>;
    /// Length of the whole frame, every fragment buffer included.
    fn len(&self) -> u32;
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

/// A TCP, UDP or ICMP echo packet's tuple and the offsets needed to rewrite it, with
/// addresses of type `A` (`u32` for IPv4, `[u8; 16]` for IPv6: `parse6`). Addresses and
/// ports are raw (network byte order), as in the packet and in the maps. For ICMP echo
/// both ports are the echo id.
pub struct FlowOf<A> {
    pub l4_off: usize,
    pub proto: u8,
    pub tcp_flags: u8,
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub len: u32,
}

/// An IPv4 flow.
pub type Flow = FlowOf<u32>;

/// What the parser makes of a packet (`Parsed` for IPv4, `parse6::Parsed6` for IPv6).
pub enum ParsedOf<A> {
    /// TCP, UDP or ICMP echo, unfragmented.
    Flow(FlowOf<A>),
    /// An ICMP error (unreachable, time exceeded, parameter problem); the ICMP header
    /// starts at the offset given.
    IcmpError(usize),
    /// Not something netd rewrites (ARP, IPv6, other ICMP, other protocols): untouched.
    NotOurs,
    /// Broken or unsupported (bad header lengths, fragments); the event says which, and
    /// the packet passes untouched so the stack's own checks judge it.
    Skip(Event),
}

pub type Parsed = ParsedOf<u32>;

/// Parses the whole frame.
#[inline(always)]
pub fn parse<C: Packet>(ctx: &C) -> Parsed {
    match ipv4(ctx) {
        Ok(Some(ip)) => l4(ctx, &ip),
        Ok(None) => Parsed::NotOurs,
        Err(()) => Parsed::Skip(event::MALFORMED_PASSED),
    }
}

/// Parses what follows an IPv4 header `ipv4` returned.
#[inline(always)]
pub fn l4<C: Packet>(ctx: &C, ip: &Ipv4) -> Parsed {
    match try_l4(ctx, ip) {
        Ok(p) => p,
        Err(()) => Parsed::Skip(event::MALFORMED_PASSED),
    }
}

#[inline(always)]
fn try_l4<C: Packet>(ctx: &C, ip: &Ipv4) -> Result<Parsed, ()> {
    if ip.tot_len < ip.ihl || ip.tot_len + ETH_HLEN > ctx.len() as usize {
        return Err(());
    }
    let proto = ip.proto;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP {
        return Ok(Parsed::NotOurs);
    }
    // Only the first fragment carries ports; the others cannot be matched to a flow
    // without reassembly, so they are left to the stack rather than mis-NATed.
    if ip.is_fragment() {
        return Ok(Parsed::Skip(event::FRAGMENT_PASSED));
    }
    let l4_off = ip.l4_off;
    let l4_min = if proto == IPPROTO_TCP { 20 } else { 8 };
    if ip.tot_len < ip.ihl + l4_min {
        return Err(());
    }
    if proto == IPPROTO_ICMP {
        let ty: u8 = ctx.load(l4_off)?;
        if ty == ICMP_DEST_UNREACH || ty == ICMP_TIME_EXCEEDED || ty == ICMP_PARAMETER_PROB {
            return Ok(Parsed::IcmpError(l4_off));
        }
        if ty != ICMP_ECHO_REQUEST && ty != ICMP_ECHO_REPLY {
            return Ok(Parsed::NotOurs);
        }
    }
    flow(
        ctx,
        l4_off,
        proto,
        proto == IPPROTO_ICMP,
        ip.saddr,
        ip.daddr,
    )
}

/// The flow of a packet whose upper-layer header (`proto`) is at `l4_off`, for both
/// families: an echo's id stands for both ports; TCP's flags are read.
#[inline(always)]
pub fn flow<C: Packet, A>(
    ctx: &C,
    l4_off: usize,
    proto: u8,
    echo: bool,
    saddr: A,
    daddr: A,
) -> Result<ParsedOf<A>, ()> {
    let (sport, dport, tcp_flags) = if echo {
        let id: u16 = ctx.load(l4_off + 4)?;
        (id, id, 0)
    } else {
        let sport: u16 = ctx.load(l4_off)?;
        let dport: u16 = ctx.load(l4_off + 2)?;
        let flags: u8 = if proto == IPPROTO_TCP {
            ctx.load(l4_off + 13)?
        } else {
            0
        };
        (sport, dport, flags)
    };
    Ok(ParsedOf::Flow(FlowOf {
        l4_off,
        proto,
        tcp_flags,
        saddr,
        daddr,
        sport,
        dport,
        len: ctx.len(),
    }))
}
