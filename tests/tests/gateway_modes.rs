//! Docker 28's gateway modes for IPv4 (`com.docker.network.bridge.gateway_mode_ipv4`:
//! nat, nat-unprotected, routed, isolated), trusted host interfaces, and netd's own
//! restriction of who may reach published ports, in the eBPF datapath: real daemon,
//! real packets from the client namespace, routed to container subnets through the
//! host as a routed deployment would. No iptables or nftables rule is made.
use std::process::Command;

use netd_tests::{tester_bin, Lab, CLIENT_IP, CLIENT_IP6, HOST_IP, HOST_IP6};

fn peer_ip(reply: &str) -> String {
    let peer = reply.trim().trim_start_matches("peer=");
    let peer = peer.split(' ').next().unwrap_or("");
    peer.rsplit_once(':')
        .map(|(ip, _)| ip)
        .unwrap_or(peer)
        .to_string()
}

fn counter(lab: &Lab, name: &str) -> u64 {
    lab.stats()["counters"][name].as_u64().unwrap_or(0)
}

fn assert_rulesets_empty(lab: &Lab) {
    let (ipt, nft) = lab.host_rulesets();
    assert!(ipt.is_empty() && nft.is_empty(), "rulesets:\n{ipt}\n{nft}");
}

/// A network with `subnet` and the options `opts`, routed to from the client.
fn network(lab: &Lab, name: &str, subnet: &str, opts: &[&str]) {
    let mut args = vec!["network", "create", "--subnet", subnet];
    for o in opts {
        args.extend_from_slice(&["-o", o]);
    }
    args.push(name);
    lab.netd_ok(&args);
    let st = Command::new("ip")
        .args(["-n", &lab.client, "route", "add", subnet, "via", HOST_IP])
        .status()
        .expect("ip route");
    assert!(st.success());
}

/// A tester TCP server on port 80 of a container on `net`; returns its address.
fn server(lab: &Lab, name: &str, net: &str, publish: &[&str]) -> String {
    let tester = tester_bin();
    let mut args = vec!["run", "-d", "--name", name, "--network", net];
    for p in publish {
        args.extend_from_slice(&["-p", p]);
    }
    args.extend_from_slice(&["--", tester.to_str().expect("utf-8"), "serve-tcp", "80"]);
    lab.netd_ok(&args);
    let ns = format!("{}{name}", lab.container_prefix());
    lab.wait_listening(&ns, &["serve-tcp", "80"]);
    lab.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .expect("IPv4")
        .to_string()
}

fn to(ip: &str, port: u16) -> String {
    format!("{ip}:{port}")
}

#[test]
fn routed_opens_published_container_ports_only_and_keeps_addresses() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp", "7000"]);
    network(
        &lab,
        "rt",
        "10.81.0.0/24",
        &["com.docker.network.bridge.gateway_mode_ipv4=routed"],
    );
    let open = server(&lab, "open", "rt", &["8081:80"]);
    let closed = server(&lab, "closed", "rt", &[]);
    // The published container port, straight at the container: the client's own
    // address arrives (no NAT either way).
    let got = lab
        .from_client(&["tcp", &to(&open, 80)])
        .expect("published port");
    assert_eq!(peer_ip(&got), CLIENT_IP, "{got}");
    let before = counter(&lab, "guard_drop_unpublished");
    assert!(
        lab.from_client(&["tcp", &to(&closed, 80)]).is_err(),
        "unpublished"
    );
    assert!(counter(&lab, "guard_drop_unpublished") > before);
    // The container's own flows leave with its address, and their replies get past
    // the port filter: conntrack knows them.
    for c in ["open", "closed"] {
        let got = lab
            .from_container(c, &["tcp", &to(CLIENT_IP, 7000)])
            .expect("out of a routed network");
        assert_ne!(peer_ip(&got), HOST_IP, "routed: not masqueraded");
        assert!(peer_ip(&got).starts_with("10.81.0."), "{got}");
    }
    assert!(counter(&lab, "direct") > 0);
    assert_eq!(counter(&lab, "snat"), 0);
    // Containers of other networks reach the published container port straight at
    // the container (Docker 28), and nothing else of it.
    let tester = tester_bin();
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "other",
        "--",
        tester.to_str().unwrap(),
        "serve-tcp",
        "81",
    ]);
    let got = lab
        .from_container("other", &["tcp", &to(&open, 80)])
        .expect("another network to a routed container's published port");
    assert!(
        peer_ip(&got).starts_with("172.17."),
        "no NAT between networks: {got}"
    );
    let before = counter(&lab, "drop_other_network");
    assert!(lab
        .from_container("other", &["tcp", &to(&closed, 80)])
        .is_err());
    assert!(counter(&lab, "drop_other_network") > before);
    // ICMP gets through, as Docker's routed mode lets it.
    let o = lab.exec_in(&lab.client, &["ping", "-c1", "-W2", &closed]);
    assert!(o.status.success(), "ping a routed container");
    assert_rulesets_empty(&lab);
}

