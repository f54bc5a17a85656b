//! What conntrack's agent side needs to know of a family's key and entry types, so one
//! copy of the listing, flush and GC logic serves IPv4 (`CtKey`) and IPv6 (`CtKey6`).
//! The two families' entries mean the same; only the address width differs.
use std::{
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use netd_common::{CtEntry, CtEntry6, CtKey, CtKey6, IPPROTO_ICMP, IPPROTO_ICMPV6};

use crate::model::IpProto;

/// The family-independent part of an entry: what timeouts and listings read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub kind: u8,
    pub tcp_flags: u8,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// A conntrack entry type.
pub trait CtEntryOf: aya::Pod + Default + Send + 'static {
    fn stamp(&self) -> Stamp;
    /// The tuple packets are rewritten to: (source, destination).
    fn rewrite(&self) -> (SocketAddr, SocketAddr);
}

/// A conntrack key type, with its entry type.
pub trait CtKeyOf: aya::Pod + Default + Eq + Hash + Send + 'static {
    type Entry: CtEntryOf;
    /// The key of the other direction of the flow `(self, e)` belongs to: the entry's
    /// rewritten tuple, reversed.
    fn peer(&self, e: &Self::Entry) -> Self;
    /// The IP protocol number as the packet carries it.
    fn proto(&self) -> u8;
    /// The tuple as packets carry it: (source, destination).
    fn ends(&self) -> (SocketAddr, SocketAddr);
    /// The protocol number `p` has in this family (ICMP is 58 over IPv6).
    fn proto_number(p: IpProto) -> u8;

    /// The protocol of this key (this family's ICMP is `Icmp`).
    fn ip_proto(&self) -> IpProto {
        if self.proto() == Self::proto_number(IpProto::Icmp) {
            IpProto::Icmp
        } else {
            super::super::maps::ipproto_of(self.proto())
        }
    }
}

fn v4(addr: u32, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(u32::from_be(addr))),
        u16::from_be(port),
    )
}

fn v6(addr: [u8; 16], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(addr)), u16::from_be(port))
}

/// The two families' types have the same fields but for the address width: one body
/// serves both, with `$addr` turning a field's address and port into a `SocketAddr`.
macro_rules! family {
    ($key:ty, $entry:ty, $addr:ident, $icmp:expr) => {
        impl CtEntryOf for $entry {
            fn stamp(&self) -> Stamp {
                Stamp {
                    kind: self.kind,
                    tcp_flags: self.tcp_flags,
                    last_seen_ns: self.last_seen_ns,
                    packets: self.packets,
                    bytes: self.bytes,
                }
            }
            fn rewrite(&self) -> (SocketAddr, SocketAddr) {
                ($addr(self.saddr, self.sport), $addr(self.daddr, self.dport))
            }
        }

        impl CtKeyOf for $key {
            type Entry = $entry;
            fn peer(&self, e: &$entry) -> $key {
                Self {
                    saddr: e.daddr,
                    daddr: e.saddr,
                    sport: e.dport,
                    dport: e.sport,
                    proto: self.proto,
                    _pad: [0; 3],
                }
            }
            fn proto(&self) -> u8 {
                self.proto
            }
            fn ends(&self) -> (SocketAddr, SocketAddr) {
                ($addr(self.saddr, self.sport), $addr(self.daddr, self.dport))
            }
            fn proto_number(p: IpProto) -> u8 {
                match p {
                    IpProto::Icmp => $icmp,
                    p => super::super::maps::ipproto(p),
                }
            }
        }
    };
}

family!(CtKey, CtEntry, v4, IPPROTO_ICMP);
family!(CtKey6, CtEntry6, v6, IPPROTO_ICMPV6);
