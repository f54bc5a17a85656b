//! NAT66 for IPv6 leaving a container (`endpoint_egress6`, once its identity and
//! isolation checks passed; `endpoint.rs` is the IPv4 twin): known flows get their
//! entry's rewrite (replies of published ports, masqueraded flows, hairpin); a new flow
//! to a published port on a host address is DNATed (hairpin); a new flow routed out of
//! the uplink from a network in gateway mode `nat` is masqueraded to the uplink's IPv6
//! address. Routed networks' flows go out as they are: the outside routes their subnet.
use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use netd_common::{
    ct_flag, ct_kind, drop_reason, drop_reason::DropReason, event, Endpoint6, EP_F_MASQUERADE,
    IPPROTO_ICMPV6,
};

use crate::{
    conntrack::{self, Tuple},
    icmp6,
    maps::{config, config6, ENDPOINTS6, LOCAL_ADDRS6},
    metrics::count,
    nat6::{self, Kind},
    parse6::Flow6,
    policy6,
};

const NEXT: i32 = TC_ACT_UNSPEC;

/// Not inlined: its own stack frame, after the caller's checks are done with theirs.
#[inline(never)]
pub fn nat(ctx: &TcContext) -> Result<i32, DropReason> {
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(ep) = ENDPOINTS6.get_ptr(&ifindex) else {
        return Err(drop_reason::IPV6_REFUSED);
    };
    // SAFETY: a map value, alive while the program runs.
    let ep = unsafe { &*ep };
    // SAFETY: a plain-data struct of integers; all zeroes is a valid value.
    let mut flow: Flow6 = unsafe { core::mem::zeroed() };
    match nat6::parse_into(ctx, &mut flow, false)? {
        Kind::Flow => {}
        Kind::IcmpError(off) => {
            // An error about a flow that came in through a published port.
            icmp6::translate_error(ctx, off)?;
            return Ok(NEXT);
        }
        Kind::Pass => return Ok(NEXT),
    }
    if let Some(verdict) = nat6::known(ctx, &flow, true) {
        return verdict;
    }
    // SAFETY: a read-only lookup of a plain-data value.
    if unsafe { LOCAL_ADDRS6.get(&flow.daddr) }.is_some() {
        return hairpin(ctx, ep, &flow);
    }
    masquerade(ctx, ep, &flow)
}

/// To a container of the same network: the reply of a hairpin flow (its entry says
/// so) is rewritten back to the published address; anything else is bridged as it is.
#[inline(never)]
pub fn bridged(ctx: &TcContext) -> Result<i32, DropReason> {
    // SAFETY: a plain-data struct of integers; all zeroes is a valid value.
    let mut flow: Flow6 = unsafe { core::mem::zeroed() };
    if let Kind::Flow = nat6::parse_into(ctx, &mut flow, false)? {
        if let Some(verdict) = nat6::known(ctx, &flow, true) {
            return verdict;
        }
    }
    Ok(NEXT)
}

/// A new flow routed out of the uplink from a NAT66 network: masqueraded.
#[inline(never)]
fn masquerade(ctx: &TcContext, ep: &Endpoint6, flow: &Flow6) -> Result<i32, DropReason> {
    // Leaving the host? Decided by the route alone (as for IPv4).
    let cfg = config();
    match nat6::route(ctx, &flow.saddr, &flow.daddr) {
        Some(r) if r.ifindex == cfg.uplink_ifindex && !r.too_big => {}
        // Too big for the uplink: untouched, so that the stack's "packet too big" goes
        // to the container (see nat6::known_stage).
        _ => return Ok(NEXT),
    }
    if ep.flags & EP_F_MASQUERADE == 0 {
        return Ok(NEXT);
    }
    let src = config6().uplink_ip6;
    if src == [0; 16] {
        // No address to masquerade to: the container's private source must not leave.
        return Err(drop_reason::NAT66_NO_ADDRESS);
    }
    let t = Tuple {
        saddr: src,
        sport: flow.sport,
        daddr: flow.daddr,
        dport: flow.dport,
    };
    let ct = conntrack::create(
        ctx,
        flow,
        t,
        (ct_kind::SNAT, ct_kind::SNAT_REPLY),
        0,
        Some((cfg.snat_port_min, cfg.snat_port_max)),
    )?;
    count(event::CT_NEW);
    nat6::apply(ctx, flow, &ct)?;
    policy6::account(&ct);
    Ok(nat6::deliver(ctx, &ct, true))
}

/// A container reaching a published port through a host address.
#[inline(never)]
fn hairpin(ctx: &TcContext, ep: &Endpoint6, flow: &Flow6) -> Result<i32, DropReason> {
    if flow.proto == IPPROTO_ICMPV6 {
        return Ok(NEXT);
    }
    let Some((backend, wildcard)) = policy6::published(flow) else {
        return Ok(NEXT);
    };
    policy6::backend_allowed(&backend)?;
    // To itself: the packet must not arrive with its own address as source, so the
    // source becomes the gateway (with a fresh port, as masquerade would pick).
    let to_self = backend.ip == flow.saddr;
    let t = Tuple {
        saddr: if to_self { ep.gw } else { flow.saddr },
        sport: flow.sport,
        daddr: backend.ip,
        dport: backend.port,
    };
    let cfg = config();
    let flags = if wildcard { ct_flag::WILDCARD_PORT } else { 0 };
    let alloc = if to_self {
        Some((cfg.snat_port_min, cfg.snat_port_max))
    } else {
        None
    };
    let ct = conntrack::create(
        ctx,
        flow,
        t,
        (ct_kind::DNAT, ct_kind::DNAT_REPLY),
        flags,
        alloc,
    )?;
    count(event::CT_NEW);
    count(event::HAIRPIN);
    nat6::apply(ctx, flow, &ct)?;
    policy6::account(&ct);
    Ok(nat6::deliver(ctx, &ct, true))
}