#[test]
fn nat_unprotected_lets_any_port_in_and_masquerades_out() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let mode = "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected";
    network(&lab, "un", "10.82.0.0/24", &[mode]);
    network(&lab, "pr", "10.83.0.0/24", &[]);
    let open = server(&lab, "u", "un", &[]);
    let protected = server(&lab, "p", "pr", &[]);
    // Straight in, and the reply goes back from the container's address (tracked,
    // not taken for a new flow to masquerade).
    let got = lab
        .from_client(&["tcp", &to(&open, 80)])
        .expect("unprotected");
    assert_eq!(peer_ip(&got), CLIENT_IP);
    let got = lab
        .from_container("u", &["tcp", &to(CLIENT_IP, 7000)])
        .expect("out");
    assert_eq!(peer_ip(&got), HOST_IP, "nat-unprotected still masquerades");
    let before = counter(&lab, "guard_drop_to_container");
    assert!(
        lab.from_client(&["tcp", &to(&protected, 80)]).is_err(),
        "nat"
    );
    assert!(counter(&lab, "guard_drop_to_container") > before);
    assert_rulesets_empty(&lab);
}

#[test]
fn trusted_host_interfaces_reach_a_nat_network_directly() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let trusted = "com.docker.network.bridge.trusted_host_interfaces=vx9:up0";
    network(&lab, "tr", "10.84.0.0/24", &[trusted]);
    let ip = server(&lab, "t", "tr", &["8084:80"]);
    let got = lab
        .from_client(&["tcp", &to(&ip, 80)])
        .expect("from a trusted interface");
    assert_eq!(peer_ip(&got), CLIENT_IP);
    let got = lab
        .from_client(&["tcp", &to(HOST_IP, 8084)])
        .expect("published port");
    assert_eq!(peer_ip(&got), CLIENT_IP);
    let got = lab
        .from_container("t", &["tcp", &to(CLIENT_IP, 7000)])
        .expect("out");
    assert_eq!(peer_ip(&got), HOST_IP, "nat mode masquerades");
    let v = lab.netd_ok(&["network", "inspect", "tr"]);
    assert!(v.contains("vx9:up0"), "{v}");
    // A bad name is one line naming the option; nothing is made.
    let o = lab.netd(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.trusted_host_interfaces=a/b",
        "bad",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(err.contains("trusted_host_interfaces"), "{err}");
    assert!(!lab.netd_ok(&["network", "ls"]).contains(" bad "));
}

#[test]
fn isolated_needs_internal_and_leaves_the_bridge_without_an_address() {
    let lab = Lab::new();
    let iso = "com.docker.network.bridge.gateway_mode_ipv4=isolated";
    let o = lab.netd(&["network", "create", "-o", iso, "noint"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--internal"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    lab.netd_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.85.0.0/24",
        "-o",
        iso,
        "-o",
        "com.docker.network.bridge.name=ndt-iso",
        "iso",
    ]);
    let a = server(&lab, "a", "iso", &[]);
    server(&lab, "b", "iso", &[]);
    let addrs = lab.exec_in(
        &lab.host,
        &["ip", "-4", "-o", "addr", "show", "dev", "ndt-iso"],
    );
    assert!(
        String::from_utf8_lossy(&addrs.stdout).trim().is_empty(),
        "isolated: no address on the bridge"
    );
    // The containers still reach each other; the host has no way in.
    lab.from_container("b", &["tcp", &to(&a, 80)])
        .expect("between containers");
    let o = lab.exec_in(&lab.host, &["ping", "-c1", "-W1", &a]);
    assert!(
        !o.status.success(),
        "the host reached an isolated container"
    );
}

