//! Every map of the datapath. All are pinned by name, so a restarted agent adopts them
//! (with their conntrack state) instead of starting from empty ones.
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::LpmTrie, Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netd_common::{
    drop_reason, event, Addr6, Backend, Backend6, Config, Config6, CtEntry, CtEntry6, CtKey,
    CtKey6, Endpoint, Endpoint6, FragEntry, FragKey, FragKey6, LinkKey, OverlayPeer, PortCounters,
    PortKey, PortKey6, SockRevKey, SockRevKey6, SockRevValue, SockRevValue6, TrustedKey,
    MAX_CONNTRACK, MAX_CONNTRACK_NEW, MAX_ENDPOINTS, MAX_FRAGS, MAX_LINKS, MAX_LOCAL_ADDRS,
    MAX_OVERLAY_PEERS, MAX_PORT_MAPPINGS, MAX_SOURCES,
};

#[map(name = "NETD_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "NETD_PORTS")]
pub static PORTS: HashMap<PortKey, Backend> = HashMap::pinned(MAX_PORT_MAPPINGS, 0);

/// Confirmed flows. Not preallocated: memory follows the flows, not the capacity.
#[map(name = "NETD_CT2")]
pub static CONNTRACK: HashMap<CtKey, CtEntry> =
    HashMap::pinned(MAX_CONNTRACK, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Room to build a new flow's two entries off the BPF stack (per CPU, one slot).
#[map(name = "NETD_CT_SCRATCH")]
pub static CT_SCRATCH: PerCpuArray<[CtEntry; 2]> = PerCpuArray::with_max_entries(1, 0);

/// The keys of a new flow's two entries, built off the stack as well.
#[map(name = "NETD_CT_KEY_SCRATCH")]
pub static CT_KEY_SCRATCH: PerCpuArray<[CtKey; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Flows until their first reply (see conntrack.rs).
#[map(name = "NETD_CT2_NEW")]
pub static CONNTRACK_NEW: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(MAX_CONNTRACK_NEW, 0);

/// The packet's flow as the parser leaves it (`parse::flow_slot`), per family.
#[map(name = "NETD_FLOW_SCRATCH")]
pub static FLOW_SCRATCH: PerCpuArray<crate::parse::Flow> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "NETD_FLOW6_SCRATCH")]
pub static FLOW6_SCRATCH: PerCpuArray<crate::parse6::Flow6> = PerCpuArray::with_max_entries(1, 0);

/// Datagrams in fragments whose first fragment the NAT translated (`frag.rs`).
#[map(name = "NETD_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::pinned(MAX_FRAGS, 0);
#[map(name = "NETD_FRAGS6")]
pub static FRAGS6: LruHashMap<FragKey6, FragEntry> = LruHashMap::pinned(MAX_FRAGS, 0);

/// The host namespace's own IPv4 addresses: a published port on 0.0.0.0 answers on each.
#[map(name = "NETD_LOCAL")]
pub static LOCAL_ADDRS: HashMap<u32, u32> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);

#[map(name = "NETD_ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// `--link` exceptions to icc=false: the linked pair, on the target's exposed ports only.
/// IPv6 endpoints by host-side ifindex, and their addresses (`ipv6.rs`).
#[map(name = "NETD_EP6")]
pub static ENDPOINTS6: HashMap<u32, Endpoint6> = HashMap::pinned(MAX_ENDPOINTS, 0);
#[map(name = "NETD_ADDR6")]
pub static ADDRS6: HashMap<[u8; 16], Addr6> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// The IPv6 side of the NAT, as the IPv4 maps above (`nat6.rs`).
#[map(name = "NETD_CONFIG6")]
pub static CONFIG6: Array<Config6> = Array::pinned(1, 0);
#[map(name = "NETD_PORTS6")]
pub static PORTS6: HashMap<PortKey6, Backend6> = HashMap::pinned(MAX_PORT_MAPPINGS, 0);
#[map(name = "NETD_LOCAL6")]
pub static LOCAL_ADDRS6: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);
/// IPv6 container subnets (prefix length, address) -> network id | SUBNET_F_PROTECTED.
#[map(name = "NETD_SUBNETS6")]
pub static SUBNETS6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(1024, 0);
#[map(name = "NETD_CT6")]
pub static CONNTRACK6: HashMap<CtKey6, CtEntry6> =
    HashMap::pinned(MAX_CONNTRACK, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
#[map(name = "NETD_CT6_NEW")]
pub static CONNTRACK6_NEW: LruHashMap<CtKey6, CtEntry6> = LruHashMap::pinned(MAX_CONNTRACK_NEW, 0);
#[map(name = "NETD_CT6_SCRATCH")]
pub static CT6_SCRATCH: PerCpuArray<[CtEntry6; 2]> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "NETD_CT6_KEY_SCRATCH")]
pub static CT6_KEY_SCRATCH: PerCpuArray<[CtKey6; 2]> = PerCpuArray::with_max_entries(1, 0);
/// Where the IPv6 per-port key is built: the IPv6 hooks' stacks have no 20 bytes left.
#[map(name = "NETD_PORT6_KEY_SCRATCH")]
pub static PORT6_KEY_SCRATCH: PerCpuArray<PortKey6> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "NETD_SOCK_RNAT6")]
pub static SOCK_REVNAT6: LruHashMap<SockRevKey6, SockRevValue6> = LruHashMap::pinned(65536, 0);

