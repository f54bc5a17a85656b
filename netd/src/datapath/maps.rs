//! The maps the agent writes, spoken in domain types: a published `PortMapping`, an
//! `Attachment` on its `Network`, the host's addresses. This module is the only place
//! where those become map keys and values (netd-common's `#[repr(C)]` types, network
//! byte order), and one generic `sync` makes a map hold exactly a wanted set.
use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netd_common::{
    Addr6, Endpoint, Endpoint6, LinkKey, OverlayPeer, PortCounters, EP_F_ICC, EP_F_INTERNAL,
    EP_F_MASQUERADE, EP_F_TRACK, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP,
};

use super::{sync::sync, Datapath};
use crate::model::{Attachment, IpProto, Network, PortMapping, RemoteEndpoint};

/// The IP protocol number of a protocol (the names live in model::IpProto).
pub fn ipproto(p: IpProto) -> u8 {
    match p {
        IpProto::Tcp => IPPROTO_TCP,
        IpProto::Udp => IPPROTO_UDP,
        IpProto::Icmp => IPPROTO_ICMP,
        IpProto::Sctp => IPPROTO_SCTP,
        IpProto::Gre => IPPROTO_GRE,
        IpProto::Esp => IPPROTO_ESP,
        IpProto::Other(n) => n,
    }
}

/// The protocol of an IP protocol number: its name if it has one.
pub fn ipproto_of(n: u8) -> IpProto {
    IpProto::ALL
        .into_iter()
        .find(|p| ipproto(*p) == n)
        .unwrap_or(IpProto::Other(n))
}

/// One `--link` exception: `from` may reach `to` on `port`/`proto` (and get replies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkRule {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub port: u16,
    pub proto: crate::model::Proto,
}

fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from(ip).to_be()
}

/// The endpoint map's value for attachment `a` on network `net`: where its veth is
/// (recorded when it was plumbed) and the network's policy bits.
pub fn endpoint_value(a: &Attachment, net: &Network) -> Endpoint {
    let mut flags = super::gateway::family_flags(net, false);
    if net.icc {
        flags |= EP_F_ICC;
    }
    if net.internal {
        flags |= EP_F_INTERNAL;
    }
    Endpoint {
        ifindex: a.host_ifindex,
        net_id: net.net_id,
        gw_ip: net.gateway_for(a.ip).map(ip_key).unwrap_or(0),
        flags,
        mac: a.mac,
        gw_mac: net.bridge_mac,
    }
}

/// The IPv6 maps' values for attachment `a` on `net` with address `ip6`: by ifindex
/// and by address. The policy bits are the IPv4 ones, except that NAT66 follows the
/// network's IPv6 gateway mode (`routed`: no masquerade).
fn endpoint6_values(a: &Attachment, net: &Network, ip6: Ipv6Addr) -> (Endpoint6, Addr6) {
    let v4 = endpoint_value(a, net);
    let family = EP_F_MASQUERADE | EP_F_TRACK;
    let flags = (v4.flags & !family) | super::gateway::family_flags(net, true);
    (
        Endpoint6 {
            addr: ip6.octets(),
            gw: net.gateway6().map(|g| g.octets()).unwrap_or_default(),
            net_id: v4.net_id,
            flags,
            mac: a.mac,
            gw_mac: net.bridge_mac,
        },
        Addr6 {
            net_id: v4.net_id,
            ifindex: a.host_ifindex,
            flags,
            mac: a.mac,
            gw_mac: net.bridge_mac,
        },
    )
}

/// The IPv4 addresses the endpoint map knows attachment `a` by: its address and its
/// IPv4 `--link-local-ip`s (the same endpoint: it may send with them, and others reach
/// it there).
fn endpoint_keys(a: &Attachment) -> impl Iterator<Item = u32> + '_ {
    a.ipv4()
        .map(ip_key)
        .into_iter()
        .chain(a.link_local_ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(ip_key(*v4)),
            IpAddr::V6(_) => None,
        }))
}

impl Datapath {
    /// Writes `a`'s entries (IPv4, and IPv6 if it has an IPv6 address).
    pub fn set_endpoint(&mut self, a: &Attachment, net: &Network) -> anyhow::Result<()> {
        for k in endpoint_keys(a) {
            self.endpoints.insert(k, endpoint_value(a, net), 0)?;
        }
        if let Some(ip6) = a.ip6 {
            let (ep, addr) = endpoint6_values(a, net, ip6);
            self.endpoints6.insert(a.host_ifindex, ep, 0)?;
            self.addrs6.insert(ip6.octets(), addr, 0)?;
        }
        Ok(())
    }

    pub fn remove_endpoint(&mut self, a: &Attachment) {
        for k in endpoint_keys(a) {
            let _ = self.endpoints.remove(&k);
        }
        if let Some(ip6) = a.ip6 {
            let _ = self.endpoints6.remove(&a.host_ifindex);
            let _ = self.addrs6.remove(&ip6.octets());
        }
    }

