//! netd's datapath: NAT, conntrack and (later) isolation for containers, attached at TC.
//! One module per hook point (`uplink`, `endpoint`), shared libraries for parsing,
//! checksummed rewrites, conntrack and counters.
#![no_std]
#![no_main]

mod conntrack;
mod endpoint;
mod guard;
mod icmp;
mod ipv6;
mod maps;
mod metrics;
mod nat;
mod overlay;
mod parse;
mod policy;
mod sock;
mod trace;
mod uplink;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_fib_lookup and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
