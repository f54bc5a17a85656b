//! IP fragments (`netd_common::frag`), for both families. A packet's fragment state
//! travels as one integer (cilium's fraginfo): the fragment id in the low 32 bits, the
//! fragment key's protocol in bits 32..40, `FRAGMENT` for any fragment and `NO_L4` for
//! one that is not the first (its upper-layer header is in another fragment). 0 is a
//! whole packet.
//!
//! The first fragment of a datagram the NAT translates records the datagram's ports
//! (`note`, from `apply`); a later fragment finds them (`ports`), becomes a flow with
//! those ports, and gets its flow's address rewrite. A later fragment whose first
//! fragment was not seen is the caller's to judge: from outside it goes to the stack
//! (which reassembles the host's own datagrams); from a container on its way out it is
//! dropped (`drop_frag_unknown`), since nothing could translate it. Linux sends a
//! datagram's fragments in order, so that is rare; the kernel's NAT, which reassembles
//! first, would wait for the head instead.
use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use netd_common::{event, FragEntry, FragKeyOf, FRAG_TIMEOUT_NS};

use crate::{family::Family, metrics::count, parse::FlowOf};

pub const FRAGMENT: u64 = 1 << 40;
pub const NO_L4: u64 = 1 << 41;

/// The fraginfo of a fragment (see the module doc).
#[inline(always)]
pub fn info(id: u32, proto: u8, first: bool) -> u64 {
    let mut f = id as u64 | (proto as u64) << 32 | FRAGMENT;
    if !first {
        f |= NO_L4;
    }
    f
}

/// Whether a packet with this fraginfo carries its upper-layer header.
#[inline(always)]
pub fn has_l4(frag: u64) -> bool {
    frag & NO_L4 == 0
}

#[inline(always)]
fn key<A: Family>(saddr: A, daddr: A, frag: u64) -> FragKeyOf<A> {
    FragKeyOf {
        saddr,
        daddr,
        id: frag as u32,
        proto: (frag >> 32) as u8,
        _pad: [0; 3],
    }
}

/// What the first fragment of the datagram a later fragment belongs to recorded, if it
/// was seen (and not too long ago): its ports and protocol, packed by `pack`, or 0.
///
/// A subprogram returning one integer: inlined, the parser's result was built from
/// registers this path leaves undefined, which the verifier refuses to read.
#[inline(never)]
pub fn first_of<A: Family>(saddr: &A, daddr: &A, frag: u64) -> u64 {
    // SAFETY: a read-only lookup of a plain-data value.
    let Some(e) = (unsafe { A::frags().get(&key(*saddr, *daddr, frag)) }) else {
        return 0;
    };
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(e.seen_ns) > FRAG_TIMEOUT_NS {
        return 0;
    }
    pack(e)
}

const FOUND: u64 = 1 << 40;

/// A record's ports (bits 0..32, as on the wire) and protocol (32..40), with FOUND set.
#[inline(always)]
fn pack(e: &FragEntry) -> u64 {
    e.sport as u64 | (e.dport as u64) << 16 | (e.proto as u64) << 32 | FOUND
}

/// (sport, dport, proto) of a `first_of` answer other than 0.
#[inline(always)]
pub fn unpack(v: u64) -> Option<(u16, u16, u8)> {
    (v & FOUND != 0).then_some((v as u16, (v >> 16) as u16, (v >> 32) as u8))
}

/// Records the ports of the first fragment `flow`, which is being translated. A
/// subprogram of its own (the callers' frames are full); the key and entry live in its
/// frame. A failed insert only costs the datagram's later fragments.
#[inline(never)]
pub fn note<A: Family>(flow: &FlowOf<A>) {
    let k = key(flow.saddr, flow.daddr, flow.frag);
    let e = FragEntry {
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        _pad: [0; 3],
        // SAFETY: a helper call without arguments.
        seen_ns: unsafe { bpf_ktime_get_ns() },
    };
    if A::frags().insert(&k, &e, BPF_ANY as u64).is_ok() {
        count(event::FRAGMENT_FIRST);
    }
}
