//! `endpoint_egress`: TC ingress of a container's host-side veth, i.e. traffic leaving the
//! container. Reverse DNAT for replies of published services, then a FIB lookup and a
//! direct redirect to the egress device.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, TC_ACT_OK, TC_ACT_REDIRECT},
    helpers::{bpf_fib_lookup, bpf_redirect},
    macros::classifier,
    programs::TcContext,
};
use netd_common::{ct_kind, stat, CONFIG_F_FAST_PATH};

use crate::{
    conntrack,
    maps::config,
    metrics::count,
    nat::{self, Side},
    parse::{self, Flow, Parsed},
};

const AF_INET: u8 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;

#[classifier]
pub fn endpoint_egress(ctx: TcContext) -> i32 {
    match try_endpoint_egress(&ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            count(reason);
            aya_ebpf::bindings::TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn try_endpoint_egress(ctx: &TcContext) -> Result<i32, u32> {
    let flow = match parse::parse(ctx) {
        Parsed::Flow(f) => f,
        Parsed::NotOurs => return Ok(TC_ACT_OK),
        Parsed::Skip(reason) => {
            count(reason);
            return Ok(TC_ACT_OK);
        }
    };
    let Some(ct) = conntrack::lookup(&flow) else {
        return Ok(TC_ACT_OK);
    };
    if ct.kind != ct_kind::DNAT_REPLY {
        return Ok(TC_ACT_OK);
    }
    nat::rewrite(ctx, &flow, Side::Src, ct.nat_addr, ct.nat_port)
        .map_err(|_| stat::DROP_REWRITE_FAILED)?;
    count(stat::DNAT_REPLY);
    if config().flags & CONFIG_F_FAST_PATH != 0 {
        if let Some(verdict) = redirect_out(ctx, &flow, ct.nat_addr) {
            return Ok(verdict);
        }
    }
    // The stack routes it; the bridge has accept_local=1 because the rewritten source is
    // one of the host's own addresses.
    Ok(TC_ACT_OK)
}

/// FIB lookup for the rewritten packet and a redirect to the egress device with the
/// resolved MACs. None: let the stack handle it (no route, neighbour unresolved, ...).
#[inline(always)]
fn redirect_out(ctx: &TcContext, flow: &Flow, new_saddr: u32) -> Option<i32> {
    // SAFETY: a zeroed plain-data struct of the kernel's ABI; every field is an integer.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = flow.proto;
    p.sport = flow.sport;
    p.dport = flow.dport;
    p.__bindgen_anon_1.tot_len = (flow.len as u16).wrapping_sub(parse::ETH_HLEN as u16);
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    p.__bindgen_anon_3.ipv4_src = new_saddr;
    p.__bindgen_anon_4.ipv4_dst = flow.daddr;
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret != BPF_FIB_LKUP_RET_SUCCESS {
        count(stat::REDIRECT_FAILED);
        return None;
    }
    if nat::set_macs(ctx, &p.dmac, &p.smac).is_err() {
        return None;
    }
    let r = unsafe { bpf_redirect(p.ifindex, 0) };
    if r == TC_ACT_REDIRECT as i64 {
        count(stat::REDIRECT);
        Some(TC_ACT_REDIRECT)
    } else {
        count(stat::REDIRECT_FAILED);
        None
    }
}
