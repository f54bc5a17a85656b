//! IPv6 header parsing, for TC and XDP alike (through `Packet`, as `parse`). The chain
//! of extension headers is walked (hop-by-hop, routing, destination options) to the
//! upper-layer header, so a hop-by-hop option cannot hide a flow from the NAT. A
//! fragment header ends the walk: only the first fragment carries ports, and netd does
//! not reassemble, so fragments pass untouched and counted, as IPv4's do.
use netd_common::{event, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

use crate::parse::{FlowOf, Packet, ParsedOf, ETH_HLEN};

pub const ETH_P_IPV6: u16 = 0x86dd;
/// Offsets in the frame.
pub const IP6_SADDR: usize = ETH_HLEN + 8;
pub const IP6_DADDR: usize = ETH_HLEN + 24;
pub const IP6_HLEN: usize = 40;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers walked before giving up (and passing the packet on untouched).
const MAX_EXT_HEADERS: usize = 4;

pub const ICMP6_DEST_UNREACH: u8 = 1;
pub const ICMP6_PACKET_TOO_BIG: u8 = 2;
pub const ICMP6_TIME_EXCEEDED: u8 = 3;
pub const ICMP6_PARAM_PROB: u8 = 4;
pub const ICMP6_ECHO_REQUEST: u8 = 128;
pub const ICMP6_ECHO_REPLY: u8 = 129;

/// An IPv6 flow: addresses as on the wire.
pub type Flow6 = FlowOf<[u8; 16]>;
pub type Parsed6 = ParsedOf<[u8; 16]>;

/// An IPv6 header and where its upper-layer header is.
pub struct Ipv6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The upper-layer protocol, after the extension headers.
    pub proto: u8,
    /// Offset of the upper-layer header.
    pub l4_off: usize,
    /// Where the packet ends by its payload length (0 for a jumbogram: not ours).
    end: usize,
    /// A fragment header was found.
    fragment: bool,
    /// More extension headers than walked.
    too_deep: bool,
}

impl Ipv6 {
    /// Whether this packet carries its upper-layer header where `l4_off` says.
    #[inline(always)]
    pub fn has_l4_header(&self) -> bool {
        !self.fragment && !self.too_deep
    }
}

/// The IPv6 header of the frame: Ok(None) for other ethertypes, Err for a broken one.
#[inline(always)]
pub fn ipv6<C: Packet>(ctx: &C) -> Result<Option<Ipv6>, ()> {
    let ethertype: u16 = ctx.load(12)?;
    if u16::from_be(ethertype) != ETH_P_IPV6 {
        return Ok(None);
    }
    let version: u8 = ctx.load(ETH_HLEN)?;
    if version >> 4 != 6 {
        return Err(());
    }
    let payload_len = u16::from_be(ctx.load::<u16>(ETH_HLEN + 4)?) as usize;
    let mut next: u8 = ctx.load(ETH_HLEN + 6)?;
    let mut off = ETH_HLEN + IP6_HLEN;
    let mut fragment = false;
    let mut too_deep = true;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                // Next header, then the length in 8-byte units beyond the first 8: one
                // read, so XDP's bounds check covers both bytes.
                let [nh, len]: [u8; 2] = ctx.load(off)?;
                off += (usize::from(len) + 1) * 8;
                next = nh;
            }
            NEXTHDR_FRAGMENT => {
                // Two bytes, not one: XDP's verifier follows a 2-byte bounds check,
                // while LLVM turns a 1-byte one into a form it does not.
                let [nh, _]: [u8; 2] = ctx.load(off)?;
                next = nh;
                off += 8;
                fragment = true;
                too_deep = false;
                break;
            }
            _ => {
                too_deep = false;
                break;
            }
        }
    }
    Ok(Some(Ipv6 {
        saddr: ctx.load(IP6_SADDR)?,
        daddr: ctx.load(IP6_DADDR)?,
        proto: next,
        l4_off: off,
        end: if payload_len == 0 {
            0
        } else {
            ETH_HLEN + IP6_HLEN + payload_len
        },
        fragment,
        too_deep,
    }))
}

/// Parses what follows an IPv6 header `ipv6` returned.
#[inline(always)]
pub fn l4<C: Packet>(ctx: &C, ip: &Ipv6) -> Parsed6 {
    match try_l4(ctx, ip) {
        Ok(p) => p,
        Err(()) => ParsedOf::Skip(event::MALFORMED_PASSED),
    }
}

#[inline(always)]
fn try_l4<C: Packet>(ctx: &C, ip: &Ipv6) -> Result<Parsed6, ()> {
    let proto = ip.proto;
    if ip.too_deep {
        return Ok(ParsedOf::NotOurs);
    }
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMPV6 {
        return Ok(ParsedOf::NotOurs);
    }
    // A jumbogram (payload length 0) or a frame shorter than its payload length.
    if ip.end == 0 || ip.end > ctx.len() as usize {
        return Err(());
    }
    if ip.fragment {
        return Ok(ParsedOf::Skip(event::FRAGMENT_PASSED));
    }
    let l4_off = ip.l4_off;
    let l4_min = if proto == IPPROTO_TCP { 20 } else { 8 };
    if l4_off + l4_min > ip.end {
        return Err(());
    }
    let (sport, dport, tcp_flags) = if proto == IPPROTO_ICMPV6 {
        let ty: u8 = ctx.load(l4_off)?;
        match ty {
            ICMP6_DEST_UNREACH | ICMP6_PACKET_TOO_BIG | ICMP6_TIME_EXCEEDED | ICMP6_PARAM_PROB => {
                return Ok(ParsedOf::IcmpError(l4_off))
            }
            ICMP6_ECHO_REQUEST | ICMP6_ECHO_REPLY => {}
            // Neighbour discovery, MLD, router messages: the link's, not a flow.
            _ => return Ok(ParsedOf::NotOurs),
        }
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
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport,
        dport,
        len: ctx.len(),
    }))
}

/// fe80::/10: never routed, never NATed.
#[inline(always)]
pub fn link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// ff00::/8.
#[inline(always)]
pub fn multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff
}

/// ::1.
#[inline(always)]
pub fn loopback(a: &[u8; 16]) -> bool {
    *a == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
}
