//! The IPv6 NAT's maps, spoken in domain types: published ports on IPv6 host addresses
//! (`PORTS6`), the host's own IPv6 addresses (`LOCAL_ADDRS6`), the subnets of IPv6
//! networks (`SUBNETS6`) and the NAT66 source (`CONFIG6`). The entries mean what their
//! IPv4 counterparts in `maps` mean; addresses are the 16 bytes of the wire, ports are
//! network byte order.
use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, Ipv6Addr},
};

use anyhow::anyhow;
use netd_common::{Backend6, Config6, PortKey6};

use super::{maps::sync, Datapath};
use crate::model::{Network, PortMapping};

/// The IPv6 port map's key of `m`: (protocol, host address or :: for every one, host
/// port). None for a mapping on an IPv4 host address.
pub fn port_key6(m: &PortMapping) -> Option<PortKey6> {
    let IpAddr::V6(host) = m.host_ip else {
        return None;
    };
    Some(PortKey6 {
        host_ip: host.octets(),
        host_port: m.host_port.to_be(),
        proto: super::ipproto(m.proto.into()),
        _pad: 0,
    })
}

fn backend6(m: &PortMapping, container_ip: Ipv6Addr) -> Backend6 {
    Backend6 {
        ip: container_ip.octets(),
        port: m.container_port.to_be(),
        _pad: 0,
    }
}

/// `m`'s IPv6 key, or the error of a mapping that reached the IPv6 side by mistake.
fn key6(m: &PortMapping) -> anyhow::Result<PortKey6> {
    port_key6(m).ok_or_else(|| anyhow!("port mapping {m} is not on an IPv6 host address"))
}

/// The IPv6 subnet trie's entry of `net`: protected (packets from outside straight to
/// a container are dropped) when its IPv6 side is NAT66 (gateway mode `nat`) or it is
/// internal; routed networks' subnets are reachable.
fn subnet6_entry(net: &Network) -> Option<((u32, [u8; 16]), u32)> {
    // A macvlan network's subnet is its parent's segment, whose hosts are no containers.
    if !net.ipv6 || !net.traits().programs {
        return None;
    }
    let s = net.subnet6?;
    let flags = super::gateway::subnet_flags(net, true);
    Some((
        (s.prefix() as u32, s.network().octets()),
        net.net_id | flags,
    ))
}

/// Whether `ip` belongs in the local address map: global and unique-local addresses,
/// not link-local (fe80::/10), loopback or multicast ones, which no published port is
/// reached on from outside.
pub fn is_local6_candidate(ip: &Ipv6Addr) -> bool {
    let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
    !(link_local || ip.is_loopback() || ip.is_multicast() || ip.is_unspecified())
}

impl Datapath {
    /// Publishes the IPv6 mapping `m`, leading to `container_ip`.
    pub(super) fn publish6(
        &mut self,
        m: &PortMapping,
        container_ip: Ipv6Addr,
    ) -> anyhow::Result<()> {
        self.ports6.insert(key6(m)?, backend6(m, container_ip), 0)?;
        Ok(())
    }

    /// Removes the IPv6 mapping `m`; returns the container address it led to.
    pub(super) fn unpublish6(&mut self, m: &PortMapping) -> Option<IpAddr> {
        let k = port_key6(m)?;
        let to = self.ports6.get(&k, 0).ok();
        let _ = self.ports6.remove(&k);
        to.map(|b| IpAddr::V6(Ipv6Addr::from(b.ip)))
    }

    pub(super) fn has_port6(&self, m: &PortMapping, container_ip: Ipv6Addr) -> bool {
        port_key6(m).is_some_and(|k| {
            self.ports6
                .get(&k, 0)
                .is_ok_and(|v| v == backend6(m, container_ip))
        })
    }

    /// Makes the IPv6 port map hold exactly `want` (mapping, container address).
    pub(super) fn sync_ports6(&mut self, want: &[(&PortMapping, Ipv6Addr)]) -> anyhow::Result<()> {
        let mut m = StdHashMap::new();
        for (p, ip) in want {
            m.insert(key6(p)?, backend6(p, *ip));
        }
        sync(&mut self.ports6, &m)?;
        Ok(())
    }

    pub(super) fn port_entries6(&self) -> usize {
        self.ports6.keys().flatten().count()
    }