#[inline(always)]
pub fn config6() -> Config6 {
    match CONFIG6.get(0) {
        Some(c) => *c,
        None => Config6::default(),
    }
}

/// Containers of overlay networks on other nodes, by address (`overlay.rs`).
#[map(name = "NETD_OVERLAY")]
pub static OVERLAY_PEERS: HashMap<u32, OverlayPeer> = HashMap::pinned(MAX_OVERLAY_PEERS, 0);

#[map(name = "NETD_LINKS")]
pub static LINKS: HashMap<LinkKey, u32> = HashMap::pinned(MAX_LINKS, 0);

/// Per published port: packets and bytes in both directions.
#[map(name = "NETD_PORT_STATS")]
pub static PORT_STATS: PerCpuHashMap<PortKey, PortCounters> =
    PerCpuHashMap::pinned(MAX_PORT_MAPPINGS, 0);
#[map(name = "NETD_PORT_STATS6")]
pub static PORT_STATS6: PerCpuHashMap<PortKey6, PortCounters> =
    PerCpuHashMap::pinned(MAX_PORT_MAPPINGS, 0);

/// UDP sockets of the host that sent to a published port (for recvmsg4).
#[map(name = "NETD_SOCK_RNAT")]
pub static SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue> = LruHashMap::pinned(65536, 0);

/// Container subnets (key: prefix length and network-order address) -> network id.
#[map(name = "NETD_SUBNETS")]
pub static SUBNETS: LpmTrie<u32, u32> = LpmTrie::pinned(1024, 0);

/// Per drop reason: packets dropped (`drop_reason`).
#[map(name = "NETD_DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(drop_reason::COUNT, 0);

/// Per event: how often it happened (`event`).
#[map(name = "NETD_EVENTS")]
pub static EVENTS: PerCpuArray<u64> = PerCpuArray::pinned(event::COUNT, 0);

#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// The datapath trace (`netd_common::trace`), written only while CONFIG_F_TRACE is set.
#[map(name = "NETD_TRACE2")]
pub static TRACE: RingBuf = RingBuf::pinned(netd_common::trace::TRACE_RING_BYTES, 0);

/// Gateway mode `routed`: container ports reachable straight at the container's
/// address from outside (`PortKey`/`PortKey6` with the container's address), per family.
#[map(name = "NETD_DIRECT")]
pub static DIRECT: HashMap<PortKey, u32> = HashMap::pinned(MAX_PORT_MAPPINGS, 0);
#[map(name = "NETD_DIRECT6")]
pub static DIRECT6: HashMap<PortKey6, u32> = HashMap::pinned(MAX_PORT_MAPPINGS, 0);

/// Host interfaces a network's containers may be reached from straight at their
/// addresses (`trusted_host_interfaces`).
#[map(name = "NETD_TRUSTED")]
pub static TRUSTED: HashMap<TrustedKey, u32> = HashMap::pinned(1024, 0);

/// Who may reach a network's published ports (`netd_common::source_key`), per family.
#[map(name = "NETD_SOURCES")]
pub static SOURCES: LpmTrie<[u8; 8], u32> = LpmTrie::pinned(MAX_SOURCES, 0);
#[map(name = "NETD_SOURCES6")]
pub static SOURCES6: LpmTrie<[u8; 20], u32> = LpmTrie::pinned(MAX_SOURCES, 0);
