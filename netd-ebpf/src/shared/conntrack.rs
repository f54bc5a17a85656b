//! netd's own connection tracking, keyed by the packet tuple, one entry per direction,
//! each holding the tuple to rewrite matching packets to and where they go.
//!
//! Two maps, as the kernel's conntrack keeps "assured" entries apart from the others: a
//! new flow goes into CONNTRACK_NEW, an LRU hash; the first packet of its reply moves both
//! entries into CONNTRACK, a plain hash sized by --ct-max. A flood of new flows (which
//! an attacker can make at will) only churns the LRU map and never evicts an established
//! flow; when CONNTRACK is full, a new flow keeps working from CONNTRACK_NEW and the
//! failed move is counted. Established flows cost one lookup: CONNTRACK is searched
//! first, and their entries are there.
//!
//! One piece of code serves both families: it is generic over the address type (`u32`
//! for IPv4, `[u8; 16]` for IPv6), and `Family` (`family.rs`) supplies what differs, as
//! cilium's conntrack.h serves ipv4.h and ipv6.h.
use aya_ebpf::programs::TcContext;
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use netd_common::{
    ct_flag, ct_kind, drop_reason, drop_reason::DropReason, event, CtEntryOf, CtKeyOf, SNAT_TRIES,
};

use crate::family::Family;
use crate::{maps::config, metrics::count, parse::FlowOf, proto::has_ports};

