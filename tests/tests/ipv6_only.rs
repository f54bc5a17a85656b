//! IPv6-only networks (Docker 28's `--ipv4=false`): no IPv4 subnet, no IPv4 address on
//! the bridge or in the containers, ports published on IPv6 host addresses only, NAT66
//! out, names answered with AAAA only. Through netd's CLI and the stock docker CLI.
use netd_tests::{dig, tester_bin, Lab, CLIENT_IP6, HOST_IP6};
use serde_json::Value;

fn peer_ip(reply: &str) -> String {
    let peer = reply.trim().trim_start_matches("peer=");
    let peer = peer.split(' ').next().unwrap_or("");
    let (ip, _) = peer.rsplit_once(':').expect("peer=IP:PORT");
    ip.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn inspect_network(lab: &Lab, name: &str) -> Value {
    let v: Value = serde_json::from_str(&lab.netd_ok(&["network", "inspect", name])).unwrap();
    if v.is_array() {
        v[0].clone()
    } else {
        v
    }
}

fn one_line_error(o: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected a failure: {needle}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle}: {err}");
}

#[test]
fn an_ipv6_only_network_gives_containers_ipv6_alone_and_publishes_on_ipv6() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp6", "7000"]);
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv4=false",
        "--ipv6",
        "--subnet",
        "fd00:71::/64",
        "-o",
        "com.docker.network.bridge.name=ndt-v6only",
        "v6only",
    ]);
    let n = inspect_network(&lab, "v6only");
    assert_eq!(n["EnableIPv4"], false, "{n}");
    assert_eq!(n["EnableIPv6"], true, "{n}");
    let configs = n["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{n}");
    assert_eq!(configs[0]["Subnet"], "fd00:71::/64");
    let bridge4 = lab.exec_in(
        &lab.host,
        &["ip", "-4", "-o", "addr", "show", "dev", "ndt-v6only"],
    );
    assert!(
        String::from_utf8_lossy(&bridge4.stdout).trim().is_empty(),
        "IPv4 on the bridge"
    );

    let tester = tester_bin();
    let t = tester.to_str().unwrap();
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "v6only",
        "-p",
        "8071:80",
        "--",
        t,
        "serve-tcp6",
        "80",
    ]);
    let ns = format!("{}web", lab.container_prefix());
    lab.wait_listening(&ns, &["serve-tcp6", "80"]);
    let ep = &lab.inspect("web")["NetworkSettings"]["Networks"]["v6only"];
    assert_eq!(ep["IPAddress"], "", "{ep}");
    let ip6 = ep["GlobalIPv6Address"].as_str().unwrap().to_string();
    assert!(ip6.starts_with("fd00:71::"), "{ep}");
    let inside4 = lab.exec_in(&ns, &["ip", "-4", "-o", "addr", "show", "scope", "global"]);
    assert!(
        String::from_utf8_lossy(&inside4.stdout).trim().is_empty(),
        "IPv4 inside"
    );
    // Published on [::] only: no IPv4 host port was taken.
    let port = lab.netd_ok(&["port", "web"]);
    assert!(
        port.contains("[::]:8071") && !port.contains("0.0.0.0"),
        "{port}"
    );
    let got = lab
        .from_client(&["tcp", &format!("[{HOST_IP6}]:8071")])
        .expect("the published port over IPv6");
    assert_eq!(peer_ip(&got), CLIENT_IP6);
    // An agent restart finds the endpoint whole (nothing recreated) and it still serves.
    lab.stop_daemon(libc::SIGTERM);
    lab.start_daemon().expect("restarting the daemon");
    assert!(
        !lab.daemon_log().contains("recreating"),
        "{}",
        lab.daemon_log()
    );
    lab.from_client(&["tcp", &format!("[{HOST_IP6}]:8071")])
        .expect("the published port after a restart");
    // Out through NAT66.
    let got = lab
        .from_container("web", &["tcp", &format!("[{CLIENT_IP6}]:7000")])
        .expect("out over IPv6");
    assert_eq!(peer_ip(&got), HOST_IP6);

    // Names: AAAA for the container, no A.
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "v6only",
        "--",
        "sleep",
        "600",
    ]);
    let peer_ns = format!("{}peer", lab.container_prefix());
    let aaaa = dig(&lab, &peer_ns, &["web", "AAAA"]);
    assert_eq!(aaaa.answers, std::slice::from_ref(&ip6), "{}", aaaa.raw);
    let a = dig(&lab, &peer_ns, &["web", "A"]);
    assert!(a.answers.is_empty(), "no A record: {}", a.raw);
    lab.netd_ok(&["rm", "-f", "web", "peer"]);
    lab.netd_ok(&["network", "rm", "v6only"]);
}

#[test]
fn ipv6_only_networks_refuse_what_needs_ipv4_in_one_line() {
    let lab = Lab::new();
    let before = lab.netd_ok(&["network", "ls", "-q"]);
    one_line_error(
        &lab.netd(&["network", "create", "--ipv4=false", "x"]),
        "--ipv6",
    );
    one_line_error(
        &lab.netd(&[
            "network",
            "create",
            "--ipv4=false",
            "--ipv6",
            "--subnet",
            "10.72.0.0/24",
            "x",
        ]),
        "--ipv4=false takes no IPv4",
    );
    assert_eq!(
        lab.netd_ok(&["network", "ls", "-q"]),
        before,
        "nothing made"
    );
    lab.netd_ok(&["network", "create", "--ipv4=false", "--ipv6", "v6"]);
    one_line_error(
        &lab.netd(&[
            "run",
            "-d",
            "--network",
            "v6",
            "--ip",
            "10.1.0.5",
            "--",
            "sleep",
            "60",
        ]),
        "no IPv4",
    );
    one_line_error(
        &lab.netd(&[
            "run",
            "-d",
            "--network",
            "v6",
            "-p",
            "127.0.0.1:8072:80",
            "--",
            "sleep",
            "60",
        ]),
        "no IPv4",
    );
}

#[test]
fn the_docker_cli_makes_an_ipv6_only_network() {
    let lab = Lab::new();
    let o = lab.docker(&[
        "network",
        "create",
        "--ipv4=false",
        "--ipv6",
        "--subnet",
        "fd00:73::/64",
        "d6",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lab.docker(&[
        "network",
        "inspect",
        "-f",
        "{{.EnableIPv4}} {{.EnableIPv6}}",
        "d6",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "false true");
}
