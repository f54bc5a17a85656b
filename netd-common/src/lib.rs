//! Types shared by the eBPF programs and the agent: map keys and values, map names and
//! constants. Everything here is `#[repr(C)]` with explicit padding so both sides agree
//! on the layout byte for byte; addresses and ports are in network byte order where the
//! field doc says so, because the datapath compares them with packet bytes directly.
#![no_std]

#[cfg(test)]
extern crate std;

#[cfg(feature = "user")]
pub mod batch;
mod counters;
pub mod crc32c;
mod frag;
pub mod layout;
pub mod trace;
mod v6;
pub use counters::{drop_reason, event};
pub use frag::*;
pub use v6::*;

// Pod on every map key and value: the derive refuses a type with implicit padding (whose
// bytes the kernel would hash and compare, and neither side initialises), so a field
// added without its explicit padding fails to compile rather than to match.
use bytemuck::{Pod, Zeroable};

/// Names of the maps, as the eBPF object declares them and as they are pinned.
pub mod map_names {
    /// The datapath layout the pins beside it have (see `layout`): an array of one
    /// `u32`, made and written by the agent (no program reads it).
    pub const LAYOUT: &str = "NETD_LAYOUT";
    pub const CONFIG: &str = "NETD_CONFIG";
    pub const PORTS: &str = "NETD_PORTS";
    /// Confirmed flows (a reply was seen): a plain hash, so a flood of new flows can
    /// never evict them (the kernel's "assured" conntrack entries). A name of its own,
    /// apart from `CONNTRACK_V1`'s single LRU table of layout 1, so that the agent's
    /// layout migration carries that table's flows here by name.
    pub const CONNTRACK: &str = "NETD_CT2";
    /// Flows not answered yet: an LRU hash, where floods churn without harm.
    pub const CONNTRACK_NEW: &str = "NETD_CT2_NEW";
    /// The single LRU map of netd before version 2, carried over and removed at load.
    pub const CONNTRACK_V1: &str = "NETD_CT";
    pub const LOCAL_ADDRS: &str = "NETD_LOCAL";
    pub const ENDPOINTS: &str = "NETD_ENDPOINTS";
    /// Per-CPU counters of `drop_reason` and of `event` (two arrays: the tables'
    /// indexes overlap). Layout 1 kept both in one array, NETD_STATS, which the layout
    /// migration removes as a map this release no longer has.
    pub const DROPS: &str = "NETD_DROPS";
    pub const EVENTS: &str = "NETD_EVENTS";
    pub const PORT_STATS: &str = "NETD_PORT_STATS";
    pub const PORT_STATS6: &str = "NETD_PORT_STATS6";
    pub const SOCK_REVNAT: &str = "NETD_SOCK_RNAT";
    pub const SUBNETS: &str = "NETD_SUBNETS";
    /// The datapath trace's ring buffer (`trace`): records of both families. The
    /// IPv4-only ring of 0.2.0, `NETD_TRACE`, is removed at start as a map this release
    /// no longer has.
    pub const TRACE: &str = "NETD_TRACE2";
    /// `--link` exceptions to icc=false.
    pub const LINKS: &str = "NETD_LINKS";
    /// Containers of overlay networks on other nodes (`OverlayPeer`).
    pub const OVERLAY_PEERS: &str = "NETD_OVERLAY";
    /// IPv6 endpoints by host-side ifindex (`Endpoint6`) and by address (`Addr6`).
    pub const ENDPOINTS6: &str = "NETD_EP6";
    pub const ADDRS6: &str = "NETD_ADDR6";
    /// The IPv6 side of the NAT (`v6` module): config, published ports, the host's own
    /// addresses, container subnets, the two conntrack maps, and UDP sockets of the
    /// host that sent to a published port.
    pub const CONFIG6: &str = "NETD_CONFIG6";
    pub const PORTS6: &str = "NETD_PORTS6";
    pub const LOCAL_ADDRS6: &str = "NETD_LOCAL6";
    pub const SUBNETS6: &str = "NETD_SUBNETS6";
    pub const CONNTRACK6: &str = "NETD_CT6";
    pub const CONNTRACK6_NEW: &str = "NETD_CT6_NEW";
    pub const SOCK_REVNAT6: &str = "NETD_SOCK_RNAT6";
    /// Datagrams in fragments: the ports of their first fragment (`frag`), per family.
    pub const FRAGS: &str = "NETD_FRAGS";
    pub const FRAGS6: &str = "NETD_FRAGS6";
    /// Container ports reachable straight at the container's address from outside in
    /// gateway mode `routed` (`PortKey`/`PortKey6` with the container's address and
    /// port), per family.
    pub const DIRECT: &str = "NETD_DIRECT";
    pub const DIRECT6: &str = "NETD_DIRECT6";
    /// Trusted host interfaces per network (`TrustedKey`).
    pub const TRUSTED: &str = "NETD_TRUSTED";
    /// Who may reach published ports, per network (`source_key`), per family.
    pub const SOURCES: &str = "NETD_SOURCES";
    pub const SOURCES6: &str = "NETD_SOURCES6";
}

