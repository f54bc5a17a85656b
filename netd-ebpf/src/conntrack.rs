//! netd's own connection tracking: an LRU hash keyed by the packet tuple, one entry per
//! direction, each holding the tuple to rewrite matching packets to and where they go.
use aya_ebpf::programs::TcContext;
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use netd_common::{
    drop_reason, drop_reason::DropReason, event, CtEntry, CtKey, PortCounters, PortKey,
    IPPROTO_ICMP, SNAT_TRIES,
};

use crate::{
    maps::{CONNTRACK, ENDPOINTS, PORT_STATS},
    metrics::count,
    parse::Flow,
};

#[inline(always)]
pub fn key_of(flow: &Flow) -> CtKey {
    CtKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// errno of an insert whose key exists.
const EEXIST: i32 = 17;

/// Looks up the entry for `flow` and accounts the packet to it.
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<CtEntry> {
    let entry = CONNTRACK.get_ptr_mut(&key_of(flow))?;
    // SAFETY: a pointer into the map value returned by the kernel; racing updates from
    // another CPU only make counters approximate, which is acceptable for statistics.
    unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        (*entry).packets += 1;
        (*entry).bytes += flow.len as u64;
        (*entry).tcp_flags |= flow.tcp_flags_bits();
        Some(*entry)
    }
}

/// The rewritten tuple of a new flow.
pub struct Tuple {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}

/// How to reach `addr` after the rewrite: into its container, or (0) routed.
#[inline(always)]
fn delivery_to(addr: u32) -> (u32, [u8; 6], [u8; 6]) {
    // SAFETY: a read-only lookup of a plain-data value.
    match unsafe { ENDPOINTS.get(&addr) } {
        Some(ep) => (ep.ifindex, ep.mac, ep.gw_mac),
        None => (0, [0; 6], [0; 6]),
    }
}

/// Creates both entries of a new flow whose packets become `t` (original direction).
///
/// With `alloc_port`, the new source port (ICMP: echo id) is picked in the masquerade
/// range: the original one if it is in the range, else at random, at most SNAT_TRIES
/// times. The reply entry goes in first with BPF_NOEXIST, so two flows can never share a
/// reply tuple; the forward entry follows with BPF_NOEXIST and, if another CPU created
/// the same flow meanwhile, ours is rolled back and theirs is used.
#[inline(always)]
pub fn create(
    ctx: &TcContext,
    flow: &Flow,
    t: Tuple,
    kinds: (u8, u8),
    flags: u8,
    alloc_port: Option<(u16, u16)>,
) -> Result<CtEntry, DropReason> {
    // SAFETY: helper calls without arguments to check.
    let now = unsafe { bpf_ktime_get_ns() };
    let (fi, fmac, fgw) = delivery_to(t.daddr);
    let (ri, rmac, rgw) = delivery_to(flow.saddr);
    let mut fwd = CtEntry {
        saddr: t.saddr,
        daddr: t.daddr,
        sport: t.sport,
        dport: t.dport,
        kind: kinds.0,
        tcp_flags: flow.tcp_flags_bits(),
        flags,
        _pad: 0,
        ifindex: fi,
        mac: fmac,
        gw_mac: fgw,
        last_seen_ns: now,
        packets: 1,
        bytes: flow.len as u64,
    };
    let rev = CtEntry {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        kind: kinds.1,
        tcp_flags: 0,
        flags,
        _pad: 0,
        ifindex: ri,
        mac: rmac,
        gw_mac: rgw,
        last_seen_ns: now,
        packets: 0,
        bytes: 0,
    };
    let icmp = flow.proto == IPPROTO_ICMP;
    let fwd_key = key_of(flow);
    match alloc_port {
        None => {
            let rkey = reverse_key(&fwd, flow.proto);
            if CONNTRACK.insert(&rkey, &rev, BPF_ANY as u64).is_err()
                || CONNTRACK.insert(&fwd_key, &fwd, BPF_ANY as u64).is_err()
            {
                return Err(drop_reason::CT_INSERT_FAILED);
            }
        }
        // The range travels by value: a reference to a stack copy of the config was
        // lowered to a scalar the verifier rejected.
        Some((min, max)) => {
            let (min, max) = (min as u32, max as u32);
            let range = if max >= min { max - min + 1 } else { 1 };
            let orig = u16::from_be(flow.sport) as u32;
            let mut chosen: Option<CtKey> = None;
            // Like the kernel's MASQUERADE: keep the original port when nothing else
            // uses the resulting tuple. "Else" includes the host's own sockets, which
            // netd's conntrack does not see: a host socket that would receive the
            // reply (a listener on the port, or a connection with that remote) makes
            // the port taken.
            if !icmp && orig >= 1024 && !host_socket_claims(ctx, flow, t.saddr) {
                let rkey = reverse_key(&fwd, flow.proto);
                if insert_new(&rkey, &rev)? {
                    chosen = Some(rkey);
                }
            }
            // Otherwise the reserved range: a random start, then the following ports
            // in turn (a run of taken ports is far rarer than one taken port, so this
            // finds room in a nearly full range where random picks fail and cost the
            // client a SYN retransmit). Tuples are not reused while their flow's
            // entries live: the far end may hold them in TIME_WAIT.
            // SAFETY: a helper call without arguments.
            let start = if orig >= min && orig <= max {
                orig - min
            } else {
                (unsafe { bpf_get_prandom_u32() }) % range
            };
            for i in 0..SNAT_TRIES {
                if chosen.is_some() {
                    break;
                }
                let port = min + (start + i) % range;
                let p = (port as u16).to_be();
                fwd.sport = p;
                if icmp {
                    fwd.dport = p;
                }
                let rkey = reverse_key(&fwd, flow.proto);
                if insert_new(&rkey, &rev)? {
                    chosen = Some(rkey);
                }
            }
            let Some(rkey) = chosen else {
                return Err(drop_reason::SNAT_EXHAUSTED);
            };
            if let Err(e) = CONNTRACK.insert(&fwd_key, &fwd, BPF_NOEXIST as u64) {
                let _ = CONNTRACK.remove(&rkey);
                if e != -EEXIST {
                    return Err(drop_reason::CT_INSERT_FAILED);
                }
                // Another CPU tracked the same flow meanwhile: its entries stand.
                count(event::CT_RACE_LOST);
                return lookup(flow).ok_or(drop_reason::CT_INSERT_FAILED);
            }
        }
    }
    Ok(fwd)
}

