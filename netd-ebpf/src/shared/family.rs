//! What differs between the address families, for the code that serves both
//! (conntrack, fragments, the guard's direct-access decision, per-port counters):
//! `Family` for `u32` (IPv4) and `[u8; 16]` (IPv6), with their maps, their ICMP, how to
//! reach a container address, whether a host socket would take a reply, and their
//! lookups of direct ports and published-port sources.
use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_NOEXIST},
    maps::{lpm_trie::Key, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use netd_common::{
    source_key, CtEntryOf, CtKeyOf, FragEntry, FragKeyOf, PortCounters, PortKey, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, SOURCE_ALLOW,
};

use crate::{
    maps::{
        ADDRS6, CONNTRACK, CONNTRACK6, CONNTRACK6_NEW, CONNTRACK_NEW, CT6_KEY_SCRATCH, CT6_SCRATCH,
        CT_KEY_SCRATCH, CT_SCRATCH, DIRECT, DIRECT6, ENDPOINTS, FLOW6_SCRATCH, FLOW_SCRATCH, FRAGS,
        FRAGS6, PORT6_KEY_SCRATCH, PORT_STATS, PORT_STATS6, SOURCES, SOURCES6,
    },
    parse::FlowOf,
};

/// What conntrack needs to know of an address family: its maps, its ICMP, how to
/// reach a container address, and whether a host socket would take a reply.
pub trait Family: Copy + PartialEq + Default + 'static {
    /// The protocol whose echo id stands for both ports.
    const ICMP: u8;
    fn confirmed() -> &'static HashMap<CtKeyOf<Self>, CtEntryOf<Self>>;
    fn new_flows() -> &'static LruHashMap<CtKeyOf<Self>, CtEntryOf<Self>>;
    /// Datagrams in fragments (`frag`).
    fn frags() -> &'static LruHashMap<FragKeyOf<Self>, FragEntry>;
    /// This CPU's slot for the packet's flow (`parse::flow_slot`).
    fn flow_scratch() -> &'static PerCpuArray<FlowOf<Self>>;
    /// Per-CPU slots to build a new flow's two entries and two keys in.
    fn scratch() -> &'static PerCpuArray<[CtEntryOf<Self>; 2]>;
    fn key_scratch() -> &'static PerCpuArray<[CtKeyOf<Self>; 2]>;
    /// How to reach `addr` after the rewrite: into its container (host-side veth, its
    /// MAC, the bridge's MAC), or (0) routed.
    fn delivery_to(addr: Self) -> (u32, [u8; 6], [u8; 6]);
    /// Whether a socket of the host namespace would receive the reply of `flow` once
    /// its source became `new_saddr` with its own port: then that port is not free.
    fn host_socket_claims(ctx: &TcContext, flow: &FlowOf<Self>, new_saddr: Self) -> bool;
    /// Accounts `len` bytes to the published port `ip`:`port` (the unspecified address
    /// instead of `ip` for a wildcard one).
    fn count_port(ip: &Self, port: u16, proto: u8, wildcard: bool, len: u32);
    /// Whether container address `ip` publishes `port` (`proto`) straight at itself
    /// (gateway mode `routed`).
    fn direct_port(ip: &Self, port: u16, proto: u8) -> bool;
    /// Whether `saddr` may reach the published ports of network `net_id` (no entry for
    /// the network: anyone may).
    fn source_allowed(net_id: u32, saddr: &Self) -> bool;
}

