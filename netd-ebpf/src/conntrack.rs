//! netd's own connection tracking, keyed by the packet tuple, one entry per direction,
//! each holding the tuple to rewrite matching packets to and where they go.
//!
//! Two maps, as the kernel's conntrack keeps "assured" entries apart from the others: a
//! new flow goes into CONNTRACK_NEW, an LRU hash; the first packet of its reply moves both
//! entries into CONNTRACK, a plain hash sized by --ct-max. A flood of new flows (which
//! an attacker can make at will) only churns the LRU map and never evicts an established
//! flow; when CONNTRACK is full, a new flow keeps working from CONNTRACK_NEW and the
//! failed move is counted. Established flows cost one lookup, as before.
use aya_ebpf::programs::TcContext;
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use netd_common::{
    ct_kind, drop_reason, drop_reason::DropReason, event, CtEntry, CtKey, PortCounters, PortKey,
    IPPROTO_ICMP, SNAT_TRIES,
};

use crate::{
    maps::{CONNTRACK, CONNTRACK_NEW, CT_SCRATCH, ENDPOINTS, PORT_STATS},
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

/// The entry of `key`, confirmed or new (ICMP error translation reads it).
#[inline(always)]
pub fn get(key: &CtKey) -> Option<CtEntry> {
    // SAFETY: read-only lookups of plain-data values.
    unsafe {
        match CONNTRACK.get(key) {
            Some(e) => Some(*e),
            None => CONNTRACK_NEW.get(key).copied(),
        }
    }
}

/// Accounts a packet to the entry at `entry` and returns a copy of it.
#[inline(always)]
fn touch(entry: *mut CtEntry, flow: &Flow) -> CtEntry {
    // SAFETY: a pointer into the map value returned by the kernel; racing updates from
    // another CPU only make counters approximate, which is acceptable for statistics.
    unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        (*entry).packets += 1;
        (*entry).bytes += flow.len as u64;
        (*entry).tcp_flags |= flow.tcp_flags_bits();
        *entry
    }
}

/// Looks up the entry for `flow` and accounts the packet to it. A reply to a new flow
/// confirms it: both entries move to CONNTRACK.
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<CtEntry> {
    let key = key_of(flow);
    let (entry, new) = match CONNTRACK.get_ptr_mut(&key) {
        Some(e) => (e, false),
        None => (CONNTRACK_NEW.get_ptr_mut(&key)?, true),
    };
    let e = touch(entry, flow);
    if new && (e.kind == ct_kind::DNAT_REPLY || e.kind == ct_kind::SNAT_REPLY) {
        confirm(entry, flow.proto);
    }
    Some(e)
}

/// Moves a flow from CONNTRACK_NEW to CONNTRACK, given its reply entry (a pointer into
/// CONNTRACK_NEW). If CONNTRACK is full the flow stays where it is (it still works, but a
/// flood may evict it) and the failure is counted.
///
/// Not inlined: a BPF subprogram has a stack frame of its own, and the entry points are
/// near the 512-byte limit. The entries are passed to the map as pointers into
/// CONNTRACK_NEW, never copied onto the stack.
#[inline(never)]
fn confirm(reply: *const CtEntry, proto: u8) {
    // SAFETY: `reply` points into a live map value (the caller's lookup).
    let reply = unsafe { &*reply };
    let orig_key = reverse_key(reply, proto);
    let Some(orig) = CONNTRACK_NEW.get_ptr(&orig_key) else {
        return;
    };
    // SAFETY: a pointer into a map value returned by the kernel.
    let orig = unsafe { &*orig };
    // Each entry's key is the other's tuple reversed.
    let reply_key = &reverse_key(orig, proto);
    if CONNTRACK
        .insert(&orig_key, orig, BPF_NOEXIST as u64)
        .is_err()
    {
        // Full, or another CPU confirmed it first: either way, nothing to undo.
        if CONNTRACK.get_ptr(&orig_key).is_none() {
            count(event::CT_CONFIRM_FAILED);
        }
        return;
    }
    if CONNTRACK
        .insert(reply_key, reply, BPF_NOEXIST as u64)
        .is_err()
    {
        let _ = CONNTRACK.remove(&orig_key);
        count(event::CT_CONFIRM_FAILED);
        return;
    }
    let _ = CONNTRACK_NEW.remove(&orig_key);
    let _ = CONNTRACK_NEW.remove(reply_key);
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
    // Both entries are built in a per-CPU scratch slot, not on the stack: the entry
    // points sit near the BPF stack limit of 512 bytes.
    let scratch = CT_SCRATCH
        .get_ptr_mut(0)
        .ok_or(drop_reason::CT_INSERT_FAILED)?;
    // SAFETY: this CPU's slot of a per-CPU array, used only while this program runs.
    let (fwd, rev) = unsafe { (&mut (*scratch)[0], &mut (*scratch)[1]) };
    *fwd = CtEntry {
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
    *rev = CtEntry {
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
            let rkey = reverse_key(fwd, flow.proto);
            if CONNTRACK_NEW.insert(&rkey, &*rev, BPF_ANY as u64).is_err()
                || CONNTRACK_NEW
                    .insert(&fwd_key, &*fwd, BPF_ANY as u64)
                    .is_err()
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
                let rkey = reverse_key(fwd, flow.proto);
                if claim_reply_tuple(&rkey, rev)? {
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
                let rkey = reverse_key(fwd, flow.proto);
                if claim_reply_tuple(&rkey, rev)? {
                    chosen = Some(rkey);
                }
            }
            let Some(rkey) = chosen else {
                return Err(drop_reason::SNAT_EXHAUSTED);
            };
            if let Err(e) = CONNTRACK_NEW.insert(&fwd_key, &*fwd, BPF_NOEXIST as u64) {
                let _ = CONNTRACK_NEW.remove(&rkey);
                if e != -EEXIST {
                    return Err(drop_reason::CT_INSERT_FAILED);
                }
                // Another CPU tracked the same flow meanwhile: its entries stand.
                count(event::CT_RACE_LOST);
                return lookup(flow).ok_or(drop_reason::CT_INSERT_FAILED);
            }
        }
    }
    Ok(*fwd)
}

/// Takes the reply tuple `rkey` for a new flow: Ok(false) if a flow, answered or new,
/// already uses it (a masquerade port in use), Err if the map refused it for another
/// reason, which no other port fixes. The NOEXIST insert makes two CPUs racing for it
/// in CONNTRACK_NEW agree.
#[inline(always)]
fn claim_reply_tuple(rkey: &CtKey, rev: &CtEntry) -> Result<bool, DropReason> {
    if CONNTRACK.get_ptr(rkey).is_some() {
        count(event::CT_PORT_TAKEN);
        return Ok(false);
    }
    match CONNTRACK_NEW.insert(rkey, rev, BPF_NOEXIST as u64) {
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
