//! `uplink_ingress`: TC ingress of the uplink. Packets of known flows get their entry's
//! rewrite (DNAT of published ports, the way back of masqueraded flows); new flows to a
//! published port get DNATed and tracked, new flows straight to a container's address
//! (which the guard let in) tracked as they are. Delivery goes straight into the
//! container with bpf_redirect_peer.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netd_common::{
    drop_reason, drop_reason::DropReason, trace::hook, CONFIG_F_GUARD_IN_TC, EP_F_INTERNAL,
};

use crate::{
    conntrack, frag, icmp,
    maps::{config, ENDPOINTS, LOCAL_ADDRS},
    metrics::count_passed,
    nat,
    parse::{self, Flow, Kind},
    policy,
    proto::has_ports,
    trace,
};

#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    // The single exit: every drop counted with its reason, every verdict traced.
    let result = try_uplink_ingress(&ctx);
    trace::tc_exit(&ctx, hook::UPLINK_INGRESS, result)
}

#[inline(always)]
fn try_uplink_ingress(ctx: &TcContext) -> Result<i32, DropReason> {
    let guard = config().flags & CONFIG_F_GUARD_IN_TC != 0;
    let Some(flow) = parse::flow_slot::<u32>() else {
        return Ok(TC_ACT_OK);
    };
    match parse::parse_stage(ctx, flow, guard).kind()? {
        Kind::Flow => {}
        Kind::IcmpError(off) => {
            icmp::translate_error(ctx, off)?;
            return Ok(TC_ACT_OK);
        }
        Kind::Pass(reason) => {
            // Not ARP or IPv6, the host's own fragments (or ones out of order), broken
            // headers: the stack judges or reassembles them.
            count_passed(reason);
            return Ok(TC_ACT_OK);
        }
    }
    if let Some(verdict) = nat::known(ctx, flow, false).get() {
        return verdict;
    }

    publish(ctx, flow)
}

/// A new flow to a published port? Only packets addressed to the host itself qualify
/// (Docker's `--dst-type LOCAL`); forwarded traffic is not ours. A subprogram of its
/// own: the new flow's temporaries stay off the entry point's frame.
#[inline(never)]
fn publish(ctx: &TcContext, flow: &Flow) -> Result<i32, DropReason> {
    if !frag::has_l4(flow.frag) {
        return Ok(TC_ACT_OK);
    }
    if !has_ports(flow.proto) {
        return direct(ctx, flow);
    }
    // SAFETY: read-only lookup of a plain-data value.
    if unsafe { LOCAL_ADDRS.get(&flow.daddr) }.is_none() {
        return direct(ctx, flow);
    }
    let Some((backend, wildcard)) = policy::published(flow) else {
        return Ok(TC_ACT_OK);
    };
    policy::backend_allowed(&backend, Some(flow.saddr))?;
    let ct = conntrack::track_published(ctx, flow, backend.ip, backend.port, wildcard, None)?;
    nat::apply(ctx, flow, ct)?;
    conntrack::account(flow, ct);
    Ok(nat::deliver(ctx, ct, flow, false))
}

/// A new flow straight to a container's own address, which the guard let in (gateway
/// modes `routed` and `nat-unprotected`, a trusted interface): tracked without a
/// rewrite, so that the container's replies go back as they are, and delivered.
#[inline(never)]
fn direct(ctx: &TcContext, flow: &Flow) -> Result<i32, DropReason> {
    // SAFETY: read-only lookup of a plain-data value.
    let Some(ep) = (unsafe { ENDPOINTS.get(&flow.daddr) }) else {
        return Ok(TC_ACT_OK);
    };
    if ep.flags & EP_F_INTERNAL != 0 {
        return Err(drop_reason::INTERNAL);
    }
    let ct = conntrack::track_direct(ctx, flow)?;
    conntrack::account(flow, ct);
    Ok(nat::deliver(ctx, ct, flow, false))
}