impl Family for u32 {
    const ICMP: u8 = IPPROTO_ICMP;
    #[inline(always)]
    fn direct_port(ip: &u32, port: u16, proto: u8) -> bool {
        let key = PortKey {
            host_ip: *ip,
            host_port: port,
            proto,
            _pad: 0,
        };
        DIRECT.get_ptr(&key).is_some()
    }
    #[inline(always)]
    fn source_allowed(net_id: u32, saddr: &u32) -> bool {
        let key = Key::new(64, source_key::<8>(net_id, &saddr.to_ne_bytes()));
        SOURCES.get(key).is_none_or(|v| *v == SOURCE_ALLOW)
    }
    #[inline(always)]
    fn count_port(ip: &u32, host_port: u16, proto: u8, wildcard: bool, len: u32) {
        let key = PortKey {
            host_ip: if wildcard { 0 } else { *ip },
            host_port,
            proto,
            _pad: 0,
        };
        bump_port(&PORT_STATS, &key, len);
    }
    #[inline(always)]
    fn confirmed() -> &'static HashMap<CtKeyOf<u32>, CtEntryOf<u32>> {
        &CONNTRACK
    }
    #[inline(always)]
    fn new_flows() -> &'static LruHashMap<CtKeyOf<u32>, CtEntryOf<u32>> {
        &CONNTRACK_NEW
    }
    #[inline(always)]
    fn frags() -> &'static LruHashMap<FragKeyOf<u32>, FragEntry> {
        &FRAGS
    }
    #[inline(always)]
    fn flow_scratch() -> &'static PerCpuArray<FlowOf<u32>> {
        &FLOW_SCRATCH
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<[CtEntryOf<u32>; 2]> {
        &CT_SCRATCH
    }
    #[inline(always)]
    fn key_scratch() -> &'static PerCpuArray<[CtKeyOf<u32>; 2]> {
        &CT_KEY_SCRATCH
    }
    #[inline(always)]
    fn delivery_to(addr: u32) -> (u32, [u8; 6], [u8; 6]) {
        // SAFETY: a read-only lookup of a plain-data value.
        match unsafe { ENDPOINTS.get(&addr) } {
            Some(ep) => (ep.ifindex, ep.mac, ep.gw_mac),
            None => (0, [0; 6], [0; 6]),
        }
    }
    #[inline(always)]
    fn host_socket_claims(ctx: &TcContext, flow: &FlowOf<u32>, new_saddr: u32) -> bool {
        // SAFETY: a zeroed plain-data union of the kernel's ABI.
        let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
        // The reply as it would arrive: from the remote, to the host address and port.
        tuple.__bindgen_anon_1.ipv4.saddr = flow.daddr;
        tuple.__bindgen_anon_1.ipv4.daddr = new_saddr;
        tuple.__bindgen_anon_1.ipv4.sport = flow.dport;
        tuple.__bindgen_anon_1.ipv4.dport = flow.sport;
        // sizeof(tuple.ipv4)
        sk_lookup(ctx, flow.proto, &mut tuple, 12)
    }
}

