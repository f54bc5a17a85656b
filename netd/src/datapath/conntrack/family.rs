//! What conntrack's agent side needs to know of a family's key and entry types, so one
//! copy of the listing, flush and GC logic serves IPv4 (`CtKey`) and IPv6 (`CtKey6`).
//! The two families' entries mean the same; only the address width differs.
use std::{
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use netd_common::{CtEntry, CtEntry6, CtKey, CtKey6, IPPROTO_ICMPV6};

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

    /// The protocol of this key, if netd tracks it.
    fn ip_proto(&self) -> Option<IpProto> {
        IpProto::ALL
            .into_iter()
            .find(|p| Self::proto_number(*p) == self.proto())
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

impl CtEntryOf for CtEntry {
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
        (v4(self.saddr, self.sport), v4(self.daddr, self.dport))
    }
}

impl CtEntryOf for CtEntry6 {
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
        (v6(self.saddr, self.sport), v6(self.daddr, self.dport))
    }
}

impl CtKeyOf for CtKey {
    type Entry = CtEntry;
    fn peer(&self, e: &CtEntry) -> CtKey {
        CtKey {
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
        (v4(self.saddr, self.sport), v4(self.daddr, self.dport))
    }
    fn proto_number(p: IpProto) -> u8 {
        super::super::maps::ipproto(p)
    }
}

impl CtKeyOf for CtKey6 {
    type Entry = CtEntry6;
    fn peer(&self, e: &CtEntry6) -> CtKey6 {
        CtKey6 {
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
        (v6(self.saddr, self.sport), v6(self.daddr, self.dport))
    }
    fn proto_number(p: IpProto) -> u8 {
        match p {
            IpProto::Icmp => IPPROTO_ICMPV6,
            p => super::super::maps::ipproto(p),
        }
    }
}
