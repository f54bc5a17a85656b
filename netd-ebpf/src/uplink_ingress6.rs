//! `uplink_ingress6`: IPv6 at TC ingress of the uplink, first in the tcx chain (ahead
//! of `uplink_ingress`, which leaves IPv6 alone). The guard's IPv6 checks, then as for
//! IPv4: packets of known flows get their entry's rewrite (DNAT66 of published ports,
//! replies of NAT66 flows) and go straight into their container; new flows to a
//! published port on a host address are DNATed and tracked, the client's source kept.
//! Everything else goes on untouched (TCX_NEXT).
use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use netd_common::{
    drop_reason, drop_reason::DropReason, trace::hook, CONFIG_F_GUARD_IN_TC, EP_F_INTERNAL,
};

use crate::{
    conntrack, frag, icmp,
    maps::{config, ADDRS6, LOCAL_ADDRS6},
    metrics::count_passed,
    nat6,
    parse::{self, Kind},
    parse6::Flow6,
    policy,
    proto::has_ports,
    trace,
};

/// Hand the packet to the next program, or the stack if none.
const NEXT: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn uplink_ingress6(ctx: TcContext) -> i32 {
    // The single exit: every drop counted with its reason, every verdict traced.
    let result = try_uplink_ingress6(&ctx);
    trace::tc_exit(&ctx, hook::UPLINK_INGRESS6, result)
}

#[inline(always)]
fn try_uplink_ingress6(ctx: &TcContext) -> Result<i32, DropReason> {
    let guard = config().flags & CONFIG_F_GUARD_IN_TC != 0;
    let Some(flow) = parse::flow_slot::<[u8; 16]>() else {
        return Ok(NEXT);
    };
    match nat6::parse_into(ctx, flow, guard)? {
        Kind::Flow => {}
        Kind::IcmpError(off) => {
            icmp::translate_error6(ctx, off)?;
            return Ok(NEXT);
        }
        Kind::Pass(reason) => {
            count_passed(reason);
            return Ok(NEXT);
        }
    }
    if let Some(verdict) = nat6::known(ctx, flow, false) {
        return verdict;
    }
    publish(ctx, flow)
}

/// A new flow to a published port: only packets addressed to the host itself qualify.
#[inline(never)]
fn publish(ctx: &TcContext, flow: &Flow6) -> Result<i32, DropReason> {
    if !frag::has_l4(flow.frag) {
        return Ok(NEXT);
    }
    // SAFETY: read-only lookup of a plain-data value.
    if !has_ports(flow.proto) || unsafe { LOCAL_ADDRS6.get(&flow.daddr) }.is_none() {
        return direct(ctx, flow);
    }
    let Some((backend, wildcard)) = policy::published6(flow) else {
        return Ok(NEXT);
    };
    policy::backend_allowed6(&backend, Some(&flow.saddr))?;
    let ct = conntrack::track_published(ctx, flow, backend.ip, backend.port, wildcard, None)?;
    nat6::apply(ctx, flow, ct)?;
    conntrack::account(flow, ct);
    Ok(nat6::deliver(ctx, ct, false))
}

/// A new flow straight to a container's own address, which the guard let in: tracked
/// without a rewrite and delivered (see uplink_ingress.rs).
#[inline(never)]
fn direct(ctx: &TcContext, flow: &Flow6) -> Result<i32, DropReason> {
    // SAFETY: read-only lookup of a plain-data value.
    let Some(a) = (unsafe { ADDRS6.get(&flow.daddr) }) else {
        return Ok(NEXT);
    };
    if a.flags & EP_F_INTERNAL != 0 {
        return Err(drop_reason::INTERNAL);
    }
    let ct = conntrack::track_direct(ctx, flow)?;
    conntrack::account(flow, ct);
    Ok(nat6::deliver(ctx, ct, false))
}
