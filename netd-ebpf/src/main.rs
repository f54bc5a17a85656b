//! netd's datapath: NAT, conntrack and isolation for containers, attached at TC, XDP
//! and cgroup socket hooks. A module per entry program (`uplink`, `uplink6`, `endpoint`,
//! `ipv6`, `guard`, `overlay`, `sock`, `sock6`) and shared libraries for parsing,
//! checksummed rewrites, conntrack, fragments, policy, tracing and counters.
#![no_std]
#![no_main]

mod conntrack;
mod egress6;
mod endpoint;
mod frag;
mod guard;
mod guard6;
mod icmp;
mod icmp6;
mod ipv6;
mod maps;
mod metrics;
mod nat;
mod nat6;
mod outcome;
mod overlay;
mod parse;
mod parse6;
mod policy;
mod policy6;
mod proto;
mod sock;
mod sock6;
mod trace;
mod uplink;
mod uplink6;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_fib_lookup and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