impl Family for [u8; 16] {
    const ICMP: u8 = IPPROTO_ICMPV6;
    // Subprograms of their own, their keys off the IPv6 hooks' full stacks (as
    // count_port).
    #[inline(never)]
    fn direct_port(ip: &[u8; 16], port: u16, proto: u8) -> bool {
        let Some(key) = PORT6_KEY_SCRATCH.get_ptr_mut(0) else {
            return false;
        };
        // SAFETY: this CPU's slot, used by nothing else until the lookup returns.
        let key = unsafe {
            (*key).host_ip = *ip;
            (*key).host_port = port;
            (*key).proto = proto;
            (*key)._pad = 0;
            &*key
        };
        DIRECT6.get_ptr(key).is_some()
    }
    #[inline(never)]
    fn source_allowed(net_id: u32, saddr: &[u8; 16]) -> bool {
        let key = Key::new(160, source_key::<20>(net_id, saddr));
        SOURCES6.get(key).is_none_or(|v| *v == SOURCE_ALLOW)
    }
    // A subprogram of its own: inlined, its copies of the address would go on the
    // IPv6 hooks' stacks, which have no room left.
    #[inline(never)]
    fn count_port(ip: &[u8; 16], host_port: u16, proto: u8, wildcard: bool, len: u32) {
        let Some(key) = PORT6_KEY_SCRATCH.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: this CPU's slot, used by nothing else until the lookup returns.
        let key = unsafe {
            (*key).host_ip = if wildcard { [0; 16] } else { *ip };
            (*key).host_port = host_port;
            (*key).proto = proto;
            (*key)._pad = 0;
            &*key
        };
        bump_port(&PORT_STATS6, key, len);
    }
    #[inline(always)]
    fn confirmed() -> &'static HashMap<CtKeyOf<[u8; 16]>, CtEntryOf<[u8; 16]>> {
        &CONNTRACK6
    }
    #[inline(always)]
    fn new_flows() -> &'static LruHashMap<CtKeyOf<[u8; 16]>, CtEntryOf<[u8; 16]>> {
        &CONNTRACK6_NEW
    }
    #[inline(always)]
    fn frags() -> &'static LruHashMap<FragKeyOf<[u8; 16]>, FragEntry> {
        &FRAGS6
    }
    #[inline(always)]
    fn flow_scratch() -> &'static PerCpuArray<FlowOf<[u8; 16]>> {
        &FLOW6_SCRATCH
    }
    #[inline(always)]
    fn scratch() -> &'static PerCpuArray<[CtEntryOf<[u8; 16]>; 2]> {
        &CT6_SCRATCH
    }
    #[inline(always)]
    fn key_scratch() -> &'static PerCpuArray<[CtKeyOf<[u8; 16]>; 2]> {
        &CT6_KEY_SCRATCH
    }
    #[inline(always)]
    fn delivery_to(addr: [u8; 16]) -> (u32, [u8; 6], [u8; 6]) {
        // SAFETY: a read-only lookup of a plain-data value.
        match unsafe { ADDRS6.get(&addr) } {
            Some(a) => (a.ifindex, a.mac, a.gw_mac),
            None => (0, [0; 6], [0; 6]),
        }
    }
    #[inline(always)]
    fn host_socket_claims(ctx: &TcContext, flow: &FlowOf<[u8; 16]>, new_saddr: [u8; 16]) -> bool {
        // SAFETY: a zeroed plain-data union of the kernel's ABI.
        let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
        // SAFETY: the kernel's ABI union; the IPv6 member is the one written and passed.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv6;
            t.saddr = core::mem::transmute::<[u8; 16], [u32; 4]>(flow.daddr);
            t.daddr = core::mem::transmute::<[u8; 16], [u32; 4]>(new_saddr);
            t.sport = flow.dport;
            t.dport = flow.sport;
        }
        // sizeof(tuple.ipv6)
        sk_lookup(ctx, flow.proto, &mut tuple, 36)
    }
}

/// Whether a socket of the current namespace matches `tuple` (of `size` bytes). Only
/// TCP and UDP sockets can be looked up; other protocols' never claim a port.
#[inline(always)]
fn sk_lookup(ctx: &TcContext, proto: u8, tuple: &mut bpf_sock_tuple, size: u32) -> bool {
    use aya_ebpf::{
        bindings::BPF_F_CURRENT_NETNS,
        helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return false;
    }
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: the tuple lives on the caller's stack for the call; a returned socket is
    // released.
    unsafe {
        let sk = if proto == IPPROTO_TCP {
            bpf_skc_lookup_tcp(ctx.skb.skb as *mut _, tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.skb.skb as *mut _, tuple, size, netns, 0)
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk as *mut _);
    }
    true
}

/// Adds a packet of `len` bytes to this CPU's counters of `key`.
#[inline(always)]
fn bump_port<K>(stats: &PerCpuHashMap<K, PortCounters>, key: &K, len: u32) {
    if let Some(c) = stats.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
        return;
    }
    let first = PortCounters {
        packets: 1,
        bytes: len as u64,
    };
    let _ = stats.insert(key, &first, BPF_NOEXIST as u64);
}
