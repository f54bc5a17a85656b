//! The uplink guard: drops what must never come in from outside. That covers packets
//! addressed straight to a NAT-protected or internal container subnet (containers are
//! reached through published ports only), packets claiming a container or loopback
//! source, and packets for loopback or for ports published only on it. Everything else
//! passes untouched.
//!
//! `uplink_guard` runs it in XDP on physical uplinks, before the kernel allocates an
//! skb. On virtual uplinks (veth), native XDP would switch the device to its NAPI path
//! and lose GRO batching (a measured 4x loss of throughput), so uplink_ingress runs the
//! same decision in TC instead (CONFIG_F_GUARD_IN_TC).
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use netd_common::trace::{hook, verdict as trace_verdict};

use crate::{guard, metrics::count_drop, parse, parse6, trace};

// `frags`: the program copes with multi-buffer packets (it reads headers only, which
// are in the first buffer). Without it, attaching to a veth makes the kernel turn off
// GSO on the peer.
#[xdp(frags)]
pub fn uplink_guard(ctx: XdpContext) -> u32 {
    // A broken IPv4 header passes: the stack's ip_rcv drops it before routing it
    // anywhere.
    let verdict = match parse::ipv4(&ctx) {
        Ok(Some(ip)) => guard::check(&ctx, &ip),
        Ok(None) => match parse6::ipv6(&ctx) {
            Ok(Some(ip)) => guard::check6(&ctx, &ip),
            _ => Ok(()),
        },
        Err(()) => Ok(()),
    };
    // The single exit: every drop counted with its reason.
    match verdict {
        Ok(()) => {
            if trace::on() {
                trace::xdp_packet(
                    ctx.ctx,
                    trace::meta(hook::UPLINK_GUARD, trace_verdict::PASS, 0),
                );
            }
            XDP_PASS
        }
        Err(reason) => {
            count_drop(reason);
            if trace::on() {
                let m = trace::meta(hook::UPLINK_GUARD, trace_verdict::DROP, reason.0 as u16);
                trace::xdp_packet(ctx.ctx, m);
            }
            XDP_DROP
        }
    }
}
