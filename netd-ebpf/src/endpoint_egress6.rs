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
//! - Internal networks: nothing but their own containers, the gateway and the link.
//! - NAT66 (`egress6::nat`), for what leaves the network: replies of published ports,
//!   hairpin to a host address's published port, masquerade out of the uplink.
//!
//! The rest goes on to the next program (TCX_NEXT) and the bridge.
use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use netd_common::{drop_reason, drop_reason::DropReason, trace::hook, EP_F_ICC, EP_F_INTERNAL};

use crate::{
    egress6,
    maps::{ADDRS6, ENDPOINTS6},
    parse::ETH_HLEN,
    parse6::{link_local, multicast, ETH_P_IPV6, IP6_DADDR, IP6_HLEN, IP6_SADDR},
    trace,
};

use crate::consts::{
    IP6_NEXTHDR, MLD2_REPORT, MLD_DONE, MLD_QUERY, MLD_REPORT, ND_NEIGHBOUR_ADVERT,
    ND_NEIGHBOUR_SOLICIT, ND_REDIRECT, ND_ROUTER_ADVERT, ND_ROUTER_SOLICIT, NEXTHDR_HOP,
    NEXTHDR_ICMP6,
};

#[classifier]
pub fn endpoint_egress6(ctx: TcContext) -> i32 {
    // The checks and NAT66 run one after the other, each in its own stack frame: the
    // two together would not fit in one.
    let result = match check(&ctx) {
        Ok(Checked::Nat) => egress6::nat(&ctx),
        Ok(Checked::Bridged) => egress6::bridged(&ctx),
        Ok(Checked::Across) => egress6::across(&ctx),
        Ok(Checked::Done(verdict)) => Ok(verdict),
        Err(reason) => Err(reason),
    };
    // The single exit: every drop counted with its reason, every verdict traced.
    trace::tc_exit(&ctx, hook::ENDPOINT_EGRESS6, result)
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

/// What the checks leave to do.
enum Checked {
    /// The verdict.
    Done(i32),
    /// Leaving the network: NAT66's turn. (It looks the endpoint up again: a map
    /// pointer returned through the stack reaches it as a mere number.)
    Nat,
    /// To a container of the same network: only a tracked flow (a hairpin's reply)
    /// has a rewrite; the rest is bridged.
    Bridged,
    /// To a container of another network: only a tracked flow, or a new one to a port
    /// a `routed` network publishes straight at that container, goes on.
    Across,
}

#[inline(never)]
fn check(ctx: &TcContext) -> Result<Checked, DropReason> {
    let done = Ok(Checked::Done(TC_ACT_UNSPEC));
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return done;
    };
    if u16::from_be(ethertype) != ETH_P_IPV6 {
        return done;
    }
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(ep) = ENDPOINTS6.get_ptr(&ifindex) else {
        return Err(drop_reason::IPV6_REFUSED);
    };
    // SAFETY: a map value, alive while the program runs.
    let e = unsafe { &*ep };
    let (Ok(smac), Ok(saddr), Ok(daddr)) = (
        ctx.load::<[u8; 6]>(6),
        ctx.load::<[u8; 16]>(IP6_SADDR),
        ctx.load::<[u8; 16]>(IP6_DADDR),
    ) else {
        return Err(drop_reason::IPV6_REFUSED);
    };
    if smac != e.mac {
        return Err(drop_reason::SPOOFED_MAC);
    }
    let unspecified = saddr == [0; 16];
    if saddr != e.addr && !link_local(&saddr) && !unspecified {
        return Err(drop_reason::SPOOFED_IP);
    }
    let icmp = icmp6(ctx)?;
    let nd = match icmp {
        Some((ND_ROUTER_ADVERT | ND_REDIRECT, _)) => return Err(drop_reason::ROUTER_ADVERT),
        Some((ND_NEIGHBOUR_ADVERT, off)) => {
            // The target address follows the type, code, checksum and flags.
            let target: [u8; 16] = ctx.load(off + 8).map_err(|_| drop_reason::IPV6_REFUSED)?;
            if target != e.addr && !link_local(&target) {
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
    let on_link = link_local(&daddr) || multicast(&daddr);
    // SAFETY: a read-only lookup of a plain-data value.
    if let Some(dst) = unsafe { ADDRS6.get(&daddr) } {
        if dst.net_id != e.net_id {
            return Ok(Checked::Across);
        }
        if e.flags & EP_F_ICC == 0 && !housekeeping && dst.ifindex != ifindex {
            return Err(drop_reason::ICC);
        }
        return Ok(Checked::Bridged);
    }
    if on_link {
        // Link-local and multicast reach the other containers of the bridge too.
        if e.flags & EP_F_ICC == 0 && !housekeeping {
            return Err(drop_reason::ICC);
        }
        return done;
    }
    if link_local(&saddr) || unspecified {
        return done;
    }
    if e.flags & EP_F_INTERNAL != 0 {
        // Beyond the network: only its gateway.
        if daddr != e.gw {
            return Err(drop_reason::INTERNAL);
        }
        return done;
    }
    Ok(Checked::Nat)
}
