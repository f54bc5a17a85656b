//! NAT66 for IPv6 leaving a container (`endpoint_egress6`, once its identity and
//! isolation checks passed; `endpoint.rs` is the IPv4 twin): known flows get their
//! entry's rewrite (replies of published ports, masqueraded flows, hairpin); a new flow
//! to a published port on a host address is DNATed (hairpin); a new flow routed out of
//! the uplink from a network in gateway mode `nat` is masqueraded to the uplink's IPv6
//! address. Routed networks' flows go out as they are: the outside routes their subnet.
use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use netd_common::{
    ct_kind, drop_reason, drop_reason::DropReason, event, Endpoint6, EP_F_MASQUERADE, EP_F_TRACK,
};

use crate::{
    conntrack::{self, Tuple},
    family::Family,
    frag, icmp,
    maps::{config, config6, ENDPOINTS6, LOCAL_ADDRS6},
    metrics::{count, count_passed},
    nat, nat6,
    parse::{self, Kind},
    parse6::{Flow6, IP6_DADDR, IP6_SADDR},
    policy,
    proto::has_ports,
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
    let Some(flow) = parse::flow_slot::<[u8; 16]>() else {
        return Ok(NEXT);
    };
    match nat6::parse_into(ctx, flow, false)? {
        Kind::Flow => {}
        Kind::IcmpError(off) => {
            // An error about a flow that came in through a published port: translated,
            // it speaks with the published address.
            if icmp::translate_error6(ctx, off)? && !from_container(ctx, ep) {
                return Ok(NEXT);
            }
            return untranslated(ctx, ep, drop_reason::UNTRANSLATABLE);
        }
        Kind::Pass(reason) => return untranslated(ctx, ep, reason),
    }
    if let Some(verdict) = nat6::known(ctx, flow, true) {
        return verdict;
    }
    // SAFETY: a read-only lookup of a plain-data value.
    if unsafe { LOCAL_ADDRS6.get(&flow.daddr) }.is_some() {
        return hairpin(ctx, ep, flow);
    }
    masquerade(ctx, ep, flow)
}

/// Whether the packet still carries the endpoint's own address as its source.
#[inline(always)]
fn from_container(ctx: &TcContext, ep: &Endpoint6) -> bool {
    ctx.load::<[u8; 16]>(IP6_SADDR).is_ok_and(|s| s == ep.addr)
}

/// A packet NAT66 does not translate: it must not leave a NAT66 network through the
/// uplink (dropped for `reason`); anything else goes on as it is (a routed network's,
/// or one routed elsewhere).
#[inline(never)]
fn untranslated(ctx: &TcContext, ep: &Endpoint6, reason: DropReason) -> Result<i32, DropReason> {
    if ep.flags & EP_F_MASQUERADE != 0 {
        let (Ok(saddr), Ok(daddr)) = (
            ctx.load::<[u8; 16]>(IP6_SADDR),
            ctx.load::<[u8; 16]>(IP6_DADDR),
        ) else {
            return Err(drop_reason::MALFORMED);
        };
        if nat6::route(ctx, &saddr, &daddr).is_some_and(|r| r.ifindex == config().uplink_ifindex) {
            return Err(reason);
        }
    }
    count_passed(reason);
    Ok(NEXT)
}

/// To a container of the same network: the reply of a hairpin flow (its entry says
/// so) is rewritten back to the published address; anything else is bridged as it is.
#[inline(never)]
pub fn bridged(ctx: &TcContext) -> Result<i32, DropReason> {
    let Some(flow) = parse::flow_slot::<[u8; 16]>() else {
        return Ok(NEXT);
    };
    if let Kind::Flow = nat6::parse_into(ctx, flow, false)? {
        if let Some(verdict) = nat6::known(ctx, flow, true) {
            return verdict;
        }
    }
    Ok(NEXT)
}

