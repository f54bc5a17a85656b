//! Lookups shared by the hook points: published ports (both families, IPv6's with a
//! `6`), links and isolation.
use aya_ebpf::programs::TcContext;
use netd_common::{
    drop_reason, drop_reason::DropReason, Backend, Backend6, Endpoint, LinkKey, PortKey, PortKey6,
    EP_F_ICC, EP_F_INTERNAL,
};

use crate::{
    family::Family,
    maps::{ADDRS6, ENDPOINTS, ENDPOINTS6, LINKS, PORTS, PORTS6},
    parse::{Flow, ETH_HLEN, ETH_P_IP},
    parse6::{link_local, multicast, Flow6, ETH_P_IPV6, IP6_DADDR},
};

use crate::consts::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP};

/// Checks that a frame leaving a container carries that container's identity: for IPv4,
/// its source address is an endpoint of this very veth and the source MAC is that
/// endpoint's; for ARP, the sender address and MAC are its own (0.0.0.0 probes pass).
/// Returns the endpoint for IPv4 packets, None for other frames (`other_frame`).
#[inline(always)]
pub fn sender(ctx: &TcContext) -> Result<Option<Endpoint>, DropReason> {
    // SAFETY: ctx wraps a valid __sk_buff for the duration of the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let (Ok(ethertype), Ok(smac)) = (ctx.load::<u16>(12), ctx.load::<[u8; 6]>(6)) else {
        return Ok(None);
    };
    let ethertype = u16::from_be(ethertype);
    let (ip_off, mac_ok_needed) = match ethertype {
        ETH_P_IP => (ETH_HLEN + 12, true),
        // ARP: sender hardware address at 8, sender protocol address at 14.
        ETH_P_ARP => (ETH_HLEN + 14, true),
        _ => return other_frame(ctx, ethertype, ifindex).map(|()| None),
    };
    let ip: u32 = match ctx.load(ip_off) {
        Ok(ip) => ip,
        Err(_) => return Ok(None),
    };
    if ethertype == ETH_P_ARP && ip == 0 {
        return Ok(None);
    }
    // SAFETY: a read-only lookup of a plain-data value.
    let ep = match unsafe { ENDPOINTS.get(&ip) } {
        Some(ep) if ep.ifindex == ifindex => *ep,
        _ => {
            return Err(if ethertype == ETH_P_ARP {
                drop_reason::SPOOFED_ARP
            } else {
                drop_reason::SPOOFED_IP
            })
        }
    };
    if mac_ok_needed && smac != ep.mac {
        return Err(drop_reason::SPOOFED_MAC);
    }
    if ethertype == ETH_P_ARP {
        match ctx.load::<[u8; 6]>(ETH_HLEN + 8) {
            Ok(sha) if sha == ep.mac => return Ok(None),
            _ => return Err(drop_reason::SPOOFED_ARP),
        }
    }
    Ok(Some(ep))
}

/// Frames other than IPv4 and ARP. IPv6 of an endpoint with IPv6 was judged by
/// `endpoint_egress6` ahead of this program; from one without, only the link's own
/// (link-local and multicast destinations) goes on: netd gave it no address to be
/// routed with. A VLAN tag inside another would reach the stack with both stripped
/// (the kernel drops priority tags), past these checks. The rest is the bridge's.
#[inline(never)]
fn other_frame(ctx: &TcContext, ethertype: u16, ifindex: u32) -> Result<(), DropReason> {
    match ethertype {
        ETH_P_IPV6 => {
            if ENDPOINTS6.get_ptr(&ifindex).is_some() {
                return Ok(());
            }
            match ctx.load::<[u8; 16]>(IP6_DADDR) {
                Ok(d) if link_local(&d) || multicast(&d) => Ok(()),
                _ => Err(drop_reason::IPV6_REFUSED),
            }
        }
        ETH_P_8021Q | ETH_P_8021AD => Err(drop_reason::STACKED_VLAN),
        _ => Ok(()),
    }
}

