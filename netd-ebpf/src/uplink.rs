//! `uplink_ingress`: TC ingress of the uplink. Packets of known flows get their entry's
//! rewrite (DNAT of published ports, the way back of masqueraded flows); new flows to a
//! published port get DNATed and tracked. Delivery goes straight into the container
//! with bpf_redirect_peer.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netd_common::{
    drop_reason::DropReason, event, trace::hook, CONFIG_F_GUARD_IN_TC, IPPROTO_ICMP,
};

use crate::{
    conntrack, guard, icmp,
    maps::{config, LOCAL_ADDRS},
    metrics::count,
    nat,
    parse::{self, Parsed},
    policy, trace,
};

#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    // The single exit: every drop counted with its reason, every verdict traced.
    let result = try_uplink_ingress(&ctx);
    trace::tc_exit(&ctx, hook::UPLINK_INGRESS, result)
}

#[inline(always)]
fn try_uplink_ingress(ctx: &TcContext) -> Result<i32, DropReason> {
    let ip = match parse::ipv4(ctx) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Ok(TC_ACT_OK),
        Err(()) => {
            count(event::MALFORMED_PASSED);
            return Ok(TC_ACT_OK);
        }
    };
    if config().flags & CONFIG_F_GUARD_IN_TC != 0 {
        guard::check(ctx, &ip)?;
    }
    let flow = match parse::l4(ctx, &ip) {
        Parsed::Flow(f) => f,
        Parsed::NotOurs => return Ok(TC_ACT_OK),
        Parsed::IcmpError(off) => return icmp::translate_error(ctx, off),
        Parsed::Skip(e) => {
            count(e);
            return Ok(TC_ACT_OK);
        }
    };

    if let Some(ct) = conntrack::lookup(&flow) {
        nat::apply(ctx, &flow, &ct)?;
        policy::account(&flow, &ct);
        return Ok(nat::deliver(ctx, &ct, &flow, false));
    }

    // A new flow to a published port? Only packets addressed to the host itself qualify
    // (Docker's `--dst-type LOCAL`); forwarded traffic is not ours.
    if flow.proto == IPPROTO_ICMP {
        return Ok(TC_ACT_OK);
    }
    // SAFETY: read-only lookup of a plain-data value.
    if unsafe { LOCAL_ADDRS.get(&flow.daddr) }.is_none() {
        return Ok(TC_ACT_OK);
    }
    let Some((backend, wildcard)) = policy::published(&flow) else {
        return Ok(TC_ACT_OK);
    };
    policy::backend_allowed(&backend)?;
    let ct = conntrack::track_published(ctx, &flow, backend.ip, backend.port, wildcard, None)?;
    nat::apply(ctx, &flow, &ct)?;
    policy::account(&flow, &ct);
    Ok(nat::deliver(ctx, &ct, &flow, false))
}