/// To a container of another network (Docker 28: "in routed mode containers in other
/// networks can use direct routing to access ports"): a tracked flow's packet goes on
/// (the reply of one such), a new flow to a container port its `routed` network
/// publishes is tracked and goes on, anything else is the isolation between networks.
#[inline(never)]
pub fn across(ctx: &TcContext) -> Result<i32, DropReason> {
    let Some(flow) = parse::flow_slot::<[u8; 16]>() else {
        return Err(drop_reason::OTHER_NETWORK);
    };
    if let Kind::Flow = nat6::parse_into(ctx, flow, false)? {
        if let Some(verdict) = nat6::known(ctx, flow, true) {
            return verdict;
        }
        return open_across(ctx, flow);
    }
    Err(drop_reason::OTHER_NETWORK)
}

/// The new-flow half of `across`, in a frame of its own: beside the lookup's, the new
/// flow's temporaries would not fit the 512 bytes of stack a call chain has.
#[inline(never)]
fn open_across(ctx: &TcContext, flow: &Flow6) -> Result<i32, DropReason> {
    let open = has_ports(flow.proto)
        && frag::has_l4(flow.frag)
        && <[u8; 16]>::direct_port(&flow.daddr, flow.dport, flow.proto);
    if !open {
        return Err(drop_reason::OTHER_NETWORK);
    }
    let ct = conntrack::track_direct(ctx, flow)?;
    conntrack::account(flow, ct);
    Ok(nat6::deliver(ctx, ct, true))
}

/// A new flow routed out of the uplink from a NAT66 network: masqueraded.
#[inline(never)]
fn masquerade(ctx: &TcContext, ep: &Endpoint6, flow: &Flow6) -> Result<i32, DropReason> {
    // Leaving the host? Decided by the route alone (as for IPv4).
    let cfg = config();
    match nat6::route(ctx, &flow.saddr, &flow.daddr) {
        Some(r) if r.ifindex == cfg.uplink_ifindex => {}
        _ => return Ok(NEXT),
    }
    if ep.flags & EP_F_MASQUERADE == 0 {
        if ep.flags & EP_F_TRACK != 0 && frag::has_l4(flow.frag) {
            // Gateway mode `routed`: the flow keeps the container's address and is
            // tracked, so that its replies get past the guard's port filter.
            let ct = conntrack::track_direct(ctx, flow)?;
            conntrack::account(flow, ct);
            return Ok(nat6::deliver(ctx, ct, true));
        }
        return Ok(NEXT);
    }
    if nat::too_big_for_uplink(ctx) {
        // Untouched, so that the stack's "packet too big" goes to the container (see
        // nat6::known_stage). By the uplink's own MTU, which is what the stack's
        // forwarding checks, not by a path MTU the FIB may know: the stack would
        // forward, untranslated, what fits the device.
        count(event::PMTU_PASSED);
        return Ok(NEXT);
    }
    if !frag::has_l4(flow.frag) {
        // A later fragment of a flow that expired meanwhile: nothing to rewrite its
        // ports by.
        return Err(drop_reason::FRAG_UNKNOWN);
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
    nat6::apply(ctx, flow, ct)?;
    conntrack::account(flow, ct);
    Ok(nat6::deliver(ctx, ct, true))
}

/// A container reaching a published port through a host address.
#[inline(never)]
fn hairpin(ctx: &TcContext, ep: &Endpoint6, flow: &Flow6) -> Result<i32, DropReason> {
    if !has_ports(flow.proto) {
        return Ok(NEXT);
    }
    let Some((backend, wildcard)) = policy::published6(flow) else {
        return Ok(NEXT);
    };
    policy::backend_allowed6(&backend, None)?;
    let gw = Some(ep.gw);
    let ct = conntrack::track_published(ctx, flow, backend.ip, backend.port, wildcard, gw)?;
    nat6::apply(ctx, flow, ct)?;
    conntrack::account(flow, ct);
    Ok(nat6::deliver(ctx, ct, true))
}
