//! ICMP errors about NATed flows, of both families (IPv6's with a `6`, below IPv4's). The error quotes the offending packet's header as it
//! travelled (after NAT); its sender only knows the flow as it was before. The entry of
//! the quoted tuple's reverse direction says what that was: the quoted header is put
//! back to it, and the outer addresses follow, so path-MTU discovery and "port
//! unreachable" work through netd as through the kernel's NAT.
use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use netd_common::{
    drop_reason, drop_reason::DropReason, event, CtKey, CtKey6, IPPROTO_ICMP, IPPROTO_ICMPV6,
};

use crate::{
    conntrack,
    metrics::count,
    nat6::store_addr,
    parse::ETH_HLEN,
    parse6::{IP6_DADDR, IP6_HLEN, IP6_SADDR},
    proto::has_ports,
};

/// Translates the ICMP error whose ICMP header is at `icmp_off`: Ok(true) if it was
/// about a tracked flow and translated. Errors about flows netd does not track are left
/// untouched (Ok(false)). Not inlined: its own stack frame, apart from the caller's.
#[inline(never)]
pub fn translate_error(ctx: &TcContext, icmp_off: usize) -> Result<bool, DropReason> {
    settle(try_translate(ctx, icmp_off))
}

/// Where the ports of a quoted packet of protocol `proto` are, for both families: an
/// ICMP query's id stands for both (`query_proto`: ICMP or ICMPv6), protocols without
/// ports have none (their flows are keyed with both 0).
#[inline(always)]
pub fn quoted_ports(proto: u8, query_proto: u8, l4: usize) -> Option<(usize, usize)> {
    if proto == query_proto {
        Some((l4 + 4, l4 + 4))
    } else if has_ports(proto) {
        Some((l4, l4 + 2))
    } else {
        None
    }
}

/// Why an ICMP error was left as it is.
pub enum Skip {
    /// Not about a flow netd tracks.
    Untracked,
    /// Too short or broken: counted, and left to the stack.
    Malformed,
    /// A rewrite failed half-way: dropped rather than sent half-translated.
    Failed,
}

/// A translation's outcome, for both families: Ok(true) translated, Ok(false) left
/// untouched, Err for a drop.
#[inline(always)]
pub fn settle(r: Result<(), Skip>) -> Result<bool, DropReason> {
    match r {
        Ok(()) => Ok(true),
        Err(Skip::Untracked) => Ok(false),
        Err(Skip::Malformed) => {
            count(event::MALFORMED_PASSED);
            Ok(false)
        }
        Err(Skip::Failed) => Err(drop_reason::REWRITE_FAILED),
    }
}

#[inline(always)]
fn try_translate(ctx: &TcContext, icmp_off: usize) -> Result<(), Skip> {
    let m = |_| Skip::Malformed;
    let f = |_| Skip::Failed;
    let inner = icmp_off + 8;
    let vihl: u8 = ctx.load(inner).map_err(m)?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(Skip::Malformed);
    }
    let proto: u8 = ctx.load(inner + 9).map_err(m)?;
    let i_saddr: u32 = ctx.load(inner + 12).map_err(m)?;
    let i_daddr: u32 = ctx.load(inner + 16).map_err(m)?;
    let ports = quoted_ports(proto, IPPROTO_ICMP, inner + ihl);
    let (i_sport, i_dport): (u16, u16) = match ports {
        Some((s, d)) => (ctx.load(s).map_err(m)?, ctx.load(d).map_err(m)?),
        None => (0, 0),
    };
    let key = CtKey {
        saddr: i_daddr,
        daddr: i_saddr,
        sport: i_dport,
        dport: i_sport,
        proto,
        _pad: [0; 3],
    };
    let e = match conntrack::get(&key) {
        Some(e) => e,
        None => return Err(Skip::Untracked),
    };
    // The quoted packet as its sender sent it: the reverse of the entry's tuple.
    let (n_saddr, n_sport, n_daddr, n_dport) = (e.daddr, e.dport, e.saddr, e.sport);

    let icmp_csum = icmp_off + 2;
    let inner_csum = inner + 10;
    // Everything inside the ICMP message is covered by the ICMP checksum, the quoted IP
    // header's own checksum included, so each change is folded into both as needed.
    let old_inner_csum: u16 = ctx.load(inner_csum).map_err(m)?;
    for (old, new, off) in [
        (i_saddr, n_saddr, inner + 12),
        (i_daddr, n_daddr, inner + 16),
    ] {
        if old != new {
            ctx.l3_csum_replace(inner_csum, old as u64, new as u64, 4)
                .map_err(f)?;
            ctx.l4_csum_replace(icmp_csum, old as u64, new as u64, 4)
                .map_err(f)?;
            ctx.store(off, &new, 0).map_err(f)?;
        }
    }
    let new_inner_csum: u16 = ctx.load(inner_csum).map_err(m)?;
    if new_inner_csum != old_inner_csum {
        ctx.l4_csum_replace(icmp_csum, old_inner_csum as u64, new_inner_csum as u64, 2)
            .map_err(f)?;
    }
    // Ports: the quoted L4 checksum is usually cut off, so only the ICMP sum follows.
    if let Some((sport_off, dport_off)) = ports {
        let port = |off: usize, old: u16, new: u16| -> Result<(), Skip> {
            ctx.l4_csum_replace(icmp_csum, old as u64, new as u64, 2)
                .map_err(f)?;
            ctx.store(off, &new, 0).map_err(f)
        };
        if i_sport != n_sport {
            port(sport_off, i_sport, n_sport)?;
        }
        // A quoted query's id is both ports: written once.
        if dport_off != sport_off && i_dport != n_dport {
            port(dport_off, i_dport, n_dport)?;
        }
    }

    // The outer header: the error goes to the quoted packet's sender, and when the
    // quoted destination itself complained, it speaks with that destination's address.
    let o_saddr: u32 = ctx.load(ETH_HLEN + 12).map_err(m)?;
    let o_daddr: u32 = ctx.load(ETH_HLEN + 16).map_err(m)?;
    let outer = [
        (
            o_daddr,
            if o_daddr == i_saddr { n_saddr } else { o_daddr },
            ETH_HLEN + 16,
        ),
        (
            o_saddr,
            if o_saddr == i_daddr { n_daddr } else { o_saddr },
            ETH_HLEN + 12,
        ),
    ];
    for (old, new, off) in outer {
        if old != new {
            ctx.l3_csum_replace(ETH_HLEN + 10, old as u64, new as u64, 4)
                .map_err(f)?;
            ctx.store(off, &new, 0).map_err(f)?;
        }
    }
    Ok(())
}

