//! IPv6 header parsing, for TC and XDP alike (through `Packet`, as `parse`). The chain
//! of extension headers is walked (hop-by-hop, routing, destination options, fragment)
//! to the upper-layer header, so a hop-by-hop option cannot hide a flow from the NAT. A
//! later fragment ends the walk (`frag`: its flow comes from its first fragment); a
//! first fragment's walk goes on past the fragment header.
use netd_common::{drop_reason, IPPROTO_ICMPV6};

use crate::{
    frag,
    parse::{self, FlowOf, Kind, Packet, ETH_HLEN},
    proto::l4_min,
};

pub use crate::consts::{ETH_P_IPV6, IP6_DADDR, IP6_HLEN, IP6_SADDR};
use crate::consts::{NEXTHDR_DEST, NEXTHDR_FRAGMENT, NEXTHDR_HOP, NEXTHDR_ROUTING};
/// Extension headers walked before giving up (the packet is then not the NAT's).
const MAX_EXT_HEADERS: usize = 5;

pub use crate::consts::{
    ICMP6_DEST_UNREACH, ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST, ICMP6_PACKET_TOO_BIG,
    ICMP6_PARAM_PROB, ICMP6_TIME_EXCEEDED,
};

/// An IPv6 flow: addresses as on the wire.
pub type Flow6 = FlowOf<[u8; 16]>;

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
    /// Fragment state (`frag`), 0 for a whole packet; the key's protocol is the
    /// fragment header's next header.
    pub frag: u64,
    /// More extension headers than walked.
    too_deep: bool,
}

impl Ipv6 {
    /// Whether this packet carries its upper-layer header where `l4_off` says.
    #[inline(always)]
    pub fn has_l4_header(&self) -> bool {
        frag::has_l4(self.frag) && !self.too_deep
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
    let mut frag = 0;
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
                // The whole header in one read (next header, reserved, offset and M
                // flag, id): one bounds check for XDP's verifier.
                let h: [u8; 8] = ctx.load(off)?;
                next = h[0];
                off += 8;
                let offset_m = u16::from_be_bytes([h[2], h[3]]);
                // Offset 0 and no M: an atomic fragment, a whole packet.
                if offset_m & 0xfff9 != 0 {
                    let later = offset_m & 0xfff8 != 0;
                    let id = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
                    frag = frag::info(id, next, !later);
                }
                // The fragmentable part follows: the upper-layer header in a first
                // fragment (a destination option ahead of it is not followed), the
                // payload in a later one.
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
        frag,
        too_deep,
    }))
}

/// Parses what follows an IPv6 header `ipv6` returned, into `out`.
#[inline(always)]
pub fn l4<C: Packet>(ctx: &C, ip: &Ipv6, out: &mut Flow6) -> Kind {
    try_l4(ctx, ip, out).unwrap_or(Kind::Pass(drop_reason::MALFORMED))
}

#[inline(always)]
fn try_l4<C: Packet>(ctx: &C, ip: &Ipv6, out: &mut Flow6) -> Result<Kind, ()> {
    let proto = ip.proto;
    if ip.too_deep {
        return Ok(Kind::Pass(drop_reason::UNTRANSLATABLE));
    }
    // A jumbogram (payload length 0) or a frame shorter than its payload length.
    if ip.end == 0 || ip.end > ctx.len() as usize {
        return Err(());
    }
    if !frag::has_l4(ip.frag) {
        let (off, frag) = (ip.l4_off, ip.frag);
        return Ok(parse::later_fragment(
            ctx, off, ip.saddr, ip.daddr, frag, out,
        ));
    }
    let l4_off = ip.l4_off;
    if l4_off + l4_min(proto) > ip.end {
        return Err(());
    }
    if proto == IPPROTO_ICMPV6 {
        let ty: u8 = ctx.load(l4_off)?;
        match ty {
            ICMP6_DEST_UNREACH | ICMP6_PACKET_TOO_BIG | ICMP6_TIME_EXCEEDED | ICMP6_PARAM_PROB => {
                return Ok(Kind::IcmpError(l4_off))
            }
            ICMP6_ECHO_REQUEST | ICMP6_ECHO_REPLY => {}
            // Neighbour discovery, MLD, router messages: the link's, not a flow.
            _ => return Ok(Kind::Pass(drop_reason::UNTRANSLATABLE)),
        }
    }
    let at = (l4_off, proto, proto == IPPROTO_ICMPV6, ip.frag);
    parse::flow(ctx, at, ip.saddr, ip.daddr, out)?;
    Ok(Kind::Flow)
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
