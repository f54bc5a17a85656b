//! End-to-end: Docker's macvlan driver, bridge mode. A container on the uplink's own
//! segment is reached straight at its address from the client (no NAT, no published
//! port, its own MAC on the wire); a parent `IF.VLAN` is an 802.1q sub-interface the
//! network makes and removes; a port to publish and bad parents are one error line.
use netd_tests::{Lab, CLIENT_IP, CLIENT_IP6, HOST_IP};
use serde_json::Value;

/// `HOST_IP`'s /24 as "a.b.c".
fn uplink_prefix() -> String {
    HOST_IP.rsplit_once('.').expect("dotted quad").0.to_string()
}

/// A tester TCP server (both families) in a new container on `net`; its IPv4 and
/// IPv6 (empty without) addresses there.
fn serve_on(lab: &Lab, name: &str, net: &str) -> (String, String) {
    let tester = netd_tests::tester_bin();
    let tester = tester.to_str().expect("utf-8 path");
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        net,
        "--",
        tester,
        "serve-tcp6",
        "80",
    ]);
    let v: Value = lab.inspect(name);
    let n = &v["NetworkSettings"]["Networks"][net];
    let ip = n["IPAddress"].as_str().expect("an address").to_string();
    let ip6 = n["GlobalIPv6Address"].as_str().unwrap_or("").to_string();
    lab.wait_listening(
        &format!("{}{name}", lab.container_prefix()),
        &["serve-tcp6", "80"],
    );
    (ip, ip6)
}

fn one_line_error(o: &std::process::Output, needle: &str) {
    assert!(!o.status.success(), "expected a failure: {needle}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{needle}: {err}");
}

fn host_has_link(lab: &Lab, name: &str) -> bool {
    lab.exec_in(&lab.host, &["ip", "link", "show", name])
        .status
        .success()
}

#[test]
fn a_macvlan_container_is_on_the_uplinks_segment_and_a_vlan_parent_goes_with_its_network() {
    let mut lab = Lab::new();
    let p = uplink_prefix();
    lab.netd_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        &format!("{p}.0/24"),
        "--ip-range",
        &format!("{p}.128/25"),
        "--gateway",
        CLIENT_IP,
        "--ipv6",
        "--subnet",
        "fd00:199::/64",
        "--ip-range",
        "fd00:199::8000/113",
        "--gateway",
        CLIENT_IP6,
        "-o",
        "parent=up0",
        "lan",
    ]);
    let (ip, ip6) = serve_on(&lab, "web", "lan");
    assert!(ip.starts_with(&format!("{p}.")), "{ip}");
    assert!(ip6.starts_with("fd00:199::"), "{ip6}");
    let got = lab
        .from_client(&["tcp", &format!("[{ip6}]:80")])
        .unwrap_or_else(|e| {
            let ns = format!("{}web", lab.container_prefix());
            let show = |ns: &str, a: &[&str]| {
                let o = lab.exec_in(ns, a);
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            };
            panic!(
                "the client reaches the container's IPv6 address directly: {e}\n{}\n{}\n{}\n{}",
                show(&ns, &["ip", "-6", "addr"]),
                show(&ns, &["ss", "-ltnp"]),
                show(&lab.client, &["ip", "-6", "neigh"]),
                show(&lab.host, &["ip", "-6", "addr"]),
            )
        });
    assert!(got.contains(&format!("peer=[{CLIENT_IP6}]:")), "{got}");
    // Straight from the client to the container's own address: the container sees the
    // client's address, nothing translated either way.
    let got = lab
        .from_client(&["tcp", &format!("{ip}:80")])
        .expect("the client reaches the macvlan container directly");
    // (A server on [::] sees an IPv4 peer as ::ffff:a.b.c.d.)
    assert!(got.contains(CLIENT_IP), "{got}");
    // An agent restart finds the device in the container's namespace and leaves it be.
    lab.stop_daemon(libc::SIGTERM);
    lab.start_daemon().expect("the agent starts again");
    let got = lab
        .from_client(&["tcp", &format!("{ip}:80")])
        .expect("still reached after a restart");
    assert!(got.contains(CLIENT_IP), "{got}");
    let links = lab.exec_in(
        &format!("{}web", lab.container_prefix()),
        &["ip", "-o", "link", "show"],
    );
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(
        links
            .lines()
            .filter(|l| l.contains("macvlan") || l.contains("eth0"))
            .count(),
        1,
        "{links}"
    );
    // Its MAC is its own on the segment (not the host's), as the client's neighbour
    // table shows.
    let mac = lab.inspect("web")["NetworkSettings"]["Networks"]["lan"]["MacAddress"]
        .as_str()
        .expect("a MAC")
        .to_string();
    let neigh = lab.exec_in(&lab.client, &["ip", "neigh", "show", &ip]);
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains(&mac),
        "{neigh:?} has no {mac}"
    );
    // A running container of a bridge network joins the segment too (connect), and
    // leaves it (disconnect: its macvlan device goes from its namespace).
    lab.netd_ok(&["network", "create", "--subnet", "10.78.0.0/24", "br"]);
    let (_, _) = serve_on(&lab, "both", "br");
    lab.netd_ok(&[
        "network",
        "connect",
        "--ip",
        &format!("{p}.200"),
        "lan",
        "both",
    ]);
    let got = lab
        .from_client(&["tcp", &format!("{p}.200:80")])
        .expect("the client reaches the connected container on the segment");
    assert!(got.contains(CLIENT_IP), "{got}");
    lab.netd_ok(&["network", "disconnect", "lan", "both"]);
    let ns = format!("{}both", lab.container_prefix());
    let links = lab.exec_in(&ns, &["ip", "-o", "link", "show"]);
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(
        links.lines().count(),
        2,
        "lo and the bridge network's eth0: {links}"
    );
    assert!(lab.from_client(&["tcp", &format!("{p}.200:80")]).is_err());
    lab.netd_ok(&["rm", "-f", "both"]);
    lab.netd_ok(&["network", "rm", "br"]);
    // No published ports on macvlan, as in Docker; said, not ignored.
    one_line_error(
        &lab.netd(&[
            "run",
            "-d",
            "--network",
            "lan",
            "-p",
            "8080:80",
            "--",
            "sleep",
            "60",
        ]),
        "publishes no ports",
    );
    // One network a parent; the parent must exist; bridge mode only.
    let cidr = format!("{p}.0/24");
    for (args, needle) in [
        (
            vec!["-o", "parent=up0", "--subnet", "10.77.0.0/24"],
            "already using parent interface up0",
        ),
        (
            vec!["-o", "parent=nosuch0", "--subnet", "10.77.0.0/24"],
            "nosuch0 does not exist",
        ),
        (
            vec!["-o", "parent=up0.5000", "--subnet", "10.77.0.0/24"],
            "VLAN id from 1 to 4094",
        ),
        (vec!["--subnet", "10.77.0.0/24"], "needs -o parent"),
        (
            vec![
                "-o",
                "parent=up0.7",
                "-o",
                "macvlan_mode=vepa",
                "--subnet",
                "10.77.0.0/24",
            ],
            "bridge mode only",
        ),
        (
            vec![
                "-o",
                "parent=up0.7",
                "-o",
                "com.docker.network.bridge.name=x",
                "--subnet",
                &cidr,
            ],
            "unsupported network option",
        ),
    ] {
        let mut all = vec!["network", "create", "-d", "macvlan"];
        all.extend(args);
        all.push("bad");
        one_line_error(&lab.netd(&all), needle);
    }
    assert!(
        !host_has_link(&lab, "up0.7"),
        "a refused network made nothing"
    );

    vlan_parent(&lab);
    // The parent itself was the host's: it stays after its network goes.
    lab.netd_ok(&["rm", "-f", "web"]);
    lab.netd_ok(&["network", "rm", "lan"]);
    assert!(host_has_link(&lab, "up0"));
}

