//! netd's datapath: NAT, conntrack and isolation for containers, attached at TC, XDP
//! and cgroup socket hooks. The files beside this one are the entry programs, one per
//! hook and named after it (`overlay` holds the overlay device's pair, `sock4` and
//! `sock6` the socket-address hooks of each family); `shared/` is the library they share:
//! parsing, the constants, checksummed rewrites, conntrack, fragments, policy, the
//! guard, tracing and counters.
#![no_std]
#![no_main]

mod endpoint_egress;
mod endpoint_egress6;
mod overlay;
mod shared;
mod sock4;
mod sock6;
mod uplink_guard;
mod uplink_ingress;
mod uplink_ingress6;

// The library's modules by their own names (`crate::parse`, `crate::nat`, ...).
use shared::{
    conntrack, consts, direct, egress6, family, frag, guard, icmp, maps, metrics, nat, nat6,
    outcome, parse, parse6, policy, proto, sockaddr, trace,
};

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_fib_lookup and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