/// Names of the programs in the eBPF object.
pub mod prog_names {
    pub const UPLINK_INGRESS: &str = "uplink_ingress";
    pub const ENDPOINT_EGRESS: &str = "endpoint_egress";
    pub const UPLINK_GUARD: &str = "uplink_guard";
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
    /// Overlay endpoints' first program: ARP for remote containers, tunnel to them.
    pub const OVERLAY_EGRESS: &str = "overlay_egress";
    /// TC ingress of the node's VXLAN device: decapsulated packets to their container.
    pub const OVERLAY_INGRESS: &str = "overlay_ingress";
    /// IPv6 endpoints' first program: IPv6 anti-spoofing, ND and RA guard, isolation.
    pub const ENDPOINT_EGRESS6: &str = "endpoint_egress6";
    /// IPv6 at TC ingress of the uplink, ahead of uplink_ingress (tcx order: first):
    /// DNAT66 of published ports, replies of NAT66 flows, the guard's IPv6 checks.
    pub const UPLINK_INGRESS6: &str = "uplink_ingress6";
    pub const SOCK_CONNECT6: &str = "sock_connect6";
    pub const SOCK_SENDMSG6: &str = "sock_sendmsg6";
    pub const SOCK_RECVMSG6: &str = "sock_recvmsg6";
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_UDPLITE: u8 = 136;

/// Whether packets of `proto` carry a source and a destination port in their first four
/// bytes, which the NAT tracks and rewrites (as the kernel's NAT does for these); other
/// protocols but ICMP are tracked by address alone, with both ports 0.
pub const fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE | IPPROTO_DCCP
    )
}

pub const MAX_PORT_MAPPINGS: u32 = 65536;
/// Entries of each `NETD_SOURCES` trie: networks with a source restriction and their
/// allowed prefixes.
pub const MAX_SOURCES: u32 = 4096;
/// Default capacities of the two conntrack maps (entries, two a flow); the agent sets
/// them at load (`--ct-max`).
pub const MAX_CONNTRACK: u32 = 262_144;
pub const MAX_CONNTRACK_NEW: u32 = 65_536;
pub const MAX_LOCAL_ADDRS: u32 = 256;
pub const MAX_ENDPOINTS: u32 = 65536;
/// `--link` exception entries (two per linked pair and port).
pub const MAX_LINKS: u32 = 16384;
/// Containers on overlay networks, cluster-wide, that live on other nodes.
pub const MAX_OVERLAY_PEERS: u32 = 65536;

