//! Overlay networks (VXLAN between nodes), in two programs of their own so
//! that `endpoint_egress`, whose stack is nearly full, stays as it is.
//!
//! - `overlay_egress` runs first at TC ingress of an overlay container's host veth
//!   (tcx, ahead of `endpoint_egress`). An ARP request for a container on another node
//!   is answered with the gateway's MAC; an IPv4 packet to one is checked (sender,
//!   network, icc), given its tunnel key (remote node, VNI) and redirected to the node's
//!   VXLAN device (metadata mode), which encapsulates it. Anything else goes on to
//!   `endpoint_egress` (TCX_NEXT): local traffic, masquerade and published ports are
//!   the bridge network's, unchanged.
//! - `overlay_ingress` runs at TC ingress of the VXLAN device: a decapsulated packet
//!   must come from a container of its VNI on the node that sent it (no node, and no
//!   stray VXLAN sender, can speak for another), to a container of the same network
//!   here; it is delivered straight into that container.
//!
//! No FDB or neighbour entry exists for remote containers: the maps are the whole truth.
use aya_ebpf::{
    bindings::{bpf_tunnel_key, BPF_F_ZERO_CSUM_TX, TC_ACT_REDIRECT, TC_ACT_UNSPEC},
    helpers::{
        bpf_redirect, bpf_redirect_peer,
        generated::{bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    },
    macros::classifier,
    programs::TcContext,
};
use netd_common::{
    drop_reason, drop_reason::DropReason, event, trace::hook, Endpoint, OverlayPeer, EP_F_ICC,
};

use crate::{
    maps::{ENDPOINTS, OVERLAY_PEERS},
    metrics::count,
    parse::{ETH_HLEN, ETH_P_IP},
    policy, trace,
};

use crate::consts::{ARPOP_REPLY, ARPOP_REQUEST, ETH_P_ARP};
/// The outer TTL of tunnelled packets (the kernel's default for IP).
const TUNNEL_TTL: u8 = 64;

#[classifier]
pub fn overlay_egress(ctx: TcContext) -> i32 {
    match try_overlay_egress(&ctx) {
        // Not for another node: endpoint_egress decides (and traces) it.
        Ok(TC_ACT_UNSPEC) => TC_ACT_UNSPEC,
        r => trace::tc_exit(&ctx, hook::OVERLAY_EGRESS, r),
    }
}

#[inline(always)]
fn try_overlay_egress(ctx: &TcContext) -> Result<i32, DropReason> {
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return Ok(TC_ACT_UNSPEC);
    };
    match u16::from_be(ethertype) {
        ETH_P_ARP => arp_reply(ctx),
        ETH_P_IP => tunnel(ctx),
        _ => Ok(TC_ACT_UNSPEC),
    }
}

/// The remote container `addr` (network byte order) of the sender's network, if it is
/// one; a remote container of another network is an isolation drop.
#[inline(always)]
fn peer_of(src: &Endpoint, addr: u32) -> Result<Option<OverlayPeer>, DropReason> {
    // SAFETY: a read-only lookup of a plain-data value.
    let Some(peer) = (unsafe { OVERLAY_PEERS.get(&addr) }) else {
        return Ok(None);
    };
    if peer.net_id != src.net_id {
        return Err(drop_reason::OTHER_NETWORK);
    }
    Ok(Some(*peer))
}