/// Inserts an entry that must be new: Ok(false) if its key is taken (a masquerade port
/// in use), Err if the map refused it for another reason, which no other port fixes.
#[inline(always)]
fn insert_new(key: &CtKey, entry: &CtEntry) -> Result<bool, DropReason> {
    match CONNTRACK.insert(key, entry, BPF_NOEXIST as u64) {
        Ok(()) => Ok(true),
        Err(e) if e == -EEXIST => {
            count(event::CT_PORT_TAKEN);
            Ok(false)
        }
        Err(_) => Err(drop_reason::CT_INSERT_FAILED),
    }
}

/// Whether a socket of the host namespace would receive the reply of `flow` once its
/// source became `new_saddr` with its own port: then that port is not free.
#[inline(always)]
fn host_socket_claims(ctx: &TcContext, flow: &Flow, new_saddr: u32) -> bool {
    use aya_ebpf::{
        bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS},
        helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    };
    use netd_common::IPPROTO_TCP;
    // SAFETY: a zeroed plain-data union of the kernel's ABI.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // The reply as it would arrive: from the remote, to the host address and port.
    tuple.__bindgen_anon_1.ipv4.saddr = flow.daddr;
    tuple.__bindgen_anon_1.ipv4.daddr = new_saddr;
    tuple.__bindgen_anon_1.ipv4.sport = flow.dport;
    tuple.__bindgen_anon_1.ipv4.dport = flow.sport;
    // sizeof(tuple.ipv4)
    let size = 12u32;
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: the tuple lives on the stack for the call; a returned socket is released.
    unsafe {
        let sk = if flow.proto == IPPROTO_TCP {
            bpf_skc_lookup_tcp(ctx.skb.skb as *mut _, &mut tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.skb.skb as *mut _, &mut tuple, size, netns, 0)
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk as *mut _);
    }
    true
}

#[inline(always)]
fn reverse_key(fwd: &CtEntry, proto: u8) -> CtKey {
    CtKey {
        saddr: fwd.daddr,
        daddr: fwd.saddr,
        sport: fwd.dport,
        dport: fwd.sport,
        proto,
        _pad: [0; 3],
    }
}

/// Accounts a packet to the published port `key`.
#[inline(always)]
pub fn count_port(key: &PortKey, len: u32) {
    if let Some(c) = PORT_STATS.get_ptr_mut(key) {
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
    let _ = PORT_STATS.insert(key, &first, BPF_NOEXIST as u64);
}

impl Flow {
    /// TCP flags as conntrack state bits (`ct_tcp`).
    #[inline(always)]
    pub fn tcp_flags_bits(&self) -> u8 {
        use netd_common::ct_tcp;
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        let f = self.tcp_flags;
        let mut bits = 0;
        if f & SYN != 0 {
            bits |= if f & ACK != 0 {
                ct_tcp::SYN_ACK
            } else {
                ct_tcp::SYN
            };
        } else if f & ACK != 0 {
            bits |= ct_tcp::ESTABLISHED;
        }
        if f & FIN != 0 {
            bits |= ct_tcp::FIN;
        }
        if f & RST != 0 {
            bits |= ct_tcp::RST;
        }
        bits
    }
}