#[inline(always)]
pub fn key_of<A: Family>(flow: &FlowOf<A>) -> CtKeyOf<A> {
    CtKeyOf {
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
pub fn get<A: Family>(key: &CtKeyOf<A>) -> Option<CtEntryOf<A>> {
    // SAFETY: read-only lookups of plain-data values.
    unsafe {
        match A::confirmed().get(key) {
            Some(e) => Some(*e),
            None => A::new_flows().get(key).copied(),
        }
    }
}

/// Accounts a packet to the entry at `entry` and returns a copy of it.
#[inline(always)]
fn touch<A: Family>(entry: *mut CtEntryOf<A>, flow: &FlowOf<A>) -> CtEntryOf<A> {
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
pub fn lookup<A: Family>(flow: &FlowOf<A>) -> Option<CtEntryOf<A>> {
    let key = key_of(flow);
    let (entry, new) = match A::confirmed().get_ptr_mut(&key) {
        Some(e) => (e, false),
        None => (A::new_flows().get_ptr_mut(&key)?, true),
    };
    let e = touch(entry, flow);
    if new
        && (e.kind == ct_kind::DNAT_REPLY
            || e.kind == ct_kind::SNAT_REPLY
            || e.kind == ct_kind::DIRECT_REPLY)
    {
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
fn confirm<A: Family>(reply: *const CtEntryOf<A>, proto: u8) {
    let (confirmed, new_flows) = (A::confirmed(), A::new_flows());
    // SAFETY: `reply` points into a live map value (the caller's lookup).
    let reply = unsafe { &*reply };
    let orig_key = reverse_key(reply, proto);
    let Some(orig) = new_flows.get_ptr(&orig_key) else {
        return;
    };
    // SAFETY: a pointer into a map value returned by the kernel.
    let orig = unsafe { &*orig };
    // Each entry's key is the other's tuple reversed.
    let reply_key = &reverse_key(orig, proto);
    if confirmed
        .insert(&orig_key, orig, BPF_NOEXIST as u64)
        .is_err()
    {
        // Full, or another CPU confirmed it first: either way, nothing to undo.
        if confirmed.get_ptr(&orig_key).is_none() {
            count(event::CT_CONFIRM_FAILED);
        }
        return;
    }
    if confirmed
        .insert(reply_key, reply, BPF_NOEXIST as u64)
        .is_err()
    {
        let _ = confirmed.remove(&orig_key);
        count(event::CT_CONFIRM_FAILED);
        return;
    }
    let _ = new_flows.remove(&orig_key);
    let _ = new_flows.remove(reply_key);
}

/// The rewritten tuple of a new flow.
pub struct Tuple<A = u32> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
}

/// Creates both entries of a new flow whose packets become `t` (original direction),
/// and returns the original direction's (in this CPU's scratch slot, or the map's own
/// when another CPU won the race: never a copy, the stack has no room for one).
///
/// With `alloc_port`, the new source port (ICMP: query id) is picked in the masquerade
/// range: the original one if it is free, else from a random start in the range, at
/// most SNAT_TRIES ports; a protocol without ports has no choice, and a reply tuple
/// another flow holds is a clash (`drop_snat_clash`). The reply entry goes in first
/// with BPF_NOEXIST, so two flows can never share a reply tuple; the forward entry
/// follows with BPF_NOEXIST and, if another CPU created the same flow meanwhile, ours
/// is rolled back and theirs is used.
#[inline(always)]
pub fn create<A: Family>(
    ctx: &TcContext,
    flow: &FlowOf<A>,
    t: Tuple<A>,
    kinds: (u8, u8),
    flags: u8,
    alloc_port: Option<(u16, u16)>,
) -> Result<&'static CtEntryOf<A>, DropReason> {
    let new_flows = A::new_flows();
    // SAFETY: helper calls without arguments to check.
    let now = unsafe { bpf_ktime_get_ns() };
    let (fi, fmac, fgw) = A::delivery_to(t.daddr);
    let (ri, rmac, rgw) = A::delivery_to(flow.saddr);
    // Both entries are built in a per-CPU scratch slot, not on the stack: the entry
    // points sit near the BPF stack limit of 512 bytes.
    let scratch = A::scratch()
        .get_ptr_mut(0)
        .ok_or(drop_reason::CT_INSERT_FAILED)?;
    // SAFETY: this CPU's slot of a per-CPU array, used only while this program runs.
    let (fwd, rev) = unsafe { (&mut (*scratch)[0], &mut (*scratch)[1]) };
    *fwd = CtEntryOf {
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
    *rev = CtEntryOf {
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
    let icmp = flow.proto == A::ICMP;
    // The two keys live in a per-CPU slot too: IPv6's are 40 bytes each.
    let keys = A::key_scratch()
        .get_ptr_mut(0)
        .ok_or(drop_reason::CT_INSERT_FAILED)?;
    // SAFETY: this CPU's slot of a per-CPU array, used only while this program runs.
    let (fwd_key, rkey) = unsafe { (&mut (*keys)[0], &mut (*keys)[1]) };
    *fwd_key = key_of(flow);
    match alloc_port {
        None => {
            *rkey = reverse_key(fwd, flow.proto);
            if new_flows.insert(&*rkey, &*rev, BPF_ANY as u64).is_err()
                || new_flows.insert(&*fwd_key, &*fwd, BPF_ANY as u64).is_err()
            {
                return Err(drop_reason::CT_INSERT_FAILED);
            }
        }
        // The range travels by value: a reference to a stack copy of the config was
        // lowered to a scalar the verifier rejected.
        Some((min, max)) => {
            if !icmp && !has_ports(flow.proto) {
                // Nothing to choose: the flow is (protocol, addresses), and the reply
                // tuple is either free or another container's (the kernel's NAT drops
                // such a clash too).
                *rkey = reverse_key(fwd, flow.proto);
                if !claim_reply_tuple(&*rkey, rev)? {
                    return Err(drop_reason::SNAT_CLASH);
                }
            } else if !claim_port(ctx, flow, t.saddr, fwd, rev, rkey, (min, max))? {
                return Err(drop_reason::SNAT_EXHAUSTED);
            }
            if let Err(e) = new_flows.insert(&*fwd_key, &*fwd, BPF_NOEXIST as u64) {
                let _ = new_flows.remove(&*rkey);
                if e != -EEXIST {
                    return Err(drop_reason::CT_INSERT_FAILED);
                }
                // Another CPU tracked the same flow meanwhile: its entries stand.
                count(event::CT_RACE_LOST);
                let theirs = new_flows
                    .get_ptr(&*fwd_key)
                    .or_else(|| A::confirmed().get_ptr(&*fwd_key))
                    .ok_or(drop_reason::CT_INSERT_FAILED)?;
                // SAFETY: a map value, alive while the program runs.
                return Ok(unsafe { &*theirs });
            }
        }
    }
    Ok(fwd)
}

/// Picks the new source port (ICMP: query id) of a masqueraded flow in [min, max] and
/// takes its reply tuple: Ok(false) when every port tried was taken.
#[inline(always)]
fn claim_port<A: Family>(
    ctx: &TcContext,
    flow: &FlowOf<A>,
    new_saddr: A,
    fwd: &mut CtEntryOf<A>,
    rev: &CtEntryOf<A>,
    rkey: &mut CtKeyOf<A>,
    (min, max): (u16, u16),
) -> Result<bool, DropReason> {
    let icmp = flow.proto == A::ICMP;
    let (min, max) = (min as u32, max as u32);
    let range = if max >= min { max - min + 1 } else { 1 };
    let orig = u16::from_be(flow.sport) as u32;
    let mut chosen = false;
    // Like the kernel's MASQUERADE: keep the original port when nothing else
    // uses the resulting tuple. "Else" includes the host's own sockets, which
    // netd's conntrack does not see: a host socket that would receive the
    // reply (a listener on the port, or a connection with that remote) makes
    // the port taken.
    if !icmp && orig >= 1024 && !A::host_socket_claims(ctx, flow, new_saddr) {
        *rkey = reverse_key(fwd, flow.proto);
        chosen = claim_reply_tuple(rkey, rev)?;
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
        if chosen {
            break;
        }
        let port = min + (start + i) % range;
        let p = (port as u16).to_be();
        fwd.sport = p;
        if icmp {
            fwd.dport = p;
        }
        *rkey = reverse_key(fwd, flow.proto);
        chosen = claim_reply_tuple(rkey, rev)?;
    }
    Ok(chosen)
}

/// Tracks a new flow to a published port, whose backend is (`ip`, `port`): DNAT, the
/// client's source kept. A hairpin (`hairpin_gw`: the container's gateway) to the
/// container itself comes from the gateway instead, with a fresh port as masquerade
/// would pick: the packet must not arrive with its own address as source.
#[inline(always)]
pub fn track_published<A: Family>(
    ctx: &TcContext,
    flow: &FlowOf<A>,
    ip: A,
    port: u16,
    wildcard: bool,
    hairpin_gw: Option<A>,
) -> Result<&'static CtEntryOf<A>, DropReason> {
    let to_self = hairpin_gw.is_some() && ip == flow.saddr;
    let t = Tuple {
        saddr: match hairpin_gw {
            Some(gw) if to_self => gw,
            _ => flow.saddr,
        },
        sport: flow.sport,
        daddr: ip,
        dport: port,
    };
    let flags = if wildcard { ct_flag::WILDCARD_PORT } else { 0 };
    let alloc = if to_self {
        let cfg = config();
        Some((cfg.snat_port_min, cfg.snat_port_max))
    } else {
        None
    };
    let ct = create(
        ctx,
        flow,
        t,
        (ct_kind::DNAT, ct_kind::DNAT_REPLY),
        flags,
        alloc,
    )?;
    count(event::CT_NEW);
    if hairpin_gw.is_some() {
        count(event::HAIRPIN);
    }
    Ok(ct)
}

/// Tracks a new flow straight between a container's own address and the outside: both
/// entries rewrite nothing. Its packets then pass the guard of a `routed` network (the
/// replies to a container's own flows), and a masquerading container's replies to it
/// are not taken for new flows to masquerade.
#[inline(always)]
pub fn track_direct<A: Family>(
    ctx: &TcContext,
    flow: &FlowOf<A>,
) -> Result<&'static CtEntryOf<A>, DropReason> {
    let t = Tuple {
        saddr: flow.saddr,
        sport: flow.sport,
        daddr: flow.daddr,
        dport: flow.dport,
    };
    let ct = create(
        ctx,
        flow,
        t,
        (ct_kind::DIRECT, ct_kind::DIRECT_REPLY),
        0,
        None,
    )?;
    count(event::CT_NEW);
    Ok(ct)
}

/// Whether conntrack knows the flow of a packet with this tuple (either table). The key
/// is built in this CPU's scratch slot: the guard asks before any new flow's entries
/// are built there.
#[inline(always)]
pub fn tracked<A: Family>(saddr: &A, daddr: &A, sport: u16, dport: u16, proto: u8) -> bool {
    let Some(key) = A::key_scratch().get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array, used only while this program runs.
    let key = unsafe {
        let k = &mut (*key)[0];
        k.saddr = *saddr;
        k.daddr = *daddr;
        k.sport = sport;
        k.dport = dport;
        k.proto = proto;
        k._pad = [0; 3];
        &*k
    };
    A::confirmed().get_ptr(key).is_some() || A::new_flows().get_ptr(key).is_some()
}

/// Takes the reply tuple `rkey` for a new flow: Ok(false) if a flow, answered or new,
/// already uses it (a masquerade port in use), Err if the map refused it for another
/// reason, which no other port fixes. The NOEXIST insert makes two CPUs racing for it
/// in CONNTRACK_NEW agree.
#[inline(always)]
fn claim_reply_tuple<A: Family>(rkey: &CtKeyOf<A>, rev: &CtEntryOf<A>) -> Result<bool, DropReason> {
    if A::confirmed().get_ptr(rkey).is_some() {
        count(event::CT_PORT_TAKEN);
        return Ok(false);
    }
    match A::new_flows().insert(rkey, rev, BPF_NOEXIST as u64) {
        Ok(()) => Ok(true),
        Err(e) if e == -EEXIST => {
            count(event::CT_PORT_TAKEN);
            Ok(false)
        }
        Err(_) => Err(drop_reason::CT_INSERT_FAILED),
    }
}

#[inline(always)]
fn reverse_key<A: Family>(fwd: &CtEntryOf<A>, proto: u8) -> CtKeyOf<A> {
    CtKeyOf {
        saddr: fwd.daddr,
        daddr: fwd.saddr,
        sport: fwd.dport,
        dport: fwd.sport,
        proto,
        _pad: [0; 3],
    }
}

/// Counts a rewritten packet by kind, and against its published port where it has one.
#[inline(always)]
pub fn account<A: Family>(flow: &FlowOf<A>, ct: &CtEntryOf<A>) {
    let wildcard = ct.flags & ct_flag::WILDCARD_PORT != 0;
    match ct.kind {
        // Original direction: the published address is the packet's destination.
        ct_kind::DNAT => {
            count(event::DNAT);
            A::count_port(&flow.daddr, flow.dport, flow.proto, wildcard, flow.len);
        }
        // Reply: it is the rewritten source.
        ct_kind::DNAT_REPLY => {
            count(event::DNAT_REPLY);
            A::count_port(&ct.saddr, ct.sport, flow.proto, wildcard, flow.len);
        }
        ct_kind::SNAT => count(event::SNAT),
        ct_kind::SNAT_REPLY => count(event::SNAT_REPLY),
        _ => count(event::DIRECT),
    }
}
impl<A> FlowOf<A> {
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
