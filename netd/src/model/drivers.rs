//! What the core asks of a network's driver instead of matching its name. This table is
//! the one place a driver is named: a new driver is a row here and, when it plumbs
//! endpoints its own way, a file in `driver/` behind a `Plumbing` of its own.
use crate::error::NetdError;

use super::{
    DRIVER_BRIDGE, DRIVER_HOST, DRIVER_MACVLAN, DRIVER_NULL, DRIVER_OVERLAY, KNOWN_OPTIONS,
    MACVLAN_OPTIONS,
};

/// How the host side of a network is made (`driver::for_network` picks the code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plumbing {
    /// A Linux bridge with a veth per endpoint.
    Bridge,
    /// A bridge on each node, joined to the other nodes' by the node's VXLAN device.
    Overlay,
    /// A macvlan device per endpoint on a parent interface (a VLAN of it, made and
    /// removed with the network when the parent is `IF.VLAN`).
    Macvlan,
    /// Nothing: the built-in `host` and `none` networks.
    Nothing,
}

/// What `--network NAME` gives a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joins {
    /// A namespace of its own with an endpoint on the network.
    Endpoint,
    /// The host's namespace.
    HostNamespace,
    /// A namespace of its own with loopback only.
    Nothing,
}

/// A driver's answers to the core.
#[derive(Debug, PartialEq, Eq)]
pub struct Traits {
    pub name: &'static str,
    pub plumbing: Plumbing,
    pub joins: Joins,
    /// Users create networks of it (`host` and `null` have only their built-in one).
    pub creatable: bool,
    /// Running containers join and leave it (`network connect`), and runtimes attach
    /// endpoints to it (CNI, where it has endpoint programs too).
    pub connect: bool,
    /// Its record lives in the cluster store; every node mirrors it and tunnels to the
    /// other nodes' containers (Docker's scope `global`).
    pub multi_host: bool,
    /// Takes several IPv4 subnets (`--subnet` more than once).
    pub many_subnets: bool,
    /// Takes IPv6 (`--ipv6`).
    pub ipv6: bool,
    /// Its containers' MTU when the network names none: an overlay's VXLAN costs 50
    /// bytes of a 1500-byte underlay (outer IPv4, UDP, VXLAN, inner Ethernet).
    pub default_mtu: Option<u32>,
    /// Its user-defined networks get the embedded DNS server.
    pub dns: bool,
    /// Its host side is a Linux bridge of its own (`com.docker.network.bridge.name`).
    pub bridge: bool,
    /// The endpoint programs run on its endpoints' host side: published ports,
    /// masquerade, isolation and anti-spoofing. A macvlan endpoint has no host side:
    /// its containers are on the parent's segment with their own addresses.
    pub programs: bool,
    /// The `-o` options it takes; any other is an error.
    pub options: &'static [&'static str],
}

const BRIDGE: Traits = Traits {
    name: DRIVER_BRIDGE,
    plumbing: Plumbing::Bridge,
    joins: Joins::Endpoint,
    creatable: true,
    connect: true,
    multi_host: false,
    many_subnets: false,
    ipv6: true,
    default_mtu: None,
    dns: true,
    bridge: true,
    programs: true,
    options: &KNOWN_OPTIONS,
};

/// The drivers netd has, in the order error messages list them.
pub static DRIVERS: [Traits; 5] = [
    BRIDGE,
    // A bridge on each node; the datapath's overlay programs carry it between nodes
    // (driver/overlay.rs).
    Traits {
        name: DRIVER_OVERLAY,
        plumbing: Plumbing::Overlay,
        connect: false,
        multi_host: true,
        many_subnets: true,
        ipv6: false,
        default_mtu: Some(1450),
        ..BRIDGE
    },
    // Docker's macvlan in bridge mode: containers on the parent's L2 segment, reached
    // straight at their addresses; no NAT, no published ports.
    Traits {
        name: DRIVER_MACVLAN,
        plumbing: Plumbing::Macvlan,
        bridge: false,
        programs: false,
        options: &MACVLAN_OPTIONS,
        ..BRIDGE
    },
    Traits {
        name: DRIVER_HOST,
        plumbing: Plumbing::Nothing,
        joins: Joins::HostNamespace,
        creatable: false,
        connect: false,
        ipv6: false,
        dns: false,
        bridge: false,
        programs: false,
        ..BRIDGE
    },
    Traits {
        name: DRIVER_NULL,
        plumbing: Plumbing::Nothing,
        joins: Joins::Nothing,
        creatable: false,
        connect: false,
        ipv6: false,
        dns: false,
        bridge: false,
        programs: false,
        ..BRIDGE
    },
];

/// The traits of driver `name`, None for a driver netd does not have.
pub fn driver_traits(name: &str) -> Option<&'static Traits> {
    DRIVERS.iter().find(|t| t.name == name)
}

/// Every driver netd has (Docker's `/info` lists them).
pub fn driver_names() -> Vec<&'static str> {
    DRIVERS.iter().map(|t| t.name).collect()
}

/// The drivers users may create networks of, for error messages.
pub fn creatable_drivers() -> Vec<&'static str> {
    DRIVERS
        .iter()
        .filter(|t| t.creatable)
        .map(|t| t.name)
        .collect()
}

/// `IF` or `IF.VLAN` as the interface and the VLAN id (1-4094).
pub fn split_parent(parent: &str) -> Result<(&str, Option<u16>), NetdError> {
    if parent.len() > 15 {
        return Err(NetdError::InvalidArgument(format!(
            "invalid parent {parent:?}: an interface name has at most 15 characters"
        )));
    }
    let Some((base, vlan)) = parent.rsplit_once('.') else {
        return Ok((parent, None));
    };
    match vlan.parse::<u16>() {
        Ok(id) if (1..=4094).contains(&id) && !base.is_empty() => Ok((base, Some(id))),
        _ => Err(NetdError::InvalidArgument(format!(
            "invalid parent {parent:?}: IF.VLAN with a VLAN id from 1 to 4094"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_driver_is_found_by_its_name_and_only_users_drivers_are_creatable() {
        for t in &DRIVERS {
            assert_eq!(driver_traits(t.name), Some(t));
        }
        assert!(driver_traits("ipvlan").is_none());
        assert_eq!(creatable_drivers(), ["bridge", "overlay", "macvlan"]);
        let overlay = driver_traits(DRIVER_OVERLAY).unwrap();
        assert!(overlay.multi_host && overlay.many_subnets && !overlay.ipv6);
        assert_eq!(
            driver_traits(DRIVER_HOST).unwrap().joins,
            Joins::HostNamespace
        );
    }

    #[test]
    fn parents_are_an_interface_or_one_of_its_vlans() {
        assert_eq!(split_parent("eth0").unwrap(), ("eth0", None));
        assert_eq!(split_parent("eth0.42").unwrap(), ("eth0", Some(42)));
        for bad in [
            "eth0.0",
            "eth0.4095",
            "eth0.x",
            ".42",
            "averyveryverylongname",
        ] {
            assert!(split_parent(bad).is_err(), "{bad}");
        }
    }
}
