//! The IPv6 side of the datapath's maps. Addresses are 16 bytes as on the wire; ports are
//! network byte order, as in the IPv4 types. The conntrack scheme is the IPv4 one (two
//! entries a flow, a map of new flows and a map of answered ones), with wider tuples.
use bytemuck::{Pod, Zeroable};

/// An IPv6 endpoint (a container's interface on a network with IPv6), keyed by the
/// ifindex of its host-side veth: what it may send as, and how it leaves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint6 {
    /// Its global address.
    pub addr: [u8; 16],
    /// The network's IPv6 gateway (the bridge): the source of a hairpin to itself.
    pub gw: [u8; 16],
    pub net_id: u32,
    /// Bit set of `EP_F_*`. EP_F_MASQUERADE here means NAT66 (gateway mode `nat`);
    /// without it the network is routed.
    pub flags: u32,
    pub mac: [u8; 6],
    /// The bridge's MAC.
    pub gw_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<Endpoint6>() == 52);

/// An IPv6 container address, keyed by the address: whose network it is on and how a
/// packet is delivered to it (bpf_redirect_peer into the host-side veth `ifindex`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Addr6 {
    pub net_id: u32,
    pub ifindex: u32,
    /// The endpoint's `EP_F_*`.
    pub flags: u32,
    pub mac: [u8; 6],
    pub gw_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<Addr6>() == 24);

/// The IPv6 part of the runtime configuration (one entry in `NETD_CONFIG6`); the rest
/// (uplink ifindex, flags, masquerade port range, netns cookie) is `Config`'s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Config6 {
    /// The uplink's global IPv6 address: the NAT66 source. All zero: none, and IPv6
    /// from containers of NAT66 networks is not masqueraded (it stays inside).
    pub uplink_ip6: [u8; 16],
    pub _reserved: [u32; 2],
}
const _: () = assert!(core::mem::size_of::<Config6>() == 24);

/// Key of the IPv6 port map: (protocol, host address or :: for every one, host port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PortKey6 {
    pub host_ip: [u8; 16],
    pub host_port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<PortKey6>() == 20);

/// Where an IPv6 published port leads: the container's IPv6 address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend6 {
    pub ip: [u8; 16],
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<Backend6>() == 20);

/// An IPv6 connection tracking key and entry: the IPv4 ones with 16-byte addresses.
pub type CtKey6 = crate::CtKeyOf<[u8; 16]>;
const _: () = assert!(core::mem::size_of::<CtKey6>() == 40);
pub type CtEntry6 = crate::CtEntryOf<[u8; 16]>;
const _: () = assert!(core::mem::size_of::<CtEntry6>() == 80);

/// A UDP socket of the host that sent to an IPv6 published port, and the backend it was
/// sent to (recvmsg6 turns replies back into the published address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevKey6 {
    pub cookie: u64,
    pub ip: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<SockRevKey6>() == 32);

/// The published IPv6 address and port a socket used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRevValue6 {
    pub ip: [u8; 16],
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockRevValue6>() == 20);

pub const IPPROTO_ICMPV6: u8 = 58;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: as for the IPv4 types: #[repr(C)], integers and byte arrays only, explicit
    // padding, checked by bytemuck::Pod.
    unsafe impl aya::Pod for super::Endpoint6 {}
    unsafe impl aya::Pod for super::Addr6 {}
    unsafe impl aya::Pod for super::Config6 {}
    unsafe impl aya::Pod for super::PortKey6 {}
    unsafe impl aya::Pod for super::Backend6 {}
    unsafe impl aya::Pod for super::CtKey6 {}
    unsafe impl aya::Pod for super::CtEntry6 {}
    unsafe impl aya::Pod for super::SockRevKey6 {}
    unsafe impl aya::Pod for super::SockRevValue6 {}
}
