//! `uplink_ingress`: TC ingress of the uplink. DNAT for published ports, then delivery
//! straight into the container with bpf_redirect_peer (or back to the stack to route).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT},
    helpers::{bpf_ktime_get_ns, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use netd_common::{ct_kind, stat, CtEntry, PortKey, CONFIG_F_FAST_PATH};

use crate::{
    conntrack,
    maps::{config, LOCAL_ADDRS, PORTS},
    metrics::count,
    nat::{self, Side},
    parse::{self, Flow, Parsed},
};

#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    match try_uplink_ingress(&ctx) {
        Ok(verdict) => verdict,
        // A failed rewrite helper leaves the packet half-written: drop it, counted.
        Err(reason) => {
            count(reason);
            aya_ebpf::bindings::TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn try_uplink_ingress(ctx: &TcContext) -> Result<i32, u32> {
    let flow = match parse::parse(ctx) {
        Parsed::Flow(f) => f,
        Parsed::NotOurs => return Ok(TC_ACT_OK),
        Parsed::Skip(reason) => {
            count(reason);
            return Ok(TC_ACT_OK);
        }
    };

    // A known flow: its entry carries the rewrite.
    if let Some(ct) = conntrack::lookup(&flow) {
        if ct.kind == ct_kind::DNAT {
            return dnat(ctx, &flow, &ct);
        }
        return Ok(TC_ACT_OK);
    }

    // A new flow to a published port? Only packets addressed to the host itself qualify
    // (Docker's `--dst-type LOCAL`); forwarded traffic is not ours.
    // SAFETY: read-only lookups of plain-data values.
    if unsafe { LOCAL_ADDRS.get(&flow.daddr) }.is_none() {
        return Ok(TC_ACT_OK);
    }
    let mut key = PortKey {
        host_ip: flow.daddr,
        host_port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // Exact host-IP entry first, then the wildcard one.
    let backend = match unsafe { PORTS.get(&key) } {
        Some(b) => *b,
        None => {
            key.host_ip = 0;
            match unsafe { PORTS.get(&key) } {
                Some(b) => *b,
                None => return Ok(TC_ACT_OK),
            }
        }
    };

    let now = unsafe { bpf_ktime_get_ns() };
    let fwd = CtEntry {
        nat_addr: backend.ip,
        nat_port: backend.port,
        kind: ct_kind::DNAT,
        tcp_flags: flow.tcp_flags_bits(),
        ifindex: backend.ifindex,
        mac: backend.mac,
        gw_mac: backend.gw_mac,
        last_seen_ns: now,
        packets: 1,
        bytes: flow.len as u64,
    };
    let rev = CtEntry {
        nat_addr: flow.daddr,
        nat_port: flow.dport,
        kind: ct_kind::DNAT_REPLY,
        tcp_flags: 0,
        ifindex: 0,
        mac: [0; 6],
        gw_mac: [0; 6],
        last_seen_ns: now,
        packets: 0,
        bytes: 0,
    };
    // Reply entry first: if the forward one then fails, the flow is still NATed
    // statelessly from the port map on its next packet, and replies are rewritten.
    if conntrack::insert(&conntrack::reply_key(&flow, backend.ip, backend.port), &rev).is_err()
        || conntrack::insert(&conntrack::key_of(&flow), &fwd).is_err()
    {
        count(stat::CT_INSERT_FAILED);
    } else {
        count(stat::CT_NEW);
    }
    dnat(ctx, &flow, &fwd)
}

#[inline(always)]
fn dnat(ctx: &TcContext, flow: &Flow, ct: &CtEntry) -> Result<i32, u32> {
    nat::rewrite(ctx, flow, Side::Dst, ct.nat_addr, ct.nat_port)
        .map_err(|_| stat::DROP_REWRITE_FAILED)?;
    count(stat::DNAT);
    if config().flags & CONFIG_F_FAST_PATH != 0 && ct.ifindex != 0 {
        // Straight into the container's namespace: the host stack, the bridge and the
        // veth's own xmit are skipped. Any failure falls back to the stack, never a drop.
        if nat::set_macs(ctx, &ct.mac, &ct.gw_mac).is_ok() {
            let r = unsafe { bpf_redirect_peer(ct.ifindex, 0) };
            if r == TC_ACT_REDIRECT as i64 {
                count(stat::REDIRECT);
                return Ok(TC_ACT_REDIRECT);
            }
        }
        count(stat::REDIRECT_FAILED);
    }
    Ok(TC_ACT_OK)
}
