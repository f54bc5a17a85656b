//! End-to-end: datagrams larger than the uplink's MTU, which the kernels of the client
//! and the containers send in fragments, through every path of the NAT on both
//! families: a published port and its answer, a container's small query answered in
//! 3,000 bytes, a container's own big datagram (masqueraded), hairpin; and path-MTU
//! discovery of IPv4 through masquerade. Real kernels fragment and reassemble; netd
//! translates each fragment on its own.
use netd_tests::{Lab, CLIENT_IP, HOST_IP};
use serde_json::Value;

const HOST6: &str = "fd00:199::1";
const CLIENT6: &str = "fd00:199::2";

/// A dual-stack network `name` (IPv4 `v4`, IPv6 `v6`).
fn network(lab: &Lab, name: &str, v4: &str, v6: &str) {
    let bridge = format!("com.docker.network.bridge.name=ndt-{name}");
    lab.netd_ok(&[
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, "-o", &bridge, name,
    ]);
}

/// `netd run -d` of a tester server on `net`; returns the container's (IPv4, IPv6).
fn run(lab: &Lab, name: &str, net: &str, publish: &[&str], server: &[&str]) -> (String, String) {
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
    lab.wait_listening(&format!("{}{name}", lab.container_prefix()), server);
    (
        n["IPAddress"].as_str().expect("IPv4").to_string(),
        n["GlobalIPv6Address"].as_str().expect("IPv6").to_string(),
    )
}

/// "peer=IP:PORT got=N" as (IP without brackets, N). A server on [::] sees IPv4 peers
/// as ::ffff:a.b.c.d: the plain address is returned.
fn peer_and_size(reply: &str) -> (String, usize) {
    let mut words = reply.split_whitespace();
    let peer = words
        .next()
        .and_then(|w| w.strip_prefix("peer="))
        .unwrap_or_else(|| panic!("no peer in {reply:?}"));
    let (ip, _) = peer.rsplit_once(':').expect("IP:PORT");
    let got = words
        .find_map(|w| w.strip_prefix("got="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {reply:?}"));
    let ip = ip.trim_matches(['[', ']']);
    (ip.trim_start_matches("::ffff:").to_string(), got)
}

fn counter(lab: &Lab, name: &str) -> u64 {
    lab.stats()["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn a_3000_byte_datagram_reaches_a_published_port_and_its_answer_comes_back() {
    let lab = Lab::new();
    network(&lab, "big", "10.94.0.0/24", "fd00:94::/64");
    run(
        &lab,
        "dns",
        "big",
        &["5353:5353/udp"],
        &["serve-udp6", "5353"],
    );
    for host in [HOST_IP.to_string(), format!("[{HOST6}]")] {
        let got = lab
            .from_client(&["udp-size", &format!("{host}:5353"), "3000"])
            .unwrap_or_else(|e| panic!("through {host}: {e}"));
        let (peer, size) = peer_and_size(&got);
        // The container saw the client's own address and all 3,000 bytes (its echo).
        assert!(size > 3000, "{host}: {got}");
        assert!(peer == CLIENT_IP || peer == CLIENT6, "{host}: {got}");
    }
    assert!(counter(&lab, "fragment_first") >= 4, "{}", lab.stats());
    assert!(counter(&lab, "fragment_followed") >= 4);
    // Each family's published port counts its own packets (a request and its answer at
    // least), the IPv6 one as the IPv4 one.
    let st = lab.stats();
    let ports: Vec<&Value> = st["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter(|p| p["container"] == "dns")
        .collect();
    assert_eq!(ports.len(), 2, "{st}");
    for p in ports {
        assert!(p["packets"].as_u64().unwrap_or(0) >= 2, "{st}");
        assert!(p["bytes"].as_u64().unwrap_or(0) > 2000, "{st}");
    }
}

#[test]
fn a_containers_small_query_is_answered_with_3000_bytes_on_both_families() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-udp-size", "3000", "7003"]);
    network(&lab, "ans", "10.95.0.0/24", "fd00:95::/64");
    run(&lab, "app", "ans", &[], &["serve-tcp6", "80"]);
    for client in [CLIENT_IP.to_string(), format!("[{CLIENT6}]")] {
        let got = lab
            .from_container("app", &["udp-size", &format!("{client}:7003"), "10"])
            .unwrap_or_else(|e| panic!("to {client}: {e}"));
        let (peer, size) = peer_and_size(&got);
        assert_eq!(size, 3000, "{client}: {got}");
        // The server answered the host's address: the query was masqueraded.
        assert!(peer == HOST_IP || peer == HOST6, "{client}: {got}");
    }
}

#[test]
fn a_containers_3000_byte_datagram_leaves_masqueraded_and_hairpins() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-udp6", "7001"]);
    network(&lab, "out", "10.96.0.0/24", "fd00:96::/64");
    run(
        &lab,
        "dns",
        "out",
        &["5353:5353/udp"],
        &["serve-udp6", "5353"],
    );
    run(&lab, "app", "out", &[], &["serve-tcp6", "80"]);
    for client in [CLIENT_IP.to_string(), format!("[{CLIENT6}]")] {
        let got = lab
            .from_container("app", &["udp-size", &format!("{client}:7001"), "3000"])
            .unwrap_or_else(|e| panic!("to {client}: {e}"));
        let (peer, size) = peer_and_size(&got);
        assert!(size > 3000, "{client}: {got}");
        assert!(peer == HOST_IP || peer == HOST6, "{client}: {got}");
    }
    // Hairpin: another container of the network through the host's address.
    for host in [HOST_IP.to_string(), format!("[{HOST6}]")] {
        let got = lab
            .from_container("app", &["udp-size", &format!("{host}:5353"), "3000"])
            .unwrap_or_else(|e| panic!("hairpin through {host}: {e}"));
        assert!(peer_and_size(&got).1 > 3000, "{host}: {got}");
    }
    assert_eq!(counter(&lab, "drop_frag_unknown"), 0, "{}", lab.stats());
}

#[test]
fn fragmentation_needed_at_the_uplink_reaches_a_masqueraded_container() {
    let mut lab = Lab::new();
    // Small answers: the client's own link still has the wider MTU, and a big answer
    // would not fit into the host's narrowed end of it.
    lab.serve_in_client(&["serve-udp-size", "100", "7001"]);
    network(&lab, "mtu4", "10.97.0.0/24", "fd00:97::/64");
    run(&lab, "app", "mtu4", &[], &["serve-tcp6", "80"]);
    // The uplink is narrower than the bridge: the host must say so to the container.
    let o = lab.exec_in(&lab.host, &["ip", "link", "set", "up0", "mtu", "1280"]);
    assert!(o.status.success());
    // The first datagram (DF, as Linux sends UDP within the known path MTU) is too
    // big; the container's kernel learns the path MTU from the host's answer (the
    // send may then fail with EMSGSIZE: either way).
    let _ = lab.from_container("app", &["udp-size", &format!("{CLIENT_IP}:7001"), "1400"]);
    let ns = format!("{}app", lab.container_prefix());
    let route = lab.exec_in(&ns, &["ip", "route", "get", CLIENT_IP]);
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(route.contains("mtu 1280"), "no path MTU learned: {route}");
    assert!(counter(&lab, "pmtu_passed") >= 1, "{}", lab.stats());
    // Now the container fragments for the path, and the fragments leave masqueraded.
    let got = lab
        .from_container("app", &["udp-size", &format!("{CLIENT_IP}:7001"), "1400"])
        .expect("a datagram in fragments");
    assert_eq!(peer_and_size(&got).0, HOST_IP, "{got}");
}
