//! A fixture: the datapath's maps pinned in a bpffs dir and a network namespace of its
//! own (with an uplink, routes and neighbours the tests rely on), both removed on drop;
//! and the helpers that run programs on it and read its counters.
use std::{net::Ipv4Addr, process::Command};

use netd::{
    datapath::{config_flags, Datapath, Settings},
    model::{Attachment, Network, PortMapping, Proto, Subnet},
};
use netd_common::{prog_names::ENDPOINT_EGRESS, EP_F_ICC, EP_F_INTERNAL, EP_F_MASQUERADE};

pub const TC_ACT_OK: u32 = 0;

pub const TC_ACT_SHOT: u32 = 2;

pub const TC_ACT_REDIRECT: u32 = 7;

pub const HOST: [u8; 4] = [10, 0, 0, 1];

pub const NEXT_HOP: [u8; 4] = [10, 0, 0, 2];

pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub const CLIENT: [u8; 4] = [192, 0, 2, 7];

/// A client routed through UNRESOLVED_HOP, a next hop without a neighbour entry.
pub const FAR_CLIENT: [u8; 4] = [198, 51, 100, 7];

pub const UNRESOLVED_HOP: &str = "10.0.0.3";

pub const CONTAINER: [u8; 4] = [172, 17, 0, 2];

pub const CONTAINER_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 2];

pub const OTHER: [u8; 4] = [172, 17, 0, 3];

pub const OTHER_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 3];

pub const GATEWAY: [u8; 4] = [172, 17, 0, 1];

pub const GW_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];

pub const SNAT_RANGE: (u16, u16) = (61000, 61003);

