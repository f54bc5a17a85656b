//! Packets from outside straight to a container's own address, which Docker 28's
//! gateway modes decide: a `nat` network (and an internal or isolated one) takes none,
//! a `routed` one only its published container ports, ICMP and packets of flows
//! conntrack knows (replies to its containers' own flows), a `nat-unprotected` one
//! (no flag in the subnet trie) everything. A network's trusted host interfaces
//! (`trusted_host_interfaces`) reach its containers whatever the mode. The guard of
//! both families asks `judge`.
use netd_common::{
    drop_reason, drop_reason::DropReason, TrustedKey, SUBNET_F_PROTECTED, SUBNET_NET_ID,
};

use crate::{conntrack::tracked, family::Family, maps::TRUSTED, proto::has_ports};

/// A packet from outside on device `ifindex` to a container subnet whose trie value is
/// `subnet` (protected or filtered): None to let it in, else the drop reason. `ports`
/// are the packet's (source, destination), zeros where it has none; `l4` says whether its
/// upper-layer header is there (a later fragment has none: without its first
/// fragment, which was judged, it reassembles into nothing).
#[inline(always)]
pub fn judge<A: Family>(
    ifindex: u32,
    subnet: u32,
    (saddr, daddr): (&A, &A),
    proto: u8,
    (sport, dport): (u16, u16),
    l4: bool,
) -> Option<DropReason> {
    let net_id = subnet & SUBNET_NET_ID;
    let key = TrustedKey { ifindex, net_id };
    if TRUSTED.get_ptr(&key).is_some() {
        return None;
    }
    if subnet & SUBNET_F_PROTECTED != 0 {
        return Some(drop_reason::GUARD_TO_CONTAINER);
    }
    // Docker's routed mode accepts ICMP ("ICMP" rule), so errors and echo get through.
    if proto == A::ICMP || !l4 {
        return None;
    }
    if has_ports(proto) && A::direct_port(daddr, dport, proto) {
        if A::source_allowed(net_id, saddr) {
            return None;
        }
        return Some(drop_reason::SOURCE_DENIED);
    }
    if tracked(saddr, daddr, sport, dport, proto) {
        return None;
    }
    Some(drop_reason::GUARD_UNPUBLISHED)
}

/// The (source, destination) ports, each in network byte order as the maps keep them,
/// of the first four bytes of an upper-layer header (zeros if they could not be read).
#[inline(always)]
pub fn ports_of(word: Result<u32, ()>) -> (u16, u16) {
    let b = word.unwrap_or(0).to_ne_bytes();
    (
        u16::from_ne_bytes([b[0], b[1]]),
        u16::from_ne_bytes([b[2], b[3]]),
    )
}
