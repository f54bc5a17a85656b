//! netd's own connection tracking: an LRU hash keyed by the packet tuple, one entry per
//! direction, each holding the rewrite for packets that match it.
use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use netd_common::{CtEntry, CtKey};

use crate::{maps::CONNTRACK, parse::Flow};

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

/// Looks up the entry for `flow` and accounts the packet to it.
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<CtEntry> {
    let key = key_of(flow);
    let entry = CONNTRACK.get_ptr_mut(&key)?;
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

/// Inserts (or replaces) the entry for one direction.
#[inline(always)]
pub fn insert(key: &CtKey, entry: &CtEntry) -> Result<(), i32> {
    CONNTRACK.insert(key, entry, BPF_ANY as u64)
}

/// The reply direction's key of `flow` once its destination has become `addr:port`.
#[inline(always)]
pub fn reply_key(flow: &Flow, addr: u32, port: u16) -> CtKey {
    CtKey {
        saddr: addr,
        daddr: flow.saddr,
        sport: port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    }
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