// IPv6: the error quotes the offending packet as it travelled (after NAT66); the
// quoted header and the outer addresses are put back, and the ICMPv6 checksum follows
// every change (it covers the pseudo-header, so the outer addresses count too). Packet
// too big must reach the container: IPv6 routers never fragment, so path-MTU discovery
// through the NAT depends on it.

/// Translates the ICMPv6 error whose header is at `icmp_off`. Ok(true): translated;
/// Ok(false): not about a tracked flow, or malformed (counted), and untouched.
///
/// Not inlined: its own stack frame, apart from the caller's.
#[inline(never)]
pub fn translate_error6(ctx: &TcContext, icmp_off: usize) -> Result<bool, DropReason> {
    settle(try_translate6(ctx, icmp_off))
}

#[inline(always)]
fn try_translate6(ctx: &TcContext, icmp_off: usize) -> Result<(), Skip> {
    let m = |_| Skip::Malformed;
    let f = |_| Skip::Failed;
    // The quoted packet: an IPv6 header right after the 8 bytes of the ICMPv6 header.
    // A quoted packet with extension headers is not one netd made: untracked.
    let inner = icmp_off + 8;
    let version: u8 = ctx.load(inner).map_err(m)?;
    if version >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let proto: u8 = ctx.load(inner + 6).map_err(m)?;
    let i_saddr: [u8; 16] = ctx.load(inner + 8).map_err(m)?;
    let i_daddr: [u8; 16] = ctx.load(inner + 24).map_err(m)?;
    let ports = quoted_ports(proto, IPPROTO_ICMPV6, inner + IP6_HLEN);
    let (i_sport, i_dport): (u16, u16) = match ports {
        Some((s, d)) => (ctx.load(s).map_err(m)?, ctx.load(d).map_err(m)?),
        None => (0, 0),
    };
    let key = CtKey6 {
        saddr: i_daddr,
        daddr: i_saddr,
        sport: i_dport,
        dport: i_sport,
        proto,
        _pad: [0; 3],
    };
    let Some(e) = conntrack::get(&key) else {
        return Err(Skip::Untracked);
    };
    // The quoted packet as its sender sent it: the reverse of the entry's tuple.
    let (n_saddr, n_daddr) = (e.daddr, e.saddr);
    let (n_sport, n_dport) = (e.dport, e.sport);
    let csum = icmp_off + 2;
    // The quoted addresses are in the ICMPv6 payload: plain checksum changes.
    if i_saddr != n_saddr {
        store_addr(ctx, inner + 8, &i_saddr, &n_saddr, csum, 0).map_err(f)?;
    }
    if i_daddr != n_daddr {
        store_addr(ctx, inner + 24, &i_daddr, &n_daddr, csum, 0).map_err(f)?;
    }
    // Ports: the quoted transport checksum is left (the error's receiver does not check
    // it); the ICMPv6 one follows.
    if let Some((sport_off, dport_off)) = ports {
        if i_sport != n_sport {
            ctx.l4_csum_replace(csum, i_sport as u64, n_sport as u64, 2)
                .map_err(f)?;
            ctx.store(sport_off, &n_sport, 0).map_err(f)?;
        }
        // A quoted query's id is both ports: written once.
        if dport_off != sport_off && i_dport != n_dport {
            ctx.l4_csum_replace(csum, i_dport as u64, n_dport as u64, 2)
                .map_err(f)?;
            ctx.store(dport_off, &n_dport, 0).map_err(f)?;
        }
    }
    // The outer header: the error goes to the quoted packet's sender, and when the quoted
    // destination itself complained, it speaks with that destination's address. Both
    // are in the pseudo-header.
    let o_daddr: [u8; 16] = ctx.load(IP6_DADDR).map_err(m)?;
    if o_daddr == i_saddr && o_daddr != n_saddr {
        store_addr(
            ctx,
            IP6_DADDR,
            &o_daddr,
            &n_saddr,
            csum,
            BPF_F_PSEUDO_HDR as u64,
        )
        .map_err(f)?;
    }
    let o_saddr: [u8; 16] = ctx.load(IP6_SADDR).map_err(m)?;
    if o_saddr == i_daddr && o_saddr != n_daddr {
        store_addr(
            ctx,
            IP6_SADDR,
            &o_saddr,
            &n_daddr,
            csum,
            BPF_F_PSEUDO_HDR as u64,
        )
        .map_err(f)?;
    }
    Ok(())
}
