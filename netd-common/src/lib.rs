//! Types shared by the eBPF programs and the agent: map keys and values, map names and
//! constants. Everything here is `#[repr(C)]` with explicit padding so both sides agree
//! on the layout byte for byte; addresses and ports are in network byte order where the
//! field doc says so, because the datapath compares them with packet bytes directly.
#![no_std]

/// Names of the maps, as the eBPF object declares them and as they are pinned.
pub mod map_names {
    pub const CONFIG: &str = "NETD_CONFIG";
    pub const PORTS: &str = "NETD_PORTS";
    pub const CONNTRACK: &str = "NETD_CT";
    pub const LOCAL_ADDRS: &str = "NETD_LOCAL";
    pub const ENDPOINTS: &str = "NETD_ENDPOINTS";
    pub const STATS: &str = "NETD_STATS";
}

/// Names of the programs in the eBPF object.
pub mod prog_names {
    pub const UPLINK_INGRESS: &str = "uplink_ingress";
    pub const ENDPOINT_EGRESS: &str = "endpoint_egress";
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const MAX_PORT_MAPPINGS: u32 = 65536;
pub const MAX_CONNTRACK: u32 = 262_144;
pub const MAX_LOCAL_ADDRS: u32 = 256;
pub const MAX_ENDPOINTS: u32 = 65536;

/// Runtime configuration of the datapath, one entry in the `NETD_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// ifindex of the uplink (the interface of the default route).
    pub uplink_ifindex: u32,
    /// Primary IPv4 address of the uplink, network byte order.
    pub uplink_ip: u32,
    /// Bit set of `CONFIG_F_*`.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

/// Deliver with bpf_redirect_* instead of handing the packet back to the stack.
pub const CONFIG_F_FAST_PATH: u32 = 1;

/// Key of the port map: (protocol, host IP or 0 for every address, host port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Host address the port is published on, network byte order; 0 = all host addresses.
    pub host_ip: u32,
    /// Published host port, network byte order.
    pub host_port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<PortKey>() == 8);

/// Where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Container address, network byte order.
    pub ip: u32,
    /// Container port, network byte order.
    pub port: u16,
    pub _pad0: u16,
    /// ifindex of the container's host-side veth (for bpf_redirect_peer).
    pub ifindex: u32,
    /// Network id (index in the agent's store) the container is attached through.
    pub net_id: u32,
    /// Container MAC address.
    pub mac: [u8; 6],
    /// MAC of the network's bridge (the gateway), source MAC of redirected packets.
    pub gw_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<Backend>() == 28);

/// A connection tracking key: the tuple as the packet carries it. Both directions of a
/// flow are inserted, each with the rewrite to apply to packets matching it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address, network byte order.
    pub daddr: u32,
    /// Source port (ICMP: echo id), network byte order.
    pub sport: u16,
    /// Destination port (ICMP: echo id), network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);

/// Kinds of conntrack entry (`CtEntry::kind`).
pub mod ct_kind {
    /// Original direction of a published-port flow: rewrite the destination.
    pub const DNAT: u8 = 1;
    /// Reply direction of a published-port flow: rewrite the source back.
    pub const DNAT_REPLY: u8 = 2;
}

/// TCP state bits (`CtEntry::tcp_flags`): which flags have been seen on the flow.
pub mod ct_tcp {
    pub const SYN: u8 = 1;
    pub const SYN_ACK: u8 = 2;
    pub const ESTABLISHED: u8 = 4;
    pub const FIN: u8 = 8;
    pub const RST: u8 = 16;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// Address to write (destination for DNAT, source for DNAT_REPLY), network byte order.
    pub nat_addr: u32,
    /// Port to write, network byte order.
    pub nat_port: u16,
    /// One of `ct_kind`.
    pub kind: u8,
    /// Bit set of `ct_tcp`, merged from both directions' entries by the agent.
    pub tcp_flags: u8,
    /// Where the rewritten packet goes: the container's host-side veth (DNAT) or 0.
    pub ifindex: u32,
    /// Container MAC (DNAT) for the redirect fast path.
    pub mac: [u8; 6],
    /// Gateway MAC (DNAT) for the redirect fast path.
    pub gw_mac: [u8; 6],
    /// bpf_ktime_get_ns() of the last packet.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<CtEntry>() == 48);

/// An endpoint (a container's interface), keyed by its IPv4 address (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// ifindex of the host-side veth.
    pub ifindex: u32,
    pub net_id: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 16);

/// Indexes of the per-CPU `NETD_STATS` counter array. Drop reasons and events share the
/// array; a drop always increments exactly one reason.
pub mod stat {
    pub const PASS: u32 = 0;
    pub const DNAT: u32 = 1;
    pub const DNAT_REPLY: u32 = 2;
    pub const REDIRECT: u32 = 3;
    pub const REDIRECT_FAILED: u32 = 4;
    pub const CT_NEW: u32 = 5;
    pub const CT_INSERT_FAILED: u32 = 6;
    /// Broken headers: passed untouched, for the stack's own checks to judge.
    pub const MALFORMED_PASSED: u32 = 7;
    /// IP fragments: passed untouched (ports are only in the first one).
    pub const FRAGMENT_PASSED: u32 = 8;
    /// A rewrite helper failed half-way: the packet is dropped rather than sent half-NATed.
    pub const DROP_REWRITE_FAILED: u32 = 9;
    pub const COUNT: u32 = 16;

    /// Human names, indexed like the counters.
    pub const NAMES: [&str; 10] = [
        "pass",
        "dnat",
        "dnat_reply",
        "redirect",
        "redirect_failed",
        "ct_new",
        "ct_insert_failed",
        "malformed_passed",
        "fragment_passed",
        "drop_rewrite_failed",
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is #[repr(C)], Copy, made only of integers and byte arrays, and
    // its padding is an explicit field, so any byte pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::Endpoint {}
}
