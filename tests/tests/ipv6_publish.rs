//! End-to-end: the agent's half of IPv6 publishing (issue #12): `-p` on both families,
//! `netd port` and inspect, the IPv6 port map, bad input, `gateway_mode_ipv6`, and IPv6
//! forwarding in the daemon's namespace only. The traffic through the eBPF side (DNAT66,
//! NAT66) is tested with the programs.
use netd_tests::{Lab, HOST_IP6};
use serde_json::Value;

fn run(lab: &Lab, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sleep", "600"]);
    lab.netd_ok(&args);
}

/// `netd port NAME` as sorted lines.
fn port_lines(lab: &Lab, name: &str) -> Vec<String> {
    let mut l: Vec<String> = lab
        .netd_ok(&["port", name])
        .lines()
        .map(str::to_string)
        .collect();
    l.sort();
    l
}

fn forwarding(read: impl Fn() -> String) -> String {
    read().trim().to_string()
}

fn root_forwarding() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").unwrap_or_default()
}

fn assert_one_line_error(o: &std::process::Output, needle: &str) -> String {
    assert!(!o.status.success(), "expected a failure ({needle})");
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle}: {err}");
    err
}

#[test]
fn ipv6_publishing_on_both_families_and_forwarding_in_the_daemons_namespace_only() {
    let lab = Lab::new();
    let root_before = forwarding(root_forwarding);
    let host_forwarding = || {
        let o = lab.exec_in(
            &lab.host,
            &["cat", "/proc/sys/net/ipv6/conf/all/forwarding"],
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(host_forwarding(), "0", "a fresh lab forwards no IPv6");

    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.92.0.0/24",
        "--subnet",
        "fd00:92::/64",
        "v6p",
    ]);
    assert_eq!(host_forwarding(), "1", "an --ipv6 network turns it on");
    // The uplink had accept_ra=1 (a new namespace's default): now 2, so SLAAC stays.
    let o = lab.exec_in(&lab.host, &["cat", "/proc/sys/net/ipv6/conf/up0/accept_ra"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2");

    // No host address: both families, one port.
    run(&lab, "both", &["--network", "v6p", "-p", "8080:80"]);
    assert_eq!(
        port_lines(&lab, "both"),
        ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]
    );
    assert_eq!(
        lab.netd_ok(&["port", "both", "80"])
            .lines()
            .collect::<Vec<_>>(),
        ["0.0.0.0:8080", "[::]:8080"]
    );
    // [::] only IPv6, 0.0.0.0 only IPv4.
    run(&lab, "six", &["--network", "v6p", "-p", "[::]:8081:80"]);
    assert_eq!(port_lines(&lab, "six"), ["80/tcp -> [::]:8081"]);
    run(&lab, "four", &["--network", "v6p", "-p", "0.0.0.0:8082:80"]);
    assert_eq!(port_lines(&lab, "four"), ["80/tcp -> 0.0.0.0:8082"]);
    // The host's own IPv6 address is a host address; a random port serves both.
    run(
        &lab,
        "addr",
        &[
            "--network",
            "v6p",
            "-p",
            &format!("[{HOST_IP6}]:8083:80/udp"),
            "-p",
            "90",
        ],
    );
    let lines = port_lines(&lab, "addr");
    assert!(
        lines.contains(&format!("80/udp -> [{HOST_IP6}]:8083")),
        "{lines:?}"
    );
    let random: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("90/tcp"))
        .filter_map(|l| l.rsplit(':').next())
        .collect();
    assert_eq!(random.len(), 2, "{lines:?}");
    assert_eq!(random[0], random[1], "one random port for both: {lines:?}");

    // Inspect: Ports as Docker shows them, PortBindings as asked (one "" binding).
    let c: Value = serde_json::from_str(&lab.netd_ok(&["inspect", "both"])).unwrap();
    let c = if c.is_array() { c[0].clone() } else { c };
    let ports = &c["NetworkSettings"]["Ports"]["80/tcp"];
    let ips: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["HostIp"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["0.0.0.0", "::"], "{c}");
    let asked = &c["HostConfig"]["PortBindings"]["80/tcp"];
    assert_eq!(asked.as_array().unwrap().len(), 1, "{asked}");
    assert_eq!(asked[0]["HostIp"], "", "{asked}");

    // Per family: another :: wildcard on 8081 collides, an IPv4 one does not.
    let o = lab.netd(&[
        "run",
        "-d",
        "--name",
        "dup6",
        "--network",
        "v6p",
        "-p",
        "[::]:8081:81",
        "--",
        "sleep",
        "60",
    ]);
    assert_one_line_error(&o, "already published by container six");
    run(
        &lab,
        "v4same",
        &["--network", "v6p", "-p", "0.0.0.0:8081:81"],
    );
    // Both families of 8080 are taken: a plain -p 8080 collides on both.
    let o = lab.netd(&[
        "run",
        "-d",
        "--name",
        "dup",
        "--network",
        "v6p",
        "-p",
        "8080:81",
        "--",
        "sleep",
        "60",
    ]);
    assert_one_line_error(&o, "already published");

    // The map entries: 8080 x2, 8081 (v6), 8082, 8083 (v6), 90 x2, 8081 (v4).
    let st: Value = serde_json::from_str(&lab.netd_ok(&["stats", "--format", "json"])).unwrap();
    assert_eq!(st["port_map_entries"], 8, "{st}");

    // IPv6 host addresses the host does not have, and containers without IPv6.
    lab.netd_ok(&["network", "create", "--subnet", "10.93.0.0/24", "v4only"]);
    let before = lab.netd_ok(&["ps", "-a", "-q"]);
    for (net, spec, needle) in [
        ("v4only", "[::]:8090:80", "has no IPv6 address on v4only"),
        (
            "v6p",
            "[fd00:dead::1]:8091:80",
            "not an address of this host",
        ),
    ] {
        let o = lab.netd(&[
            "run",
            "-d",
            "--name",
            "bad",
            "--network",
            net,
            "-p",
            spec,
            "--",
            "sleep",
            "60",
        ]);
        assert_one_line_error(&o, needle);
    }
    assert_eq!(lab.netd_ok(&["ps", "-a", "-q"]), before, "nothing made");
    // Without IPv6, a plain -p stays IPv4 only.
    run(&lab, "plain", &["--network", "v4only", "-p", "8084:80"]);
    assert_eq!(port_lines(&lab, "plain"), ["80/tcp -> 0.0.0.0:8084"]);

    // Removing a container removes its IPv6 entries too.
    lab.netd_ok(&["rm", "-f", "both", "six", "addr"]);
    let st: Value = serde_json::from_str(&lab.netd_ok(&["stats", "--format", "json"])).unwrap();
    assert_eq!(st["port_map_entries"], 3, "four, v4same, plain: {st}");

    // No firewall rule of either family, and the root namespace untouched.
    let (ipt, nft) = lab.host_rulesets();
    assert!(ipt.is_empty(), "host iptables has rules:\n{ipt}");
    assert!(nft.is_empty(), "host nftables has a ruleset:\n{nft}");
    let ip6t = lab.exec_in(&lab.host, &["ip6tables-save"]);
    let ip6t: Vec<String> = String::from_utf8_lossy(&ip6t.stdout)
        .lines()
        .filter(|l| l.starts_with("-A") || (l.starts_with(':') && l.contains(" - ")))
        .map(str::to_string)
        .collect();
    assert!(ip6t.is_empty(), "host ip6tables has rules: {ip6t:?}");
    assert_eq!(forwarding(root_forwarding), root_before);
    lab.netd_ok(&["rm", "-f", "four", "v4same", "plain"]);
    lab.netd_ok(&["network", "rm", "v6p", "v4only"]);
    // dockerd leaves forwarding on when its networks go; so does netd.
    assert_eq!(host_forwarding(), "1");
}