/// Runtime configuration of the datapath, one entry in the `NETD_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// ifindex of the uplink (the interface of the default route).
    pub uplink_ifindex: u32,
    /// Primary IPv4 address of the uplink, network byte order: the masquerade source.
    pub uplink_ip: u32,
    /// Bit set of `CONFIG_F_*`.
    pub flags: u32,
    /// Masquerade source ports (and ICMP echo ids) are picked in [min, max], host order.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// Cookie of the host network namespace: the socket programs act only there.
    pub netns_cookie: u64,
}
const _: () = assert!(core::mem::size_of::<Config>() == 24);

/// Deliver with bpf_redirect_* instead of handing the packet back to the stack.
pub const CONFIG_F_FAST_PATH: u32 = 1;
/// Run the uplink guard's checks in uplink_ingress (TC) because no XDP guard is
/// attached (virtual uplinks, where native XDP would cost GRO batching).
pub const CONFIG_F_GUARD_IN_TC: u32 = 2;
/// Write a `trace::TraceRecord` for every IPv4 packet the packet programs decide on.
pub const CONFIG_F_TRACE: u32 = 4;

/// How many source ports masquerade tries (in a row, from a random start) before giving
/// up on a new flow.
pub const SNAT_TRIES: u32 = 32;

/// Key of the link map: a packet from `src` to `dst` passes icc=false when (src, dst,
/// proto, port, dir) is there. `dir` 0: the linking container to the target's exposed
/// `port` (the packet's destination port); 1: the target's replies (its source port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct LinkKey {
    /// Network byte order.
    pub src: u32,
    pub dst: u32,
    /// The target's port, network byte order.
    pub port: u16,
    pub proto: u8,
    pub dir: u8,
}
const _: () = assert!(core::mem::size_of::<LinkKey>() == 12);

/// Key of the port map: (protocol, host IP or 0 for every address, host port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PortKey {
    /// Host address the port is published on, network byte order; 0 = all host addresses.
    pub host_ip: u32,
    /// Published host port, network byte order.
    pub host_port: u16,
    /// IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<PortKey>() == 8);

/// Where a published port leads. How to reach the container is in `NETD_ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// Container address, network byte order.
    pub ip: u32,
    /// Container port, network byte order.
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 8);

/// Packets and bytes through one published port (per CPU), keyed by its `PortKey`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortCounters {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<PortCounters>() == 16);

/// A connection tracking key: the tuple as the packet carries it, with addresses of
/// type `A`: `u32` for IPv4 (`CtKey`), `[u8; 16]` for IPv6 (`CtKey6`). For ICMP echo
/// both ports hold the echo id. Both directions of a flow are inserted.
///
/// Generic so the datapath's conntrack is one piece of code for both families. Pod is
/// implemented by hand for the two instances (bytemuck cannot derive it for a generic
/// type): both are laid out without padding, which the size assertions pin down.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKeyOf<A> {
    /// Source address, network byte order.
    pub saddr: A,
    /// Destination address, network byte order.
    pub daddr: A,
    /// Source port (ICMP: echo id), network byte order.
    pub sport: u16,
    /// Destination port (ICMP: echo id), network byte order.
    pub dport: u16,
    /// The IP protocol. Protocols without ports (`has_ports`, ICMP aside) have both
    /// ports 0: a flow of theirs is (protocol, addresses).
    pub proto: u8,
    pub _pad: [u8; 3],
}
pub type CtKey = CtKeyOf<u32>;
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);