/// Isolation between containers (Docker's rules, in eBPF): another network's containers
/// are unreachable, a network with icc=false keeps its containers apart, and an
/// --internal network reaches nothing beyond its own containers and its gateway.
/// Ok(true): the destination is a container of the same network.
#[inline(always)]
pub fn isolation(src: &Endpoint, daddr: u32) -> Result<bool, DropReason> {
    // SAFETY: a read-only lookup of a plain-data value.
    if let Some(dst) = unsafe { ENDPOINTS.get(&daddr) } {
        if dst.net_id != src.net_id {
            return Err(drop_reason::OTHER_NETWORK);
        }
        if src.flags & EP_F_ICC == 0 {
            return Err(drop_reason::ICC);
        }
        return Ok(true);
    }
    if src.flags & EP_F_INTERNAL != 0 && daddr != src.gw_ip {
        return Err(drop_reason::INTERNAL);
    }
    Ok(false)
}

/// Whether a `--link` opens icc=false for a flow between two containers of one network:
/// to the target's exposed port (`dport`), or the target's reply from it (`sport`).
/// A subprogram of its own taking scalars (`inline(never)`): inlined, or given a pointer
/// to the parsed packet, it pushed endpoint_egress's frame past the 512-byte limit.
#[inline(never)]
pub fn linked(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> bool {
    let mut key = LinkKey {
        src: saddr,
        dst: daddr,
        port: dport,
        proto,
        dir: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if unsafe { LINKS.get(&key) }.is_some() {
        return true;
    }
    key.port = sport;
    key.dir = 1;
    unsafe { LINKS.get(&key) }.is_some()
}

/// Published ports do not lead into --internal networks (nothing gets in), nor let in
/// from outside (`from`: the client's address) a source the network's restriction
/// leaves out.
#[inline(always)]
pub fn backend_allowed(b: &Backend, from: Option<u32>) -> Result<(), DropReason> {
    // SAFETY: a read-only lookup of a plain-data value.
    match unsafe { ENDPOINTS.get(&b.ip) } {
        Some(ep) if ep.flags & EP_F_INTERNAL != 0 => Err(drop_reason::INTERNAL),
        Some(ep) => match from {
            Some(s) if !u32::source_allowed(ep.net_id, &s) => Err(drop_reason::SOURCE_DENIED),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

/// The backend of the port `flow` is addressed to: the exact host-IP entry first, then
/// the wildcard one. The bool says whether it was the wildcard.
#[inline(always)]
pub fn published(flow: &Flow) -> Option<(Backend, bool)> {
    let mut key = PortKey {
        host_ip: flow.daddr,
        host_port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if let Some(b) = unsafe { PORTS.get(&key) } {
        return Some((*b, false));
    }
    key.host_ip = 0;
    unsafe { PORTS.get(&key) }.map(|b| (*b, true))
}

/// The backend of the IPv6 port `flow` is addressed to: the exact host-address entry
/// first, then the wildcard ([::]) one. The bool says whether it was the wildcard.
#[inline(always)]
pub fn published6(flow: &Flow6) -> Option<(Backend6, bool)> {
    let mut key = PortKey6 {
        host_ip: flow.daddr,
        host_port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if let Some(b) = unsafe { PORTS6.get(&key) } {
        return Some((*b, false));
    }
    key.host_ip = [0; 16];
    unsafe { PORTS6.get(&key) }.map(|b| (*b, true))
}

/// A published port of an --internal network's container leads nowhere, and lets in
/// from outside (`from`: the client's address) only the sources the network's
/// restriction allows.
#[inline(always)]
pub fn backend_allowed6(b: &Backend6, from: Option<&[u8; 16]>) -> Result<(), DropReason> {
    // SAFETY: a read-only lookup of a plain-data value.
    match unsafe { ADDRS6.get(&b.ip) } {
        Some(a) if a.flags & EP_F_INTERNAL != 0 => Err(drop_reason::INTERNAL),
        Some(a) => match from {
            Some(s) if !<[u8; 16]>::source_allowed(a.net_id, s) => Err(drop_reason::SOURCE_DENIED),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}
