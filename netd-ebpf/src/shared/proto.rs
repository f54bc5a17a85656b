//! What the datapath needs to know of an IP protocol, read from a table rather than
//! decided by comparisons: each comparison with a constant narrows the protocol to that
//! constant on its branch, and the verifier then walked everything that follows once
//! per protocol (past its million-instruction limit). A value read from memory is one
//! it knows nothing about, so the paths stay merged.
use netd_common::{
    has_ports as ports_of, IPPROTO_DCCP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
};

/// Bit set of `PORTS`; the rest of each byte is the least length of the upper-layer
/// header netd reads, in 4-byte units (bits 1..4).
const PORTS: u8 = 1;

const fn info(p: u8) -> u8 {
    let min: u8 = match p {
        IPPROTO_TCP => 20,
        IPPROTO_SCTP | IPPROTO_DCCP => 12,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => 8,
        _ if ports_of(p) => 8,
        _ => 0,
    };
    (min / 4) << 1 | if ports_of(p) { PORTS } else { 0 }
}

const fn table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut p = 0;
    while p < 256 {
        t[p] = info(p as u8);
        p += 1;
    }
    t
}

static INFO: [u8; 256] = table();

#[inline(always)]
fn get(p: u8) -> u8 {
    // SAFETY: an in-bounds read (any u8 indexes 256 entries) of a static; volatile, so
    // the compiler does not turn it back into comparisons.
    unsafe { core::ptr::read_volatile(INFO.as_ptr().add(p as usize)) }
}

/// Whether packets of `p` carry ports the NAT tracks (`netd_common::has_ports`).
#[inline(always)]
pub fn has_ports(p: u8) -> bool {
    get(p) & PORTS != 0
}

/// The least of the upper-layer header of `p` netd reads (and, for SCTP, its checksum).
#[inline(always)]
pub fn l4_min(p: u8) -> usize {
    ((get(p) >> 1) as usize) * 4
}
