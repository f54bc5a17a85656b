//! The datapath trace: one record per packet (IPv4 or IPv6) a program decided on, written to the
//! `NETD_TRACE` ring buffer only while the `CONFIG_F_TRACE` bit is set (`netd trace`,
//! `netd daemon --debug-datapath`). Off, the cost is the one config load and branch the
//! programs make anyway.
//!
//! Not aya-log: its buffer map is created by each load and cannot be adopted from a
//! pin, so a restarted agent (which keeps the pinned programs running) could never read
//! what they log. This ring buffer is pinned by name like every other map.
use bytemuck::{Pod, Zeroable};

/// Bytes of the ring buffer (a power of two and a multiple of the page size): room for
/// about 6,000 records between two reads of the agent.
pub const TRACE_RING_BYTES: u32 = 256 * 1024;

/// Which program decided.
pub mod hook {
    pub const UPLINK_GUARD: u8 = 0;
    pub const UPLINK_INGRESS: u8 = 1;
    pub const ENDPOINT_EGRESS: u8 = 2;
    pub const OVERLAY_EGRESS: u8 = 3;
    pub const OVERLAY_INGRESS: u8 = 4;
    pub const UPLINK_INGRESS6: u8 = 5;
    pub const ENDPOINT_EGRESS6: u8 = 6;
    pub const NAMES: [&str; 7] = [
        "uplink_guard",
        "uplink_ingress",
        "endpoint_egress",
        "overlay_egress",
        "overlay_ingress",
        "uplink_ingress6",
        "endpoint_egress6",
    ];
}

/// What became of the packet.
pub mod verdict {
    /// Back to the stack (TC_ACT_OK, XDP_PASS), or on to the next program.
    pub const PASS: u8 = 0;
    /// Dropped; the record's `reason` says why (`drop_reason`).
    pub const DROP: u8 = 1;
    /// Sent on by bpf_redirect_* (TC_ACT_REDIRECT).
    pub const REDIRECT: u8 = 2;
    pub const NAMES: [&str; 3] = ["pass", "drop", "redirect"];
}

/// One traced packet, as it leaves the program: after any rewrite for a passed or
/// redirected packet, as it came for a dropped one. Addresses and ports are in network
/// byte order; an IPv4 address fills the first 4 bytes of its field. Ports are 0 for
/// protocols without them (and the echo id for ICMP and ICMPv6 echo).
///
/// The ring buffer of these 64-byte records of both families is `NETD_TRACE2`; the
/// 40-byte IPv4-only records of `NETD_TRACE` (0.2.0 and before) are gone with that map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TraceRecord {
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub ts_ns: u64,
    /// Interface the program runs on.
    pub ifindex: u32,
    /// Bytes of the whole frame.
    pub len: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// `drop_reason` index for a drop, else 0.
    pub reason: u16,
    pub hook: u8,
    pub verdict: u8,
    /// The upper-layer protocol (IPv6: the first header's next header).
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<TraceRecord>() == 64);
