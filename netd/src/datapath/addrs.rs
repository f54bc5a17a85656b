//! The addresses the maps know by family: container subnets (`NETD_SUBNETS`,
//! `NETD_SUBNETS6`: what the uplink guard protects, with each network's gateway-mode
//! flags), the host's own addresses (`NETD_LOCAL`, `NETD_LOCAL6`: a port published on
//! the unspecified address answers on each) and the NAT66 source (`NETD_CONFIG6`).
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::Ipv4Network;
use netd_common::Config6;

use super::{sync::sync, Datapath};
use crate::model::Network;

/// The subnet trie's entries of `net`, one per subnet: subnets of masquerading and
/// internal networks are unreachable from outside (protected); those of networks
/// without masquerade are routed.
fn subnet_entries(net: &Network) -> Vec<((u32, u32), u32)> {
    if !net.traits().programs {
        // A macvlan network's subnet is its parent's segment: the hosts there are no
        // containers, and the guard must not take them for spoofers.
        return Vec::new();
    }
    let flags = super::gateway::subnet_flags(net, false);
    net.pools::<Ipv4Addr>()
        .iter()
        .map(|p| {
            let s: Ipv4Network = p.subnet;
            (
                (s.prefix() as u32, u32::from(s.network()).to_be()),
                net.net_id | flags,
            )
        })
        .collect()
}

/// The IPv6 subnet trie's entry of `net`: protected (packets from outside straight to
/// a container are dropped) when its IPv6 side is NAT66 (gateway mode `nat`) or it is
/// internal; routed networks' subnets are reachable.
fn subnet6_entry(net: &Network) -> Option<((u32, [u8; 16]), u32)> {
    // A macvlan network's subnet is its parent's segment, whose hosts are no containers.
    if !net.ipv6() || !net.traits().programs {
        return None;
    }
    let s = net.subnet6()?;
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
    /// Both subnet tries (what the uplink guard protects) from the networks.
    pub fn sync_subnets(&mut self, networks: &[Network]) -> anyhow::Result<()> {
        let want = networks.iter().flat_map(subnet_entries).collect();
        sync(&mut self.subnets, &want)?;
        let want6 = networks.iter().filter_map(subnet6_entry).collect();
        sync(&mut self.subnets6, &want6)?;
        Ok(())
    }

    /// The host's own addresses of both families (IPv6: global and ULA ones, see
    /// `is_local6_candidate`): a port published on 0.0.0.0 or :: answers on each.
    pub fn sync_local_addrs(&mut self, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> anyhow::Result<()> {
        let want = v4.iter().map(|a| (u32::from(*a).to_be(), 1u32)).collect();
        sync(&mut self.local, &want)?;
        let want6 = v6
            .iter()
            .filter(|a| is_local6_candidate(a))
            .map(|a| (a.octets(), 1u32))
            .collect();
        sync(&mut self.local6, &want6)?;
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
    use netd_common::{EP_F_MASQUERADE, EP_F_TRACK, SUBNET_F_FILTERED, SUBNET_F_PROTECTED};

    #[test]
    fn subnets_of_nat_and_internal_networks_are_protected() {
        let routed = Network {
            net_id: 3,
            masquerade: false,
            ..crate::model::test_network_on(&["10.9.0.0/24"])
        };
        let ((plen, addr), v) = subnet_entries(&routed)[0];
        assert_eq!((plen, v), (24, 3));
        assert_eq!(addr, u32::from(Ipv4Addr::new(10, 9, 0, 0)).to_be());
        let nat = Network {
            masquerade: true,
            ..routed.clone()
        };
        assert_eq!(subnet_entries(&nat)[0].1, 3 | SUBNET_F_PROTECTED);
        let mut modes = nat.clone();
        for (mode, flags) in [
            ("routed", SUBNET_F_FILTERED),
            ("nat-unprotected", 0),
            ("nat", SUBNET_F_PROTECTED),
        ] {
            modes
                .options
                .insert(crate::model::GATEWAY_MODE_IPV4.into(), mode.into());
            assert_eq!(subnet_entries(&modes)[0].1, 3 | flags, "{mode}");
            let ep = super::super::maps::endpoint_value(&crate::model::test_attachment(), &modes);
            assert_eq!(ep.flags & EP_F_MASQUERADE != 0, mode != "routed", "{mode}");
            assert_eq!(ep.flags & EP_F_TRACK != 0, mode == "routed", "{mode}");
        }
        let none = Network {
            subnets: Vec::new(),
            ..routed
        };
        assert!(subnet_entries(&none).is_empty());
    }

    #[test]
    fn ipv6_subnets_are_protected_unless_routed() {
        let net = Network {
            net_id: 4,
            masquerade: true,
            ..crate::model::test_network_on(&["10.1.0.0/24", "fd00:4::/64"])
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
        let v4_only = Network {
            subnets: net.subnets[..1].to_vec(),
            ..net
        };
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