/// A pinned-map instance in its own bpffs dir and network namespace, removed on drop.
pub struct Fixture {
    pub dp: Datapath,
    pub dir: std::path::PathBuf,
    pub netns: NsGuard,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes the fixture's namespace and bpffs dir even when setup panics half-way.
pub struct NsGuard(pub String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

pub fn ifindex_of(ns: &str, dev: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", dev])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("ifindex")
}

/// Creates namespace `name` with uplink `up0` = 10.0.0.1/24, a default route via
/// 10.0.0.2 (a permanent neighbour), forwarding on, and a route via a next hop that never
/// resolves; moves this thread into it and returns the uplink's ifindex.
pub fn enter_fixture_netns(name: &str) -> u32 {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
    ip(&["netns", "add", name]);
    ip(&[
        "-n", name, "link", "add", "up0", "type", "veth", "peer", "name", "cl0",
    ]);
    ip(&["-n", name, "addr", "add", "10.0.0.1/24", "dev", "up0"]);
    ip(&["-n", name, "link", "set", "up0", "up"]);
    ip(&["-n", name, "link", "set", "cl0", "up"]);
    ip(&["-n", name, "link", "set", "lo", "up"]);
    ip(&["-n", name, "route", "add", "default", "via", "10.0.0.2"]);
    // A remote network behind a next hop that has never answered ARP: the FIB finds the
    // route but no neighbour entry (nothing here ever resolves it, so it stays so).
    ip(&[
        "-n",
        name,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        UNRESOLVED_HOP,
    ]);
    ip(&[
        "-n",
        name,
        "neigh",
        "add",
        "10.0.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "up0",
        "nud",
        "permanent",
    ]);
    // Stand-ins for the containers' host-side veths (frames "arrive" on them).
    for dev in ["ve1", "ve2"] {
        ip(&[
            "-n",
            name,
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{dev}p"),
        ]);
        ip(&["-n", name, "link", "set", dev, "up"]);
    }
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("netns");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    // /proc/sys/net follows the writer's namespace: this thread's now.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward");
    let out = Command::new("ip")
        .args(["-n", name, "-o", "link", "show", "up0"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("up0 ifindex")
}

pub fn fixture(name: &str, fast_path: bool) -> Fixture {
    fixture_with(name, fast_path, SNAT_RANGE)
}

pub fn fixture_with(name: &str, fast_path: bool, snat: (u16, u16)) -> Fixture {
    let netns = NsGuard(format!("ndt-{}-pkt-{name}", std::process::id()));
    let uplink = enter_fixture_netns(&netns.0);
    let dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/ndt-{}-pkt-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut dp = Datapath::load(&dir, 4096).expect("loading the datapath (root? bpffs?)");
    let flags = if fast_path {
        config_flags::FAST_PATH
    } else {
        0
    };
    configure(&mut dp, uplink, flags, snat);
    dp.sync_local_addrs(&[Ipv4Addr::from(HOST), Ipv4Addr::from(GATEWAY)], &[])
        .unwrap();
    let (ve1, ve2) = (ifindex_of(&netns.0, "ve1"), ifindex_of(&netns.0, "ve2"));
    let net = network(1, "172.17.0.0/16", EP_F_MASQUERADE | EP_F_ICC);
    dp.sync_endpoints(&[
        (&attachment(CONTAINER, CONTAINER_MAC, ve1), &net),
        (&attachment(OTHER, OTHER_MAC, ve2), &net),
    ])
    .unwrap();
    let mut f = Fixture { dp, dir, netns };
    publish(&mut f, [0; 4], 8080, 80, Proto::Tcp);
    publish(&mut f, [0; 4], 5353, 53, Proto::Udp);
    f
}

/// Runs endpoint_egress on `frame` as a container sends it: from its own veth, with its
/// own MAC (chosen by the frame's source address among the fixture's endpoints).
pub fn egress(f: &Fixture, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let mut frame = frame.to_vec();
    let src: [u8; 4] = frame[26..30].try_into().unwrap();
    let (dev, mac) = if src == OTHER {
        ("ve2", OTHER_MAC)
    } else {
        ("ve1", CONTAINER_MAC)
    };
    frame[6..12].copy_from_slice(&mac);
    f.dp.test_run_on(ENDPOINT_EGRESS, &frame, Some(ifindex_of(&f.netns.0, dev)))
}

pub fn publish(f: &mut Fixture, host_ip: [u8; 4], host_port: u16, cport: u16, proto: Proto) {
    let m = PortMapping {
        host_ip: Ipv4Addr::from(host_ip).into(),
        host_port,
        container_port: cport,
        proto,
    };
    f.dp.publish(&m, Ipv4Addr::from(CONTAINER)).unwrap();
}

/// The datapath's configuration: uplink `uplink`, the host address, `flags`
/// (config_flags), the masquerade range.
pub fn configure(dp: &mut Datapath, uplink: u32, flags: u32, snat: (u16, u16)) {
    dp.configure(&Settings {
        uplink_ifindex: uplink,
        uplink_ip: Ipv4Addr::from(HOST),
        flags,
        snat_ports: snat,
    })
    .unwrap();
}

/// A network as the maps see it: id, subnet and policy bits (EP_F_*: masquerade, icc,
/// internal).
pub fn network(net_id: u32, subnet: &str, flags: u32) -> Network {
    Network {
        id: format!("{net_id:064}"),
        name: format!("net{net_id}"),
        driver: "bridge".into(),
        net_id,
        bridge: "br".into(),
        bridge_mac: GW_MAC,
        subnets: vec![Subnet {
            subnet: subnet.parse().unwrap(),
            gateway: Ipv4Addr::from(GATEWAY).into(),
            ip_range: None,
            user: true,
        }],
        aux_addresses: Default::default(),
        internal: flags & EP_F_INTERNAL != 0,
        icc: flags & EP_F_ICC != 0,
        masquerade: flags & EP_F_MASQUERADE != 0,
        host_binding_ipv4: Ipv4Addr::UNSPECIFIED,
        mtu: None,
        labels: Default::default(),
        options: Default::default(),
        builtin: false,
        created: 0,
        attachable: false,
        vni: 0,
        ipam_options: Default::default(),
    }
}

pub fn attachment(ip: [u8; 4], mac: [u8; 6], host_ifindex: u32) -> Attachment {
    Attachment {
        network: String::new(),
        ifname: "eth0".into(),
        ip: Ipv4Addr::from(ip),
        mac,
        veth: String::new(),
        aliases: Vec::new(),
        host_ifindex,
        requested_ip: None,
        ip6: None,
        requested_ip6: None,
        link_local_ips: Vec::new(),
        gw_priority: 0,
        driver_opts: Default::default(),
        user_mac: false,
    }
}

/// Every conntrack entry (both maps).
pub fn conntrack(dp: &Datapath) -> Vec<(netd_common::CtKey, netd_common::CtEntry)> {
    dp.conntrack().entries().unwrap()
}

pub fn counter(dp: &Datapath, name: &str) -> u64 {
    dp.stats()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or(0)
}

/// The fixture's next hop for FAR_CLIENT has no neighbour entry, and none appears.
pub fn assert_unresolved(f: &Fixture) {
    let out = Command::new("ip")
        .args(["-n", &f.netns.0, "neigh", "show", UNRESOLVED_HOP])
        .output()
        .expect("ip neigh");
    let neigh = String::from_utf8_lossy(&out.stdout);
    assert!(
        neigh.trim().is_empty() || neigh.contains("FAILED") || neigh.contains("INCOMPLETE"),
        "the next hop got resolved, the fixture proves nothing: {neigh}"
    );
}

pub const XDP_DROP: u32 = 1;

pub const XDP_PASS: u32 = 2;

/// Re-registers the fixture's endpoints with other networks and flags.
pub fn set_endpoints(f: &mut Fixture, container: (u32, u32), other: (u32, u32)) {
    let (ve1, ve2) = (ifindex_of(&f.netns.0, "ve1"), ifindex_of(&f.netns.0, "ve2"));
    let (n1, n2) = (
        network(container.0, "172.17.0.0/16", container.1),
        network(other.0, "172.17.0.0/16", other.1),
    );
    f.dp.sync_endpoints(&[
        (&attachment(CONTAINER, CONTAINER_MAC, ve1), &n1),
        (&attachment(OTHER, OTHER_MAC, ve2), &n2),
    ])
    .unwrap();
}

/// The counters that moved between two readings, with how much.
pub fn moved(
    before: &[(&'static str, u64)],
    after: &[(&'static str, u64)],
) -> Vec<(&'static str, u64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| (a.0, a.1 - b.1))
        .collect()
}
