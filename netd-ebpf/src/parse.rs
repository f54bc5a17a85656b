//! Header parsing. Loads go through bpf_skb_load_bytes (`TcContext::load`), which copes
//! with non-linear skbs and variable IP header lengths without verifier gymnastics.
use aya_ebpf::programs::TcContext;
use netd_common::{event, event::Event, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;

/// An IPv4 TCP, UDP or ICMP echo packet's tuple and the offsets needed to rewrite it.
/// Addresses and ports are raw (network byte order), as in the packet and in the maps.
/// For ICMP echo both ports are the echo id.
pub struct Flow {
    pub l4_off: usize,
    pub proto: u8,
    pub tcp_flags: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub len: u32,
}

/// What the parser makes of a packet.
pub enum Parsed {
    /// TCP, UDP or ICMP echo over IPv4, first fragment or unfragmented.
    Flow(Flow),
    /// An ICMP error (unreachable, time exceeded, parameter problem); the ICMP header
    /// starts at the offset given.
    IcmpError(usize),
    /// Not something netd rewrites (ARP, IPv6, other ICMP, other protocols): untouched.
    NotOurs,
    /// Broken or unsupported (bad header lengths, fragments); the event says which,
    /// and the packet passes untouched so the stack's own checks judge it.
    Skip(Event),
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Parsed {
    match try_parse(ctx) {
        Ok(p) => p,
        Err(()) => Parsed::Skip(event::MALFORMED_PASSED),
    }
}

#[inline(always)]
fn try_parse(ctx: &TcContext) -> Result<Parsed, ()> {
    let ethertype: u16 = ctx.load(12).map_err(|_| ())?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return Ok(Parsed::NotOurs);
    }
    let vihl: u8 = ctx.load(ETH_HLEN).map_err(|_| ())?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(());
    }
    let tot_len = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2).map_err(|_| ())?) as usize;
    if tot_len < ihl || tot_len + ETH_HLEN > ctx.len() as usize {
        return Err(());
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9).map_err(|_| ())?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP {
        return Ok(Parsed::NotOurs);
    }
    let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).map_err(|_| ())?);
    // Only the first fragment carries ports; the others cannot be matched to a flow
    // without reassembly, so they are left to the stack rather than mis-NATed.
    if frag & 0x1fff != 0 || frag & 0x2000 != 0 {
        return Ok(Parsed::Skip(event::FRAGMENT_PASSED));
    }
    let l4_off = ETH_HLEN + ihl;
    let l4_min = if proto == IPPROTO_TCP { 20 } else { 8 };
    if tot_len < ihl + l4_min {
        return Err(());
    }
    let saddr: u32 = ctx.load(ETH_HLEN + 12).map_err(|_| ())?;
    let daddr: u32 = ctx.load(ETH_HLEN + 16).map_err(|_| ())?;
    let (sport, dport, tcp_flags) = if proto == IPPROTO_ICMP {
        let ty: u8 = ctx.load(l4_off).map_err(|_| ())?;
        if ty == ICMP_DEST_UNREACH || ty == ICMP_TIME_EXCEEDED || ty == ICMP_PARAMETER_PROB {
            return Ok(Parsed::IcmpError(l4_off));
        }
        if ty != ICMP_ECHO_REQUEST && ty != ICMP_ECHO_REPLY {
            return Ok(Parsed::NotOurs);
        }
        let id: u16 = ctx.load(l4_off + 4).map_err(|_| ())?;
        (id, id, 0)
    } else {
        let sport: u16 = ctx.load(l4_off).map_err(|_| ())?;
        let dport: u16 = ctx.load(l4_off + 2).map_err(|_| ())?;
        let flags: u8 = if proto == IPPROTO_TCP {
            ctx.load(l4_off + 13).map_err(|_| ())?
        } else {
            0
        };
        (sport, dport, flags)
    };
    Ok(Parsed::Flow(Flow {
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
