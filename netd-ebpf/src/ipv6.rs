//! `endpoint_egress6`: IPv6 from a container of an IPv6 network, first at TC ingress of
//! its host veth (tcx, ahead of `endpoint_egress`, which leaves IPv6 alone). IPv6 has
//! no ARP: neighbour discovery is ICMPv6, so the identity checks live here.
//!
//! - Sender: the source MAC is the endpoint's; the source address is its global address,
//!   a link-local one (fe80::/10, never routed) or :: (duplicate address detection).
//! - Neighbour discovery: router advertisements and redirects from a container are
//!   dropped (it must not become its neighbours' router); a neighbour advertisement
//!   may only announce the container's own addresses.
//! - Isolation: to another network's container, dropped; between containers of a
//!   network with icc=false (their addresses, link-local and multicast), only the
//!   link's housekeeping passes (neighbour and router solicitation, MLD).
//!
//! The rest goes on to the next program (TCX_NEXT) and the bridge.
use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use netd_common::{drop_reason, drop_reason::DropReason, EP_F_ICC};

use crate::{
    maps::{ADDRS6, ENDPOINTS6},
    metrics::count_drop,
    parse::ETH_HLEN,
};

const ETH_P_IPV6: u16 = 0x86dd;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ICMP6: u8 = 58;
const MLD_QUERY: u8 = 130;
const MLD_REPORT: u8 = 131;
const MLD_DONE: u8 = 132;
const ND_ROUTER_SOLICIT: u8 = 133;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOUR_SOLICIT: u8 = 135;
const ND_NEIGHBOUR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;
const MLD2_REPORT: u8 = 143;
/// Offsets in the IPv6 header.
const IP6_NEXTHDR: usize = ETH_HLEN + 6;
const IP6_SADDR: usize = ETH_HLEN + 8;
const IP6_DADDR: usize = ETH_HLEN + 24;
const IP6_HLEN: usize = 40;

#[classifier]
pub fn endpoint_egress6(ctx: TcContext) -> i32 {
    match try_egress6(&ctx) {
        Ok(()) => TC_ACT_UNSPEC,
        Err(reason) => {
            count_drop(reason);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// The ICMPv6 type of the packet, if it is ICMPv6 (directly, or after one hop-by-hop
/// header, as MLD reports come), and the offset of the ICMPv6 header.
#[inline(always)]
fn icmp6(ctx: &TcContext) -> Result<Option<(u8, usize)>, DropReason> {
    let bad = drop_reason::IPV6_REFUSED;
    let mut next: u8 = ctx.load(IP6_NEXTHDR).map_err(|_| bad)?;
    let mut off = ETH_HLEN + IP6_HLEN;
    if next == NEXTHDR_HOP {
        // Next header, then the length in 8-byte units beyond the first 8.
        next = ctx.load(off).map_err(|_| bad)?;
        let len: u8 = ctx.load(off + 1).map_err(|_| bad)?;
        off += (usize::from(len) + 1) * 8;
    }
    if next != NEXTHDR_ICMP6 {
        return Ok(None);
    }
    let ty: u8 = ctx.load(off).map_err(|_| bad)?;
    Ok(Some((ty, off)))
}

#[inline(always)]
fn try_egress6(ctx: &TcContext) -> Result<(), DropReason> {
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return Ok(());
    };
    if u16::from_be(ethertype) != ETH_P_IPV6 {
        return Ok(());
    }
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a read-only lookup of a plain-data value.
    let Some(ep) = (unsafe { ENDPOINTS6.get(&ifindex) }).copied() else {
        return Err(drop_reason::IPV6_REFUSED);
    };
    let (Ok(smac), Ok(saddr), Ok(daddr)) = (
        ctx.load::<[u8; 6]>(6),
        ctx.load::<[u8; 16]>(IP6_SADDR),
        ctx.load::<[u8; 16]>(IP6_DADDR),
    ) else {
        return Err(drop_reason::IPV6_REFUSED);
    };
    if smac != ep.mac {
        return Err(drop_reason::SPOOFED_MAC);
    }
    let unspecified = saddr == [0; 16];
    if saddr != ep.addr && !link_local(&saddr) && !unspecified {
        return Err(drop_reason::SPOOFED_IP);
    }
    let icmp = icmp6(ctx)?;
    let nd = match icmp {
        Some((ND_ROUTER_ADVERT | ND_REDIRECT, _)) => return Err(drop_reason::ROUTER_ADVERT),
        Some((ND_NEIGHBOUR_ADVERT, off)) => {
            // The target address follows the type, code, checksum and flags.
            let target: [u8; 16] = ctx.load(off + 8).map_err(|_| drop_reason::IPV6_REFUSED)?;
            if target != ep.addr && !link_local(&target) {
                return Err(drop_reason::SPOOFED_ND);
            }
            true
        }
        Some((ND_NEIGHBOUR_SOLICIT, _)) => true,
        _ => false,
    };
    // Neighbour and router solicitations and multicast listener messages: the link's
    // own housekeeping, which icc=false leaves alone.
    let housekeeping = nd
        || matches!(
            icmp,
            Some((
                ND_ROUTER_SOLICIT | MLD_QUERY | MLD_REPORT | MLD_DONE | MLD2_REPORT,
                _
            ))
        );
    // Anything else from :: is not duplicate address detection.
    if unspecified && !nd {
        return Err(drop_reason::SPOOFED_IP);
    }
    // SAFETY: a read-only lookup of a plain-data value.
    if let Some(dst) = unsafe { ADDRS6.get(&daddr) } {
        if dst.net_id != ep.net_id {
            return Err(drop_reason::OTHER_NETWORK);
        }
        if ep.flags & EP_F_ICC == 0 && !housekeeping && dst.ifindex != ifindex {
            return Err(drop_reason::ICC);
        }
    } else if ep.flags & EP_F_ICC == 0 && !housekeeping && (link_local(&daddr) || daddr[0] == 0xff)
    {
        // Link-local and multicast reach the other containers of the bridge too.
        return Err(drop_reason::ICC);
    }
    Ok(())
}
