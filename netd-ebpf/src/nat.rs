//! Checksum-correct address and port rewrites. The csum helpers are used rather than
//! hand-computed sums because they also fix up skb->csum for CHECKSUM_COMPLETE packets and
//! leave CHECKSUM_PARTIAL ones (from local containers with offload) consistent.
use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use netd_common::IPPROTO_TCP;

use crate::parse::{Flow, ETH_HLEN};

const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;

#[derive(Clone, Copy)]
pub enum Side {
    Src,
    Dst,
}

/// Rewrites the source or destination address and port of `flow` in place.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, flow: &Flow, side: Side, addr: u32, port: u16) -> Result<(), i64> {
    let (old_addr, old_port, addr_off, port_off) = match side {
        Side::Src => (flow.saddr, flow.sport, IP_SRC_OFF, flow.l4_off),
        Side::Dst => (flow.daddr, flow.dport, IP_DST_OFF, flow.l4_off + 2),
    };
    // UDP: a zero checksum means "none" and must stay zero; MARK_MANGLED_0 does that and
    // writes 0xffff for a computed zero.
    let (csum_off, mangled) = if flow.proto == IPPROTO_TCP {
        (flow.l4_off + 16, 0)
    } else {
        (flow.l4_off + 6, BPF_F_MARK_MANGLED_0)
    };
    if old_addr != addr {
        ctx.l4_csum_replace(
            csum_off,
            old_addr as u64,
            addr as u64,
            BPF_F_PSEUDO_HDR as u64 | 4 | mangled,
        )?;
        ctx.l3_csum_replace(IP_CSUM_OFF, old_addr as u64, addr as u64, 4)?;
        ctx.store(addr_off, &addr, 0)?;
    }
    if old_port != port {
        ctx.l4_csum_replace(csum_off, old_port as u64, port as u64, 2 | mangled)?;
        ctx.store(port_off, &port, 0)?;
    }
    Ok(())
}

/// Writes destination and source MAC addresses (for redirects that bypass the stack).
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), i64> {
    ctx.store(0, dst, 0)?;
    ctx.store(6, src, 0)
}
