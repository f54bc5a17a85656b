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
        subnet: Some("10.1.0.0/24".parse().expect("subnet")),
        gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
        ip_range: None,
        aux_addresses: BTreeMap::new(),
        user_subnet: true,
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
        ipv6: false,
        subnet6: None,
        gateway6: None,
        ip_range6: None,
        user_subnet6: false,
        more_subnets: Vec::new(),
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