/// Answers an ARP request for a container on another node with the gateway's MAC, as
/// if it were on this bridge: the container then sends it unicast IPv4, which
/// `tunnel` carries. The request is turned into the reply in place and sent back out
/// of the veth it came in by.
#[inline(always)]
fn arp_reply(ctx: &TcContext) -> Result<i32, DropReason> {
    // The sender's own address and MAC, or a drop (policy::sender returns None for a
    // genuine ARP packet).
    policy::sender(ctx)?;
    let (Ok(op), Ok(spa), Ok(tpa), Ok(sha)) = (
        ctx.load::<u16>(ETH_HLEN + 6),
        ctx.load::<u32>(ETH_HLEN + 14),
        ctx.load::<u32>(ETH_HLEN + 24),
        ctx.load::<[u8; 6]>(ETH_HLEN + 8),
    ) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if u16::from_be(op) != ARPOP_REQUEST {
        return Ok(TC_ACT_UNSPEC);
    }
    // SAFETY: a read-only lookup of a plain-data value.
    let Some(src) = (unsafe { ENDPOINTS.get(&spa) }).copied() else {
        // 0.0.0.0 probes (duplicate address detection): not ours to answer.
        return Ok(TC_ACT_UNSPEC);
    };
    if peer_of(&src, tpa)?.is_none() {
        return Ok(TC_ACT_UNSPEC);
    }
    let gw = src.gw_mac;
    let reply_op = ARPOP_REPLY.to_be();
    let rewrite = ctx
        .store(0, &sha, 0)
        .and_then(|_| ctx.store(6, &gw, 0))
        .and_then(|_| ctx.store(ETH_HLEN + 6, &reply_op, 0))
        .and_then(|_| ctx.store(ETH_HLEN + 8, &gw, 0))
        .and_then(|_| ctx.store(ETH_HLEN + 14, &tpa, 0))
        .and_then(|_| ctx.store(ETH_HLEN + 18, &sha, 0))
        .and_then(|_| ctx.store(ETH_HLEN + 24, &spa, 0));
    if rewrite.is_err() {
        return Err(drop_reason::REWRITE_FAILED);
    }
    count(event::OVERLAY_ARP);
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Egress of this host veth: into the container that asked.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// Tunnels an IPv4 packet addressed to a container on another node.
#[inline(always)]
fn tunnel(ctx: &TcContext) -> Result<i32, DropReason> {
    let Ok(daddr) = ctx.load::<u32>(ETH_HLEN + 16) else {
        return Ok(TC_ACT_UNSPEC);
    };
    // SAFETY: a read-only lookup of a plain-data value.
    if unsafe { OVERLAY_PEERS.get(&daddr) }.is_none() {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(src) = policy::sender(ctx)? else {
        return Ok(TC_ACT_UNSPEC);
    };
    let Some(peer) = peer_of(&src, daddr)? else {
        return Ok(TC_ACT_UNSPEC);
    };
    if src.flags & EP_F_ICC == 0 {
        return Err(drop_reason::ICC);
    }
    // SAFETY: zero is a valid bpf_tunnel_key (plain integers and unions of them).
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = peer.vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(peer.vtep);
    key.tunnel_ttl = TUNNEL_TTL;
    // No outer UDP checksum, as the kernel's VXLAN devices default to over IPv4 (the
    // inner packet carries its own): without the flag the helper asks for one, which
    // took throughput from 8.2 to 7.6 Gbit/s in `cargo xtask bench --overlay`.
    // SAFETY: the key lives on this stack frame for the call; its size is passed.
    let r = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            u64::from(BPF_F_ZERO_CSUM_TX),
        )
    };
    if r < 0 {
        return Err(drop_reason::REWRITE_FAILED);
    }
    count(event::OVERLAY_TX);
    // SAFETY: a plain helper call.
    Ok(unsafe { bpf_redirect(peer.vxlan_ifindex, 0) } as i32)
}

#[classifier]
pub fn overlay_ingress(ctx: TcContext) -> i32 {
    let r = try_overlay_ingress(&ctx);
    trace::tc_exit(&ctx, hook::OVERLAY_INGRESS, r)
}

#[inline(always)]
fn try_overlay_ingress(ctx: &TcContext) -> Result<i32, DropReason> {
    // SAFETY: zero is a valid bpf_tunnel_key.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the key lives on this stack frame for the call; its size is passed.
    let r = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if r < 0 {
        return Err(drop_reason::OVERLAY_UNKNOWN_PEER);
    }
    let (Ok(ethertype), Ok(saddr), Ok(daddr)) = (
        ctx.load::<u16>(12),
        ctx.load::<u32>(ETH_HLEN + 12),
        ctx.load::<u32>(ETH_HLEN + 16),
    ) else {
        return Err(drop_reason::OVERLAY_UNKNOWN_PEER);
    };
    if u16::from_be(ethertype) != ETH_P_IP {
        return Err(drop_reason::OVERLAY_UNKNOWN_PEER);
    }
    // SAFETY: read-only lookups of plain-data values.
    let peer = match unsafe { OVERLAY_PEERS.get(&saddr) } {
        // SAFETY: remote_ipv4 is the member get_tunnel_key fills for IPv4 (no flag).
        Some(p)
            if p.vni == key.tunnel_id
                && p.vtep == u32::to_be(unsafe { key.__bindgen_anon_1.remote_ipv4 }) =>
        {
            *p
        }
        _ => return Err(drop_reason::OVERLAY_UNKNOWN_PEER),
    };
    let Some(dst) = (unsafe { ENDPOINTS.get(&daddr) }).copied() else {
        return Err(drop_reason::OVERLAY_NO_ENDPOINT);
    };
    if dst.net_id != peer.net_id {
        return Err(drop_reason::OTHER_NETWORK);
    }
    if dst.flags & EP_F_ICC == 0 {
        return Err(drop_reason::ICC);
    }
    // As if the gateway had bridged it: the container's MAC, the gateway's as source
    // (what its ARP for the remote address was answered with).
    if ctx.store(0, &dst.mac, 0).is_err() || ctx.store(6, &dst.gw_mac, 0).is_err() {
        return Err(drop_reason::REWRITE_FAILED);
    }
    count(event::OVERLAY_RX);
    // Straight into the container's namespace (from TC ingress, past the host veth).
    // SAFETY: a plain helper call.
    let r = unsafe { bpf_redirect_peer(dst.ifindex, 0) } as i32;
    if r == TC_ACT_REDIRECT {
        Ok(r)
    } else {
        // SAFETY: a plain helper call.
        Ok(unsafe { bpf_redirect(dst.ifindex, 0) } as i32)
    }
}
