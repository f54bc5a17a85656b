//! `endpoint_egress`: TC ingress of a container's host-side veth, i.e. traffic leaving a
//! container. Known flows get their entry's rewrite (replies of published services,
//! masqueraded flows, hairpin); new flows to a host address's published port are
//! DNATed (hairpin), new flows leaving through the uplink are masqueraded.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netd_common::{
    ct_kind, drop_reason, drop_reason::DropReason, event, trace::hook, EP_F_MASQUERADE,
    IPPROTO_ICMP,
};

use crate::{
    conntrack::{self, Tuple},
    icmp,
    maps::{config, LOCAL_ADDRS},
    metrics::count,
    nat,
    parse::{self, Parsed, ETH_HLEN},
    policy, trace,
};

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
        // Not IPv4 (IPv6 is off in netd's namespaces; ARP was checked): nothing to do.
        return Ok(TC_ACT_OK);
    };
    let parsed = parse::parse(ctx);
    // Flows netd NATs (published ports, hairpin across networks, masquerade) were
    // allowed when they started: their packets go on.
    if let Parsed::Flow(flow) = &parsed {
        if let Some(ct) = conntrack::lookup(flow) {
            nat::apply(ctx, flow, &ct)?;
            policy::account(flow, &ct);
            return Ok(nat::deliver(ctx, &ct, flow, true));
        }
    }
    // Everything else is checked on every packet, whatever its protocol: there is no
    // conntrack for bridged traffic, so a change of policy applies to established
    // connections at once.
    let daddr: u32 = ctx
        .load(ETH_HLEN + 16)
        .map_err(|_| drop_reason::REWRITE_FAILED)?;
    let to_endpoint = match policy::isolation(&src, daddr) {
        // icc=false: a --link opens the linked pair on the target's exposed ports.
        Err(e) if e.0 == drop_reason::ICC.0 => match &parsed {
            Parsed::Flow(f) if policy::linked(f.saddr, f.daddr, f.sport, f.dport, f.proto) => true,
            _ => return Err(e),
        },
        r => r?,
    };
    let flow = match parsed {
        Parsed::Flow(f) => f,
        Parsed::NotOurs => return Ok(TC_ACT_OK),
        Parsed::IcmpError(off) => return icmp::translate_error(ctx, off),
        Parsed::Skip(e) => {
            count(e);
            return Ok(TC_ACT_OK);
        }
    };
    if to_endpoint {
        // Bridged to another container of the network: nothing to rewrite.
        return Ok(TC_ACT_OK);
    }

    if unsafe { LOCAL_ADDRS.get(&flow.daddr) }.is_some() {
        // Hairpin: a container reaching a published port through a host address.
        if flow.proto == IPPROTO_ICMP {
            return Ok(TC_ACT_OK);
        }
        let Some((backend, wildcard)) = policy::published(&flow) else {
            return Ok(TC_ACT_OK);
        };
        policy::backend_allowed(&backend)?;
        let gw = Some(src.gw_ip);
        let ct = conntrack::track_published(ctx, &flow, backend.ip, backend.port, wildcard, gw)?;
        nat::apply(ctx, &flow, &ct)?;
        policy::account(&flow, &ct);
        return Ok(nat::deliver(ctx, &ct, &flow, true));
    }

    // Leaving the host? Masquerade to the uplink address, as Docker's
    // `-s SUBNET ! -o BRIDGE -j MASQUERADE` does, when the route goes out the uplink.
    if src.flags & EP_F_MASQUERADE == 0 {
        return Ok(TC_ACT_OK);
    }
    let cfg = config();
    // Decided by the route alone: whether the next hop has answered ARP yet is no
    // business of masquerade (delivery resolves it).
    match nat::route(ctx, flow.proto, flow.saddr, flow.daddr) {
        Some(r) if r.ifindex == cfg.uplink_ifindex => {}
        _ => return Ok(TC_ACT_OK),
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
        &flow,
        t,
        (ct_kind::SNAT, ct_kind::SNAT_REPLY),
        0,
        Some(range),
    )?;
    count(event::CT_NEW);
    nat::apply(ctx, &flow, &ct)?;
    policy::account(&flow, &ct);
    Ok(nat::deliver(ctx, &ct, &flow, true))
}