/// A parent `up0.42`: an 802.1q sub-interface the network makes and removes. On a
/// kernel without 802.1q (this machine kind's has no CONFIG_VLAN_8021Q) the network is
/// refused in one line and leaves nothing behind.
fn vlan_parent(lab: &Lab) {
    let create = [
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.42.42.0/24",
        "--ip-range",
        "10.42.42.128/25",
        "--gateway",
        "10.42.42.2",
        "-o",
        "parent=up0.42",
        "vlan42",
    ];
    let client_vlan = lab.exec_in(
        &lab.client,
        &[
            "ip", "link", "add", "link", "cl0", "name", "cl0.42", "type", "vlan", "id", "42",
        ],
    );
    if !client_vlan.status.success() {
        one_line_error(&lab.netd(&create), "creating VLAN sub-interface up0.42");
        assert!(!host_has_link(lab, "up0.42"));
        let ls = lab.netd_ok(&["network", "ls", "--format", "{{.Name}}"]);
        assert!(!ls.lines().any(|l| l == "vlan42"), "{ls}");
        return;
    }
    for cmd in [
        vec!["ip", "addr", "add", "10.42.42.2/24", "dev", "cl0.42"],
        vec!["ip", "link", "set", "cl0.42", "up"],
    ] {
        assert!(lab.exec_in(&lab.client, &cmd).status.success(), "{cmd:?}");
    }
    lab.netd_ok(&create);
    assert!(host_has_link(lab, "up0.42"), "the network makes its VLAN");
    let (ip42, _) = serve_on(lab, "tagged", "vlan42");
    let got = lab
        .from_client(&["tcp", &format!("{ip42}:80")])
        .expect("the client reaches the container on VLAN 42");
    assert!(got.contains("10.42.42.2"), "{got}");
    lab.netd_ok(&["rm", "-f", "tagged"]);
    lab.netd_ok(&["network", "rm", "vlan42"]);
    assert!(
        !host_has_link(lab, "up0.42"),
        "the VLAN goes with its network"
    );
}
