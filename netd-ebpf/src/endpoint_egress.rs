//! `endpoint_egress`: TC ingress of a container's host-side veth, i.e. traffic leaving a
//! container. Known flows get their entry's rewrite (replies of published services,
//! masqueraded flows, hairpin); new flows to a host address's published port are
//! DNATed (hairpin), new flows leaving through the uplink are masqueraded, whatever
//! their protocol.
//!
//! No private source leaves: on a masquerading network, a packet routed out of the
//! uplink is either translated or dropped with its reason (`untranslated`), never
//! handed to the stack as it came. The one exception keeps path-MTU discovery working:
//! a packet with DF too big for the uplink goes to the stack as it is, which drops it
//! and answers the container (`nat::keep_for_pmtu`).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netd_common::{
    ct_kind, drop_reason, drop_reason::DropReason, event, trace::hook, EP_F_MASQUERADE, EP_F_TRACK,
};

use crate::{
    conntrack::{self, Tuple},
    family::Family,
    frag, icmp,
    maps::{config, LOCAL_ADDRS},
    metrics::{count, count_passed},
    nat,
    parse::{self, Flow, Kind, ETH_HLEN},
    policy,
    proto::has_ports,
    trace,
};

use crate::consts::{IP_DST_OFF, IP_SRC_OFF};

#[classifier]
pub fn endpoint_egress(ctx: TcContext) -> i32 {
    // The single exit: every drop counted with its reason, every verdict traced.
    let result = try_endpoint_egress(&ctx);
    trace::tc_exit(&ctx, hook::ENDPOINT_EGRESS, result)
}

#[inline(always)]
fn try_endpoint_egress(ctx: &TcContext) -> Result<i32, DropReason> {
    // Anti-spoofing first: whatever a container sends must carry its own identity, so
    // no container can borrow another's to get around isolation.
    let Some(src) = policy::sender(ctx)? else {
        // Not IPv4 (ARP was checked, IPv6 and other frames judged by `sender`).
        return Ok(TC_ACT_OK);
    };
    let Some(flow) = parse::flow_slot::<u32>() else {
        return Ok(TC_ACT_OK);
    };
    let kind = parse::parse_stage(ctx, flow, false).kind()?;
    // Flows netd NATs (published ports, hairpin across networks, masquerade) were
    // allowed when they started: their packets go on.
    if let Kind::Flow = kind {
        if let Some(verdict) = nat::known(ctx, flow, true).get() {
            return verdict;
        }
    }
    // Everything else is checked on every packet, whatever its protocol: there is no
    // conntrack for bridged traffic, so a change of policy applies to established
    // connections at once.
    let daddr: u32 = ctx.load(IP_DST_OFF).map_err(|_| drop_reason::MALFORMED)?;
    let to_endpoint = match policy::isolation(&src, daddr) {
        // icc=false: a --link opens the linked pair on the target's exposed ports.
        Err(e) if e.0 == drop_reason::ICC.0 => match kind {
            Kind::Flow
                if policy::linked(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto) =>
            {
                true
            }
            _ => return Err(e),
        },
        // Another network's container: a port its `routed` network publishes.
        Err(e) if e.0 == drop_reason::OTHER_NETWORK.0 => match kind {
            Kind::Flow => return across(ctx, flow),
            _ => return Err(e),
        },
        r => r?,
    };
    match kind {
        Kind::Flow => {}
        Kind::IcmpError(off) => {
            let saddr: u32 = ctx.load(IP_SRC_OFF).map_err(|_| drop_reason::MALFORMED)?;
            // Translated, an error about a published port's flow speaks with the
            // published address; one that still carries the container's is not done.
            if icmp::translate_error(ctx, off)? && ctx.load::<u32>(IP_SRC_OFF) != Ok(saddr) {
                return Ok(TC_ACT_OK);
            }
            return untranslated(ctx, src.flags, to_endpoint, drop_reason::UNTRANSLATABLE);
        }
        Kind::Pass(reason) => return untranslated(ctx, src.flags, to_endpoint, reason),
    }
    if to_endpoint {
        // Bridged to another container of the network: nothing to rewrite.
        return Ok(TC_ACT_OK);
    }
    // SAFETY: a read-only lookup of a plain-data value.
    if unsafe { LOCAL_ADDRS.get(&flow.daddr) }.is_some() {
        return hairpin(ctx, src.gw_ip, flow);
    }
    if src.flags & EP_F_TRACK != 0 {
        return track_routed(ctx, flow);
    }
    masquerade(ctx, src.flags, flow)
}

