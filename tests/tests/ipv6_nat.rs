//! End-to-end: the IPv6 datapath of issue #12 in a lab whose uplink has IPv6 (host
//! fd00:199::1, client fd00:199::2): one `-p` publishing on both families with the
//! client's source kept, NAT66 masquerade seen from the client, `[::1]` from the host
//! without a proxy, hairpin, the routed gateway mode, and the guard. No ip6tables or
//! nftables rule in the host namespace.
use netd_tests::{Lab, CLIENT_IP, HOST_IP};
use serde_json::Value;

const HOST6: &str = "fd00:199::1";
const CLIENT6: &str = "fd00:199::2";

/// The peer address a tester server reported ("peer=IP:PORT ..."), brackets removed.
fn peer_ip(reply: &str) -> String {
    let peer = reply
        .trim()
        .trim_start_matches("peer=")
        .split(' ')
        .next()
        .unwrap_or("");
    let (ip, _) = peer.rsplit_once(':').expect("peer=IP:PORT");
    ip.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn assert_rulesets_empty(lab: &Lab) {
    let (ipt, nft) = lab.host_rulesets();
    let ip6t = lab.exec_in(&lab.host, &["ip6tables-save"]);
    let ip6t: Vec<String> = String::from_utf8_lossy(&ip6t.stdout)
        .lines()
        .filter(|l| l.starts_with("-A") || (l.starts_with(':') && l.contains(" - ")))
        .map(String::from)
        .collect();
    assert!(
        ipt.is_empty() && nft.is_empty() && ip6t.is_empty(),
        "host rulesets not empty:\n{ipt}\n{nft}\n{ip6t:?}"
    );
}

/// A dual-stack network `name` with IPv4 `v4` and IPv6 `v6` subnets (and `extra` options).
fn v6_network(lab: &Lab, name: &str, v4: &str, v6: &str, extra: &[&str]) {
    let bridge = format!("com.docker.network.bridge.name=ndt-{name}");
    let mut args = vec![
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, "-o", &bridge,
    ];
    args.extend_from_slice(extra);
    args.push(name);
    lab.netd_ok(&args);
}

/// `netd run -d` of a tester server on `net`; returns (IPv4, IPv6) of the container.
fn run6(lab: &Lab, name: &str, net: &str, publish: &[&str], server: &[&str]) -> (String, String) {
    let tester = netd_tests::tester_bin();
    let mut args = vec!["run", "-d", "--name", name, "--network", net];
    for p in publish {
        args.extend_from_slice(&["-p", p]);
    }
    args.push("--");
    args.push(tester.to_str().expect("utf-8 path"));
    args.extend_from_slice(server);
    lab.netd_ok(&args);
    let v = lab.inspect(name);
    let n: &Value = &v["NetworkSettings"]["Networks"][net];
    let ns = format!("{}{name}", lab.container_prefix());
    lab.wait_listening(&ns, server);
    (
        n["IPAddress"].as_str().expect("IPv4").to_string(),
        n["GlobalIPv6Address"].as_str().expect("IPv6").to_string(),
    )
}

fn counter(lab: &Lab, name: &str) -> u64 {
    lab.stats()["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn one_publish_serves_both_families_and_keeps_the_clients_v6_source() {
    let lab = Lab::new();
    v6_network(&lab, "pub6", "10.93.0.0/24", "fd00:93::/64", &[]);
    run6(&lab, "web", "pub6", &["8080:80"], &["serve-tcp6", "80"]);
    // IPv6 through the published port: the container sees the client's own address.
    let got = lab
        .from_client(&["tcp", &format!("[{HOST6}]:8080")])
        .expect("tcp over IPv6 to the published port");
    assert_eq!(peer_ip(&got), CLIENT6, "{got}");
    // The same -p over IPv4 (the server on [::] sees it as ::ffff:a.b.c.d).
    let got = lab
        .from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .expect("tcp over IPv4 to the published port");
    assert_eq!(peer_ip(&got), format!("::ffff:{CLIENT_IP}"), "{got}");
    let port = lab.netd_ok(&["port", "web"]);
    assert!(port.contains("[::]:8080"), "{port}");
    assert!(port.contains("0.0.0.0:8080"), "{port}");
    let ct = lab.netd_ok(&["conntrack", "ls"]);
    assert!(ct.contains(CLIENT6) && ct.contains("dnat"), "{ct}");
    assert!(counter(&lab, "dnat") >= 2);
    assert_rulesets_empty(&lab);
}

#[test]
fn containers_reach_outside_over_ipv6_masqueraded_to_the_uplink() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp6", "7000"]);
    lab.serve_in_client(&["serve-udp6", "7001"]);
    v6_network(&lab, "out6", "10.94.0.0/24", "fd00:94::/64", &[]);
    run6(&lab, "app", "out6", &[], &["serve-tcp6", "80"]);
    let got = lab
        .from_container("app", &["tcp", &format!("[{CLIENT6}]:7000")])
        .expect("tcp out over IPv6");
    assert_eq!(
        peer_ip(&got),
        HOST6,
        "the client sees the uplink's address: {got}"
    );
    let got = lab
        .from_container("app", &["udp", &format!("[{CLIENT6}]:7001"), "x"])
        .expect("udp out over IPv6");
    assert_eq!(peer_ip(&got), HOST6, "{got}");
    let o = lab.netd(&["exec", "app", "ping", "-6", "-c", "1", "-W", "2", CLIENT6]);
    assert!(
        o.status.success(),
        "ping -6: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let ct = lab.netd_ok(&["conntrack", "ls"]);
    assert!(ct.contains(HOST6) && ct.contains("snat"), "{ct}");
    assert!(counter(&lab, "snat") >= 3 && counter(&lab, "snat_reply") >= 3);
    assert_rulesets_empty(&lab);
}

#[test]
fn host_reaches_v6_published_ports_on_loopback_without_a_proxy_and_hairpin_works() {
    let lab = Lab::new();
    v6_network(&lab, "lo6", "10.95.0.0/24", "fd00:95::/64", &[]);
    let (_, web6) = run6(&lab, "web", "lo6", &["8080:80"], &["serve-tcp6", "80"]);
    let (_, other6) = run6(&lab, "other", "lo6", &[], &["serve-tcp6", "80"]);
    for target in ["[::1]:8080", &format!("[{HOST6}]:8080")] {
        let got = lab
            .from_lab_cgroup(&lab.host, &["tcp", target])
            .unwrap_or_else(|e| panic!("{target} from the host: {e}"));
        assert!(got.starts_with("peer="), "{target}: {got}");
    }
    // UDP: replies appear to come from the address the application sent to.
    // (Not on 53: the network's embedded DNS holds 127.0.0.11:53 in the container, and
    // a dual-stack [::]:53 socket would collide with it.)
    run6(
        &lab,
        "dns",
        "lo6",
        &["5353:5300/udp"],
        &["serve-udp6", "5300"],
    );
    let got = lab
        .from_lab_cgroup(&lab.host, &["udp", "[::1]:5353", "q"])
        .expect("udp to [::1] from the host");
    assert!(got.trim_end().ends_with("from=[::1]:5353"), "{got}");
    // No proxy: nothing listens in the host namespace.
    let l = lab.exec_in(&lab.host, &["ss", "-H", "-tlnp"]);
    assert!(String::from_utf8_lossy(&l.stdout).trim().is_empty());
    // Hairpin over IPv6: from another container its own source stays; to itself, the
    // gateway's.
    let target = format!("[{HOST6}]:8080");
    let got = lab
        .from_container("other", &["tcp", &target])
        .expect("hairpin from another container");
    assert_eq!(peer_ip(&got), other6);
    let got = lab
        .from_container("web", &["tcp", &target])
        .expect("hairpin to itself");
    assert_eq!(peer_ip(&got), "fd00:95::1", "to itself from the gateway");
    assert_ne!(peer_ip(&got), web6);
    assert!(counter(&lab, "hairpin") >= 2);
}

#[test]
fn routed_gateway_mode_keeps_addresses_and_nat_networks_stay_unreachable() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp6", "7000"]);
    v6_network(
        &lab,
        "rt6",
        "10.96.0.0/24",
        "fd00:96::/64",
        &["-o", "com.docker.network.bridge.gateway_mode_ipv6=routed"],
    );
    v6_network(&lab, "nat6", "10.97.0.0/24", "fd00:97::/64", &[]);
    // Docker 28's routed mode opens the published container port, nothing else.
    let (_, routed) = run6(&lab, "r", "rt6", &["8086:80"], &["serve-tcp6", "80"]);
    let (_, closed) = run6(&lab, "c", "rt6", &[], &["serve-tcp6", "80"]);
    let (_, natted) = run6(&lab, "n", "nat6", &[], &["serve-tcp6", "80"]);
    // The outside routes both /64s to the host, as a routed deployment would.
    for subnet in ["fd00:96::/64", "fd00:97::/64"] {
        let o = lab.exec_in(
            &lab.client,
            &["ip", "-6", "route", "add", subnet, "via", HOST6],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let got = lab
        .from_container("r", &["tcp", &format!("[{CLIENT6}]:7000")])
        .expect("routed container out");
    assert_eq!(peer_ip(&got), routed, "routed: the container's own address");
    let got = lab
        .from_client(&["tcp", &format!("[{routed}]:80")])
        .expect("the client reaches a routed container directly");
    assert_eq!(peer_ip(&got), CLIENT6);
    let before = counter(&lab, "guard_drop_unpublished");
    assert!(
        lab.from_client(&["tcp", &format!("[{closed}]:80")])
            .is_err(),
        "a routed network's unpublished port is closed from outside"
    );
    assert!(counter(&lab, "guard_drop_unpublished") > before);
    // Another network's container reaches the published container port directly.
    let got = lab
        .from_container("n", &["tcp", &format!("[{routed}]:80")])
        .expect("another network to a routed container's published port");
    assert!(peer_ip(&got).starts_with("fd00:97::"), "{got}");
    assert!(lab
        .from_container("n", &["tcp", &format!("[{closed}]:80")])
        .is_err());
    // A NAT66 network's container is not reachable straight from outside.
    let before = counter(&lab, "guard_drop_to_container");
    assert!(lab
        .from_client(&["tcp", &format!("[{natted}]:80")])
        .is_err());
    assert!(counter(&lab, "guard_drop_to_container") > before);
    assert_rulesets_empty(&lab);
}

#[test]
fn packet_too_big_at_the_uplink_reaches_the_container_so_path_mtu_discovery_works() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-udp6", "7001"]);
    v6_network(&lab, "mtu6", "10.98.0.0/24", "fd00:98::/64", &[]);
    run6(&lab, "app", "mtu6", &[], &["serve-tcp6", "80"]);
    // The uplink is narrower than the bridge: the host must say so to the container.
    let o = lab.exec_in(&lab.host, &["ip", "link", "set", "up0", "mtu", "1280"]);
    assert!(o.status.success());
    let big = "x".repeat(1400);
    // The first datagram is too big; the container's kernel learns the path MTU from
    // the host's "packet too big" (the send may then fail with EMSGSIZE: either way).
    let _ = lab.from_container("app", &["udp", &format!("[{CLIENT6}]:7001"), &big]);
    let ns = format!("{}app", lab.container_prefix());
    let route = lab.exec_in(&ns, &["ip", "-6", "route", "get", CLIENT6]);
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(route.contains("mtu 1280"), "no path MTU learned: {route}");
    // Datagrams that fit still leave masqueraded.
    let got = lab
        .from_container("app", &["udp", &format!("[{CLIENT6}]:7001"), "small"])
        .expect("a small datagram");
    assert_eq!(peer_ip(&got), HOST6);
}
