//! IP fragments. Only a datagram's first fragment carries its ports, and netd does not
//! reassemble: when the NAT translates a first fragment, it records the datagram's
//! ports under (source, destination, protocol, fragment id) as the fragment carries
//! them, and the fragments that follow find their flow through that record (cilium's
//! fragment map). Records live in an LRU map and count as stale after
//! `FRAG_TIMEOUT_NS`, the kernel's own reassembly timeout.
use bytemuck::{Pod, Zeroable};

/// A datagram in fragments, with addresses of type `A` as in `CtKeyOf`: `FragKey` for
/// IPv4, `FragKey6` for IPv6. Pod by hand for the two instances, as `CtKeyOf`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKeyOf<A> {
    /// Source and destination as the fragments carry them, network byte order.
    pub saddr: A,
    pub daddr: A,
    /// The fragment id: IPv4's 16 bits (in the low half) or IPv6's 32, as on the wire.
    pub id: u32,
    /// IPv4: the protocol; IPv6: the fragment header's next header, which every
    /// fragment of a datagram carries alike.
    pub proto: u8,
    pub _pad: [u8; 3],
}
pub type FragKey = FragKeyOf<u32>;
const _: () = assert!(core::mem::size_of::<FragKey>() == 16);
pub type FragKey6 = FragKeyOf<[u8; 16]>;
const _: () = assert!(core::mem::size_of::<FragKey6>() == 40);

/// What the first fragment of a datagram told: its ports and upper-layer protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragEntry {
    /// Ports as the first fragment carried them (ICMP: the query id in both), network
    /// byte order.
    pub sport: u16,
    pub dport: u16,
    /// The upper-layer protocol (IPv6: after any extension headers).
    pub proto: u8,
    pub _pad: [u8; 3],
    /// bpf_ktime_get_ns() when the first fragment passed.
    pub seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<FragEntry>() == 16);

/// Datagrams in fragments remembered at once, per family (LRU: the oldest go first).
pub const MAX_FRAGS: u32 = 16384;

/// A record older than this is stale: the kernel gives up reassembling after as long
/// (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time: 30 s).
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;

// SAFETY: #[repr(C)], integers and byte arrays only, and for these two address types
// without padding (sizes asserted above), so every byte pattern is a valid value.
unsafe impl Zeroable for FragKeyOf<u32> {}
unsafe impl Pod for FragKeyOf<u32> {}
unsafe impl Zeroable for FragKeyOf<[u8; 16]> {}
unsafe impl Pod for FragKeyOf<[u8; 16]> {}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: as above: #[repr(C)], integers and byte arrays only, no implicit padding.
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragKey6 {}
    unsafe impl aya::Pod for super::FragEntry {}
}