#[test]
fn published_ports_take_only_the_allowed_sources() {
    // The daemon allows only a network the client is not in; one network allows the
    // client's own, which replaces the daemon's list there.
    let lab = Lab::with_args(&["--published-sources", "192.0.2.0/24,2001:db8::/32"]);
    lab.run_server("deny", &["8091:80"], &["serve-tcp", "80"]);
    network(
        &lab,
        "ok",
        "10.86.0.0/24",
        &["netd.published_sources=10.199.0.0/24"],
    );
    server(&lab, "allow", "ok", &["8092:80"]);
    let before = counter(&lab, "drop_source_denied");
    assert!(lab.from_client(&["tcp", &to(HOST_IP, 8091)]).is_err());
    assert!(counter(&lab, "drop_source_denied") > before);
    let got = lab
        .from_client(&["tcp", &to(HOST_IP, 8092)])
        .expect("allowed source");
    assert_eq!(peer_ip(&got), CLIENT_IP);
    // The host itself is not restricted.
    lab.from_lab_cgroup(&lab.host, &["tcp", &to(HOST_IP, 8091)])
        .expect("the host reaches its published port");
    // A bad value is one line naming the option.
    let o = lab.netd(&[
        "network",
        "create",
        "-o",
        "netd.published_sources=10.0.0.0/33",
        "x",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("netd.published_sources"),
        "{err}"
    );
    assert_rulesets_empty(&lab);
}

#[test]
fn bad_gateway_modes_are_one_line_naming_the_option_and_its_values() {
    let lab = Lab::new();
    let o = lab.netd(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=open",
        "gm",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("gateway_mode_ipv4"), "{err}");
    assert!(
        err.contains("nat, nat-unprotected, routed, isolated"),
        "{err}"
    );
}

#[test]
fn ipv6_nat_unprotected_and_trusted_interfaces_reach_containers_directly() {
    let lab = Lab::new();
    let tester = tester_bin();
    let t = tester.to_str().expect("utf-8");
    for (name, subnet, opt) in [
        (
            "un6",
            "fd00:87::/64",
            "com.docker.network.bridge.gateway_mode_ipv6=nat-unprotected",
        ),
        (
            "tr6",
            "fd00:88::/64",
            "com.docker.network.bridge.trusted_host_interfaces=up0",
        ),
        (
            "nat6",
            "fd00:89::/64",
            "com.docker.network.bridge.enable_icc=true",
        ),
    ] {
        lab.netd_ok(&[
            "network", "create", "--ipv6", "--subnet", subnet, "-o", opt, name,
        ]);
        let st = Command::new("ip")
            .args([
                "-n",
                &lab.client,
                "-6",
                "route",
                "add",
                subnet,
                "via",
                HOST_IP6,
            ])
            .status()
            .expect("ip route");
        assert!(st.success());
        let c = format!("c-{name}");
        lab.netd_ok(&[
            "run",
            "-d",
            "--name",
            &c,
            "--network",
            name,
            "--",
            t,
            "serve-tcp6",
            "80",
        ]);
        let ns = format!("{}{c}", lab.container_prefix());
        lab.wait_listening(&ns, &["serve-tcp6", "80"]);
        let ip6 = lab.inspect(&c)["NetworkSettings"]["Networks"][name]["GlobalIPv6Address"]
            .as_str()
            .expect("IPv6")
            .to_string();
        let got = lab.from_client(&["tcp", &format!("[{ip6}]:80")]);
        if name == "nat6" {
            assert!(
                got.is_err(),
                "a nat network's container straight from outside"
            );
        } else {
            let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(peer_ip(&got).trim_matches(['[', ']']), CLIENT_IP6, "{name}");
        }
    }
    assert_rulesets_empty(&lab);
}