impl<A: Copy> CtKeyOf<A> {
    /// The key of the other direction of a packet carrying this tuple.
    pub const fn reversed(&self) -> CtKeyOf<A> {
        CtKeyOf {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Kinds of conntrack entry (`CtEntry::kind`), for display and accounting; the rewrite
/// itself is always "make the packet carry the entry's tuple".
pub mod ct_kind {
    /// Original direction of a published-port flow (from outside, or hairpin).
    pub const DNAT: u8 = 1;
    /// Reply direction of a published-port flow.
    pub const DNAT_REPLY: u8 = 2;
    /// Original direction of a masqueraded flow.
    pub const SNAT: u8 = 3;
    /// Reply direction of a masqueraded flow.
    pub const SNAT_REPLY: u8 = 4;
    /// A flow straight between a container's own address and the outside (gateway
    /// modes `routed` and `nat-unprotected`, trusted interfaces): nothing is rewritten;
    /// the entries let its packets past the guard and keep its replies from being
    /// masqueraded. DIRECT is the direction the flow started in.
    pub const DIRECT: u8 = 5;
    pub const DIRECT_REPLY: u8 = 6;
}

/// `CtEntry::flags`.
pub mod ct_flag {
    /// The flow came through a port published on every host address (0.0.0.0).
    pub const WILDCARD_PORT: u8 = 1;
}

/// TCP state bits (`CtEntry::tcp_flags`): which flags have been seen in that direction.
pub mod ct_tcp {
    pub const SYN: u8 = 1;
    pub const SYN_ACK: u8 = 2;
    pub const ESTABLISHED: u8 = 4;
    pub const FIN: u8 = 8;
    pub const RST: u8 = 16;
}

/// A conntrack entry: the tuple a matching packet is rewritten to, and where it goes.
/// The other direction's key is this tuple reversed, which is how the agent's garbage
/// collector pairs entries. Addresses of type `A` as in `CtKeyOf`: `CtEntry` for IPv4,
/// `CtEntry6` for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntryOf<A> {
    /// Tuple to write, network byte order (fields equal to the packet's stay untouched).
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    /// One of `ct_kind`.
    pub kind: u8,
    /// Bit set of `ct_tcp` seen in this direction.
    pub tcp_flags: u8,
    /// Bit set of `ct_flag`.
    pub flags: u8,
    pub _pad: u8,
    /// Host-side veth of the container the rewritten packet is for (bpf_redirect_peer);
    /// 0 when it leaves the host (FIB lookup, then redirect to the egress device).
    pub ifindex: u32,
    /// That container's MAC and its gateway's, written before the redirect.
    pub mac: [u8; 6],
    pub gw_mac: [u8; 6],
    /// bpf_ktime_get_ns() of the last packet.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}
pub type CtEntry = CtEntryOf<u32>;
const _: () = assert!(core::mem::size_of::<CtEntry>() == 56);

// SAFETY: #[repr(C)], made only of integers and byte arrays, and for these two address
// types without any padding (the sizes are the sums of the fields, asserted here and in
// `v6`), so every byte pattern is a valid value and no byte is uninitialised.
unsafe impl Zeroable for CtKeyOf<u32> {}
unsafe impl Pod for CtKeyOf<u32> {}
unsafe impl Zeroable for CtKeyOf<[u8; 16]> {}
unsafe impl Pod for CtKeyOf<[u8; 16]> {}
unsafe impl Zeroable for CtEntryOf<u32> {}
unsafe impl Pod for CtEntryOf<u32> {}
unsafe impl Zeroable for CtEntryOf<[u8; 16]> {}
unsafe impl Pod for CtEntryOf<[u8; 16]> {}

/// A UDP socket of the host namespace that sent to a published port, and the backend
/// it was sent to: recvmsg4 turns replies from the backend back into the published
/// address the application used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevKey {
    pub cookie: u64,
    /// Backend address and port, network byte order.
    pub ip: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockRevKey>() == 16);

/// The published address a socket used (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRevValue {
    pub ip: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockRevValue>() == 8);

/// An endpoint (a container's interface), keyed by its IPv4 address (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Endpoint {
    /// ifindex of the host-side veth.
    pub ifindex: u32,
    pub net_id: u32,
    /// The network's gateway address, network byte order (hairpin to itself uses it).
    pub gw_ip: u32,
    /// Bit set of `EP_F_*`.
    pub flags: u32,
    pub mac: [u8; 6],
    /// The bridge's MAC: the source MAC of packets redirected into the container.
    pub gw_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 28);

