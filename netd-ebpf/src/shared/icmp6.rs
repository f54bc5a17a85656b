//! ICMPv6 errors about NAT66 flows: `icmp.rs` for IPv6. The error quotes the offending
//! packet as it travelled (after NAT); the entry of the quoted tuple's reverse direction
//! says what it was before. The quoted header and the outer addresses are put back, and
//! the ICMPv6 checksum follows every change (it covers the pseudo-header, so the outer
//! addresses count too). Packet too big must reach the container: IPv6 routers never
//! fragment, so path-MTU discovery through the NAT depends on it.
use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use netd_common::{drop_reason::DropReason, CtKey6, IPPROTO_ICMPV6};

use crate::{
    conntrack,
    icmp::{self, Skip},
    nat6::store_addr,
    parse6::{IP6_DADDR, IP6_HLEN, IP6_SADDR},
};

/// Translates the ICMPv6 error whose header is at `icmp_off`. Ok(true): translated;
/// Ok(false): not about a tracked flow, or malformed (counted), and untouched.
///
/// Not inlined: its own stack frame, apart from the caller's.
#[inline(never)]
pub fn translate_error(ctx: &TcContext, icmp_off: usize) -> Result<bool, DropReason> {
    icmp::settle(try_translate(ctx, icmp_off))
}

#[inline(always)]
fn try_translate(ctx: &TcContext, icmp_off: usize) -> Result<(), Skip> {
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
    let ports = icmp::quoted_ports(proto, IPPROTO_ICMPV6, inner + IP6_HLEN);
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