    /// The IPv6 subnet trie from the networks.
    pub fn sync_subnets6(&mut self, networks: &[Network]) -> anyhow::Result<()> {
        let want = networks.iter().filter_map(subnet6_entry).collect();
        sync(&mut self.subnets6, &want)?;
        Ok(())
    }

    /// The host's own IPv6 addresses (global and ULA; see `is_local6_candidate`): a port
    /// published on :: answers on each.
    pub fn sync_local_addrs6(&mut self, addrs: &[Ipv6Addr]) -> anyhow::Result<()> {
        let want = addrs
            .iter()
            .filter(|a| is_local6_candidate(a))
            .map(|a| (a.octets(), 1u32))
            .collect();
        sync(&mut self.local6, &want)?;
        Ok(())
    }

    /// The NAT66 source: the uplink's global or unique-local address, or None (then
    /// NAT66 networks' traffic does not leave the host).
    pub fn set_uplink_ip6(&mut self, ip: Option<Ipv6Addr>) -> anyhow::Result<()> {
        let cfg = Config6 {
            uplink_ip6: ip.map(|i| i.octets()).unwrap_or_default(),
            _reserved: [0; 2],
        };
        self.config6.set(0, cfg, 0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;
    use netd_common::{SUBNET_F_FILTERED, SUBNET_F_PROTECTED};

    fn pm(host: &str, hp: u16, cp: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: host.parse().unwrap(),
            host_port: hp,
            container_port: cp,
            proto,
        }
    }

    #[test]
    fn ports6_keys_carry_the_wire_address_and_network_order_port() {
        let k = port_key6(&pm("::", 8080, 80, Proto::Tcp)).unwrap();
        assert_eq!(k.host_ip, [0; 16], ":: is every host address");
        assert_eq!(k.host_port, 8080u16.to_be());
        assert_eq!(
            k.host_port.to_ne_bytes(),
            [0x1f, 0x90],
            "big endian on the wire"
        );
        assert_eq!(k.proto, netd_common::IPPROTO_TCP);
        let k = port_key6(&pm("fd00:199::1", 53, 5353, Proto::Udp)).unwrap();
        assert_eq!(
            k.host_ip,
            "fd00:199::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(k.proto, netd_common::IPPROTO_UDP);
        assert!(
            port_key6(&pm("0.0.0.0", 8080, 80, Proto::Tcp)).is_none(),
            "IPv4 mappings have no IPv6 key"
        );
        let b = backend6(
            &pm("::", 8080, 80, Proto::Tcp),
            "fd00:1::2".parse().unwrap(),
        );
        assert_eq!(b.port, 80u16.to_be());
        assert_eq!(b.ip[15], 2);
    }

    #[test]
    fn ipv6_subnets_are_protected_unless_routed() {
        let net = Network {
            net_id: 4,
            ipv6: true,
            subnet6: Some("fd00:4::/64".parse().unwrap()),
            masquerade: true,
            ..crate::model::test_network()
        };
        let ((plen, addr), v) = subnet6_entry(&net).unwrap();
        assert_eq!(plen, 64);
        assert_eq!(addr[..4], [0xfd, 0, 0, 4]);
        assert_eq!(v, 4 | SUBNET_F_PROTECTED);
        let mut routed = net.clone();
        routed
            .options
            .insert(crate::model::GATEWAY_MODE_IPV6.into(), "routed".into());
        assert_eq!(
            subnet6_entry(&routed).unwrap().1,
            4 | SUBNET_F_FILTERED,
            "routed: published container ports and replies only"
        );
        let mut open = net.clone();
        open.options.insert(
            crate::model::GATEWAY_MODE_IPV6.into(),
            "nat-unprotected".into(),
        );
        assert_eq!(subnet6_entry(&open).unwrap().1, 4);
        routed.internal = true;
        assert_eq!(
            subnet6_entry(&routed).unwrap().1,
            4 | SUBNET_F_PROTECTED,
            "internal networks are never reachable from outside"
        );
        let v4_only = Network { ipv6: false, ..net };
        assert!(subnet6_entry(&v4_only).is_none());
    }

    #[test]
    fn local_addresses_leave_out_link_local_and_loopback() {
        for (a, want) in [
            ("fd00:199::1", true),
            ("2001:db8::1", true),
            ("fe80::1", false),
            ("febf::1", false),
            ("::1", false),
            ("ff02::1", false),
        ] {
            assert_eq!(is_local6_candidate(&a.parse().unwrap()), want, "{a}");
        }
    }
}