/// A container of an overlay network on another node, keyed by its IPv4 address
/// (network byte order): where its packets are tunnelled, and as what.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OverlayPeer {
    /// The node's underlay (VTEP) address, network byte order.
    pub vtep: u32,
    /// The network's VXLAN id (cluster-wide).
    pub vni: u32,
    /// This node's number for the network (as `Endpoint::net_id`).
    pub net_id: u32,
    /// ifindex of this node's VXLAN device.
    pub vxlan_ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<OverlayPeer>() == 16);

/// The endpoint's network masquerades traffic to outside its networks.
pub const EP_F_MASQUERADE: u32 = 1;
/// Containers of the endpoint's network may talk to each other (Docker's enable_icc).
pub const EP_F_ICC: u32 = 2;
/// The endpoint's network is --internal: nothing leaves its subnet, nothing gets in.
pub const EP_F_INTERNAL: u32 = 4;

/// The endpoint's network is in gateway mode `routed` (per family): its flows leave
/// untranslated but tracked, so that their replies get past the guard's port filter.
pub const EP_F_TRACK: u32 = 8;

/// `NETD_SUBNETS` value flag: the subnet is NAT-protected (gateway mode `nat`, internal,
/// isolated), so packets from outside addressed straight to it are dropped by
/// uplink_guard, unless they come in on one of the network's trusted host interfaces
/// (`NETD_TRUSTED`). Without a flag (`nat-unprotected`, or no masquerade) the subnet is
/// reachable from outside.
pub const SUBNET_F_PROTECTED: u32 = 1 << 31;
/// `NETD_SUBNETS` value flag: gateway mode `routed`. From outside, only published
/// container ports (`NETD_DIRECT`), ICMP, and packets of flows conntrack knows (replies
/// to the containers' own flows) get in, as Docker's "UNPUBLISHED PORT DROP".
pub const SUBNET_F_FILTERED: u32 = 1 << 30;
/// The bits of a `NETD_SUBNETS` value that are the network's id.
pub const SUBNET_NET_ID: u32 = !(SUBNET_F_PROTECTED | SUBNET_F_FILTERED);

/// Key of `NETD_TRUSTED`: a host interface from which the containers of network
/// `net_id` may be reached straight at their addresses, whatever the gateway mode
/// (Docker's `com.docker.network.bridge.trusted_host_interfaces`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct TrustedKey {
    pub ifindex: u32,
    pub net_id: u32,
}
const _: () = assert!(core::mem::size_of::<TrustedKey>() == 8);

/// `NETD_SOURCES` (LPM trie) key data: a network's id, big-endian, then a source
/// prefix of IPv4 (`N` = 8) or IPv6 (`N` = 20); the trie's prefix length counts the 32
/// bits of the id. A network with a source restriction has an entry for the id alone
/// (prefix length 32) valued `SOURCE_DENY`, and one per allowed prefix valued
/// `SOURCE_ALLOW`: the longest match answers. A network without one has no entry.
pub fn source_key<const N: usize>(net_id: u32, addr: &[u8]) -> [u8; N] {
    let mut k = [0u8; N];
    k[..4].copy_from_slice(&net_id.to_be_bytes());
    let n = addr.len().min(N - 4);
    k[4..4 + n].copy_from_slice(&addr[..n]);
    k
}
/// `NETD_SOURCES` values.
pub const SOURCE_DENY: u32 = 0;
pub const SOURCE_ALLOW: u32 = 1;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is #[repr(C)], Copy, made only of integers and byte arrays, and
    // its padding is an explicit field, so any byte pattern is a valid value: each
    // derives bytemuck::Pod, which checks exactly that at compile time.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::OverlayPeer {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::LinkKey {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::PortCounters {}
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::SockRevValue {}
    unsafe impl aya::Pod for super::TrustedKey {}
}
