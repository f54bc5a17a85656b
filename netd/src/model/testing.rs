//! Values with every field set, for unit tests to override.
use super::*;

/// A network and an attachment with every field set, for unit tests to override.
pub fn test_network() -> Network {
    Network {
        id: "n".repeat(64),
        name: "testnet".into(),
        driver: DRIVER_BRIDGE.into(),
        net_id: 1,
        bridge: "br-test".into(),
        bridge_mac: [0; 6],
        subnets: vec![Subnet {
            subnet: "10.1.0.0/24".parse().expect("subnet"),
            gateway: Ipv4Addr::new(10, 1, 0, 1).into(),
            ip_range: None,
            user: true,
        }],
        aux_addresses: BTreeMap::new(),
        internal: false,
        icc: true,
        masquerade: true,
        host_binding_ipv4: Ipv4Addr::UNSPECIFIED,
        mtu: None,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        builtin: false,
        created: 0,
        attachable: false,
        vni: 0,
        ipam_options: BTreeMap::new(),
    }
}

pub fn test_attachment() -> Attachment {
    Attachment {
        network: "n".repeat(64),
        ifname: "eth0".into(),
        ip: Ipv4Addr::new(10, 1, 0, 2),
        mac: mac_for_ip(Ipv4Addr::new(10, 1, 0, 2)),
        veth: "ndvtest00".into(),
        aliases: Vec::new(),
        host_ifindex: 0,
        requested_ip: None,
        ip6: None,
        requested_ip6: None,
        link_local_ips: Vec::new(),
        gw_priority: 0,
        driver_opts: BTreeMap::new(),
        user_mac: false,
    }
}

/// A running container with every field set (`id`, `name`, no namespace, no
/// attachment), for unit tests to override.
pub fn test_container(id: &str, name: &str) -> Container {
    Container {
        id: id.into(),
        name: name.into(),
        hostname: None,
        mode: NetMode::Bridge,
        netns: None,
        attachments: Vec::new(),
        ports: Vec::new(),
        cmd: Vec::new(),
        state: ContainerState::Running,
        pid: None,
        pid_start: None,
        exit_code: None,
        auto_remove: false,
        created: 0,
        started: None,
        finished: None,
        labels: BTreeMap::new(),
        exposed: Vec::new(),
        origin: Origin::Netd,
        dns: DnsConfig::default(),
        links: Vec::new(),
        config: Default::default(),
    }
}

/// A user subnet of either family with its first address as the gateway.
pub fn test_subnet(cidr: &str) -> Subnet {
    let subnet: ipnetwork::IpNetwork = cidr.parse().expect("subnet");
    let gateway = match subnet {
        ipnetwork::IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)),
        ipnetwork::IpNetwork::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)),
    };
    Subnet {
        subnet,
        gateway,
        ip_range: None,
        user: true,
    }
}

/// `test_network` with these subnets instead of its own.
pub fn test_network_on(cidrs: &[&str]) -> Network {
    Network {
        subnets: cidrs.iter().map(|c| test_subnet(c)).collect(),
        ..test_network()
    }
}

/// `test_network` with an IPv6 subnet (fd00:1::/64) beside its IPv4 one.
pub fn test_network6() -> Network {
    test_network_on(&["10.1.0.0/24", "fd00:1::/64"])
}