#[test]
fn gateway_mode_ipv6_takes_dockers_modes() {
    let lab = Lab::new();
    let before = lab.netd_ok(&["network", "ls", "-q"]);
    let o = lab.netd(&[
        "network",
        "create",
        "--ipv6",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv6=bogus",
        "gm",
    ]);
    assert_one_line_error(&o, "use one of nat, nat-unprotected, routed, isolated");
    assert_eq!(
        lab.netd_ok(&["network", "ls", "-q"]),
        before,
        "nothing made"
    );
    for mode in ["nat", "nat-unprotected", "routed"] {
        let name = format!("gm-{mode}");
        lab.netd_ok(&[
            "network",
            "create",
            "--ipv6",
            "-o",
            &format!("com.docker.network.bridge.gateway_mode_ipv6={mode}"),
            &name,
        ]);
        let n: Value = serde_json::from_str(&lab.netd_ok(&["network", "inspect", &name])).unwrap();
        let n = if n.is_array() { n[0].clone() } else { n };
        assert_eq!(
            n["Options"]["com.docker.network.bridge.gateway_mode_ipv6"], mode,
            "{n}"
        );
        lab.netd_ok(&["network", "rm", &name]);
    }
}

#[test]
fn conntrack_listing_takes_ipv6_filters() {
    let lab = Lab::new();
    // An IPv6 address is a filter like an IPv4 one; a bad one is one error line.
    lab.netd_ok(&["conntrack", "ls", "--addr", HOST_IP6]);
    let o = lab.netd(&["conntrack", "ls", "--addr", "fd00::zz"]);
    assert!(!o.status.success());
    let st: Value = serde_json::from_str(&lab.netd_ok(&["stats", "--format", "json"])).unwrap();
    assert!(st["conntrack_entries"].is_u64(), "{st}");
    lab.netd_ok(&["conntrack", "flush"]);
}