    /// Whether the endpoint map holds `a`'s entry on `net` as `set_endpoint` wrote it.
    pub fn has_endpoint(&self, a: &Attachment, net: &Network) -> bool {
        let Some(ip) = a.ipv4() else {
            // IPv6-only: its entries are the IPv6 maps'.
            return self.endpoints6.get(&a.host_ifindex, 0).is_ok();
        };
        self.endpoints
            .get(&ip_key(ip), 0)
            .is_ok_and(|v| v == endpoint_value(a, net))
    }

    pub fn sync_endpoints(&mut self, want: &[(&Attachment, &Network)]) -> anyhow::Result<()> {
        let want = want
            .iter()
            .flat_map(|(a, n)| endpoint_keys(a).map(|k| (k, endpoint_value(a, n))))
            .collect();
        sync(&mut self.endpoints, &want)?;
        Ok(())
    }

    /// Makes the link map hold exactly the `--link` exceptions `want`: (linking
    /// container, target, the target's port and protocol). Each opens the way there and
    /// the replies back, nothing else.
    pub fn sync_links(&mut self, want: &[LinkRule]) -> anyhow::Result<()> {
        let mut m = StdHashMap::new();
        for r in want {
            let proto = ipproto(r.proto.into());
            let port = r.port.to_be();
            let (from, to) = (ip_key(r.from), ip_key(r.to));
            m.insert(
                LinkKey {
                    src: from,
                    dst: to,
                    port,
                    proto,
                    dir: 0,
                },
                1u32,
            );
            m.insert(
                LinkKey {
                    src: to,
                    dst: from,
                    port,
                    proto,
                    dir: 1,
                },
                1u32,
            );
        }
        sync(&mut self.links, &m)?;
        Ok(())
    }

    /// Makes the IPv6 endpoint maps hold exactly `want`: each attachment with its IPv6
    /// address, by host-side ifindex (what it may send as) and by address (whose it is).
    pub fn sync_endpoints6(
        &mut self,
        want: &[(&Attachment, &Network, Ipv6Addr)],
    ) -> anyhow::Result<()> {
        let mut by_if = StdHashMap::new();
        let mut by_addr = StdHashMap::new();
        for (a, n, ip6) in want {
            let (ep, addr) = endpoint6_values(a, n, *ip6);
            by_if.insert(a.host_ifindex, ep);
            by_addr.insert(ip6.octets(), addr);
        }
        sync(&mut self.endpoints6, &by_if)?;
        sync(&mut self.addrs6, &by_addr)?;
        Ok(())
    }

    /// Makes the overlay map hold exactly the containers of `remote` whose network this
    /// node has (with its local number), tunnelled through the VXLAN device
    /// `vxlan_ifindex` (None: no cluster, no entries).
    pub fn sync_overlay_peers(
        &mut self,
        remote: &[RemoteEndpoint],
        networks: &[Network],
        vxlan_ifindex: Option<u32>,
    ) -> anyhow::Result<()> {
        let mut want = StdHashMap::new();
        if let Some(ifindex) = vxlan_ifindex {
            for r in remote {
                let Some(net) = networks
                    .iter()
                    .find(|n| n.id == r.network && n.is_multi_host())
                else {
                    continue;
                };
                want.insert(
                    ip_key(r.ip),
                    OverlayPeer {
                        vtep: ip_key(r.vtep),
                        vni: r.vni,
                        net_id: net.net_id,
                        vxlan_ifindex: ifindex,
                    },
                );
            }
        }
        sync(&mut self.overlay_peers, &want)?;
        Ok(())
    }

    /// Packets and bytes through `m` so far (both directions, all CPUs).
    pub fn port_counters(&self, m: &PortMapping) -> PortCounters {
        self.port_stats.get(m)
    }

    pub fn endpoint_entries(&self) -> usize {
        self.endpoints.keys().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_value_carries_policy_bits_and_recorded_plumbing() {
        let net = Network {
            net_id: 7,
            masquerade: true,
            internal: false,
            icc: false,
            bridge_mac: [2, 0, 0, 0, 0, 1],
            ..crate::model::test_network()
        };
        let a = Attachment {
            ip: Ipv4Addr::new(10, 1, 0, 2),
            mac: [2, 0x42, 10, 1, 0, 2],
            host_ifindex: 42,
            ..crate::model::test_attachment()
        };
        let ep = endpoint_value(&a, &net);
        assert_eq!(ep.ifindex, 42);
        assert_eq!(ep.net_id, 7);
        assert_eq!(ep.flags, EP_F_MASQUERADE);
        assert_eq!(ep.gw_ip, u32::from(Ipv4Addr::new(10, 1, 0, 1)).to_be());
        assert_eq!(ep.gw_mac, [2, 0, 0, 0, 0, 1]);
        let internal = Network {
            internal: true,
            icc: true,
            ..net
        };
        assert_eq!(
            endpoint_value(&a, &internal).flags,
            EP_F_ICC | EP_F_INTERNAL,
            "internal networks never masquerade"
        );
    }
}