/// A packet netd does not translate (counted as passed, or dropped for `reason`): it
/// must not leave a masquerading network (`flags`) through the uplink. To another
/// container of the network, to the host, out of a routed network or along another
/// route, it goes on as it is.
#[inline(never)]
fn untranslated(
    ctx: &TcContext,
    flags: u32,
    to_endpoint: bool,
    reason: DropReason,
) -> Result<i32, DropReason> {
    if !to_endpoint && flags & EP_F_MASQUERADE != 0 {
        let (Ok(saddr), Ok(daddr), Ok(proto)) = (
            ctx.load::<u32>(IP_SRC_OFF),
            ctx.load::<u32>(IP_DST_OFF),
            ctx.load::<u8>(ETH_HLEN + 9),
        ) else {
            return Err(drop_reason::MALFORMED);
        };
        if nat::route(ctx, proto, saddr, daddr)
            .is_some_and(|r| r.ifindex == config().uplink_ifindex)
        {
            return Err(reason);
        }
    }
    count_passed(reason);
    Ok(TC_ACT_OK)
}

/// A container reaching a published port through a host address (`gw_ip`: its
/// gateway, the source of a hairpin to itself). Anything else to a host address is
/// the host's.
#[inline(never)]
fn hairpin(ctx: &TcContext, gw_ip: u32, flow: &Flow) -> Result<i32, DropReason> {
    if !has_ports(flow.proto) || !frag::has_l4(flow.frag) {
        return Ok(TC_ACT_OK);
    }
    let Some((backend, wildcard)) = policy::published(flow) else {
        return Ok(TC_ACT_OK);
    };
    policy::backend_allowed(&backend, None)?;
    let gw = Some(gw_ip);
    let ct = conntrack::track_published(ctx, flow, backend.ip, backend.port, wildcard, gw)?;
    nat::apply(ctx, flow, ct)?;
    conntrack::account(flow, ct);
    Ok(nat::deliver(ctx, ct, flow, true))
}

/// A new flow leaving the host: masqueraded to the uplink's address, as Docker's
/// `-s SUBNET ! -o BRIDGE -j MASQUERADE` does, when its network masquerades (`flags`)
/// and its route goes out of the uplink; any IP protocol (those without ports by
/// address alone).
#[inline(never)]
fn masquerade(ctx: &TcContext, flags: u32, flow: &Flow) -> Result<i32, DropReason> {
    if flags & EP_F_MASQUERADE == 0 {
        return Ok(TC_ACT_OK);
    }
    // Decided by the route alone: whether the next hop has answered ARP yet is no
    // business of masquerade (delivery resolves it).
    if !nat::routes_out(ctx, flow.proto, flow.saddr, flow.daddr) {
        return Ok(TC_ACT_OK);
    }
    let cfg = config();
    if nat::keep_for_pmtu(ctx) {
        count(event::PMTU_PASSED);
        return Ok(TC_ACT_OK);
    }
    if !frag::has_l4(flow.frag) {
        // A later fragment of a flow that expired meanwhile: its ports cannot change.
        return Err(drop_reason::FRAG_UNKNOWN);
    }
    let t = Tuple {
        saddr: cfg.uplink_ip,
        sport: flow.sport,
        daddr: flow.daddr,
        dport: flow.dport,
    };
    let range = (cfg.snat_port_min, cfg.snat_port_max);
    let ct = conntrack::create(
        ctx,
        flow,
        t,
        (ct_kind::SNAT, ct_kind::SNAT_REPLY),
        0,
        Some(range),
    )?;
    count(event::CT_NEW);
    nat::apply(ctx, flow, ct)?;
    conntrack::account(flow, ct);
    Ok(nat::deliver(ctx, ct, flow, true))
}

/// A new flow leaving a `routed` network: it keeps the container's address, and is
/// tracked so that its replies get past the guard's port filter.
#[inline(never)]
fn track_routed(ctx: &TcContext, flow: &Flow) -> Result<i32, DropReason> {
    if !frag::has_l4(flow.frag) || !nat::routes_out(ctx, flow.proto, flow.saddr, flow.daddr) {
        // A later fragment: nothing to track it by, and nothing to rewrite.
        return Ok(TC_ACT_OK);
    }
    let ct = conntrack::track_direct(ctx, flow)?;
    conntrack::account(flow, ct);
    Ok(nat::deliver(ctx, ct, flow, true))
}

/// A new flow to a container of another network (replies of tracked ones were found
/// above): Docker 28 lets containers of other networks reach the ports a `routed`
/// network publishes straight at its containers. Tracked, so that the reply passes the
/// isolation the other way; anything else stays apart.
#[inline(never)]
fn across(ctx: &TcContext, flow: &Flow) -> Result<i32, DropReason> {
    let open = has_ports(flow.proto)
        && frag::has_l4(flow.frag)
        && u32::direct_port(&flow.daddr, flow.dport, flow.proto);
    if !open {
        return Err(drop_reason::OTHER_NETWORK);
    }
    let ct = conntrack::track_direct(ctx, flow)?;
    conntrack::account(flow, ct);
    Ok(nat::deliver(ctx, ct, flow, true))
}
