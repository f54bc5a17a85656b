//! End-to-end: dual-stack networks (`network create --ipv6`), the control plane's half
//! of issue #12: IPv6 addresses, interfaces and routes in containers, the gateway on the
//! bridge, `--ip6`, inspect, and bad input. The IPv6 NAT's traffic is in ipv6_nat.rs.
use netd_tests::{json, ok, Lab};

/// The namespace of container `name`.
fn ns(lab: &Lab, name: &str) -> String {
    format!("{}{name}", lab.container_prefix())
}

/// Runs `args` in container `name`'s namespace (`ip netns exec NS ...`).
fn in_container(lab: &Lab, name: &str, args: &[&str]) -> std::process::Output {
    lab.exec_in(&ns(lab, name), args)
}

fn sysctl_in(lab: &Lab, name: &str, path: &str) -> String {
    let o = in_container(
        lab,
        name,
        &["cat", &format!("/proc/sys/net/ipv6/conf/{path}")],
    );
    ok(&o, path).trim().to_string()
}

fn ping6(lab: &Lab, from: &str, to: &str) -> std::process::Output {
    in_container(lab, from, &["ping", "-6", "-c1", "-W2", to])
}

fn run(lab: &Lab, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sleep", "600"]);
    lab.netd_ok(&args);
}

fn host_forwarding(lab: &Lab) -> String {
    let o = lab.exec_in(
        &lab.host,
        &["cat", "/proc/sys/net/ipv6/conf/all/forwarding"],
    );
    ok(&o, "forwarding").trim().to_string()
}

#[test]
fn ipv6_dual_stack_containers_get_addresses_a_route_and_reach_each_other() {
    let mut lab = Lab::new();
    let forwarding = host_forwarding(&lab);
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.91.0.0/24",
        "--subnet",
        "fd00:91::/64",
        "-o",
        "com.docker.network.bridge.name=ndt-v6a",
        "v6a",
    ]);
    let v = json(&lab.netd_ok(&["network", "inspect", "v6a"]))[0].clone();
    assert_eq!(v["EnableIPv6"], true, "{v}");
    assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.91.0.0/24", "{v}");
    assert_eq!(v["IPAM"]["Config"][1]["Subnet"], "fd00:91::/64", "{v}");
    assert_eq!(v["IPAM"]["Config"][1]["Gateway"], "fd00:91::1", "{v}");
    // The bridge holds the IPv6 gateway, usable at once (nodad), and takes no RA.
    let br = lab.exec_in(
        &lab.host,
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "ndt-v6a", "scope", "global",
        ],
    );
    let br = ok(&br, "bridge addresses");
    assert!(
        br.contains("fd00:91::1/64") && !br.contains("tentative"),
        "{br}"
    );
    let ra = lab.exec_in(
        &lab.host,
        &["cat", "/proc/sys/net/ipv6/conf/ndt-v6a/accept_ra"],
    );
    assert_eq!(ok(&ra, "accept_ra").trim(), "0");

    run(&lab, "a", &["--network", "v6a"]);
    run(&lab, "b", &["--network", "v6a", "--ip6", "fd00:91::99"]);
    // Addresses in order from ::2; --ip6 as asked; both on eth0, not tentative.
    let a_addrs = ok(
        &in_container(
            &lab,
            "a",
            &[
                "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
            ],
        ),
        "a's addresses",
    );
    assert!(a_addrs.contains("fd00:91::2/64"), "{a_addrs}");
    assert!(!a_addrs.contains("tentative"), "{a_addrs}");
    let b_addrs = ok(
        &in_container(
            &lab,
            "b",
            &[
                "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
            ],
        ),
        "b's addresses",
    );
    assert!(b_addrs.contains("fd00:91::99/64"), "{b_addrs}");
    // A default IPv6 route via the gateway; router advertisements ignored.
    let route = ok(
        &in_container(&lab, "a", &["ip", "-6", "route", "show", "default"]),
        "a's routes",
    );
    assert!(route.contains("via fd00:91::1 dev eth0"), "{route}");
    for key in ["all/accept_ra", "default/accept_ra", "eth0/accept_ra"] {
        assert_eq!(sysctl_in(&lab, "a", key), "0", "{key}");
    }
    assert_eq!(sysctl_in(&lab, "a", "eth0/disable_ipv6"), "0");

    // Traffic on the bridge: container to container and to the gateway, both ways.
    ok(&ping6(&lab, "a", "fd00:91::99"), "a pings b over IPv6");
    ok(&ping6(&lab, "b", "fd00:91::2"), "b pings a over IPv6");
    ok(
        &ping6(&lab, "a", "fd00:91::1"),
        "a pings the gateway over IPv6",
    );
    // IPv4 is as it was.
    ok(
        &in_container(&lab, "a", &["ping", "-c1", "-W2", "10.91.0.3"]),
        "a pings b over IPv4",
    );
    // The host ends are bridge ports with no IPv6 of their own: no link-local address
    // and no route in the host's FIB, whose walks would grow with every container.
    let veth = lab.inspect("a")["HostVeths"][0]
        .as_str()
        .expect("a host veth")
        .to_string();
    let host_v6 = ok(
        &lab.exec_in(
            &lab.host,
            &["ip", "-6", "route", "show", "table", "all", "dev", &veth],
        ),
        "the host veth's IPv6 routes",
    );
    assert_eq!(host_v6.trim(), "", "{veth}");
    let v6_off = lab.exec_in(
        &lab.host,
        &[
            "cat",
            &format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"),
        ],
    );
    assert_eq!(ok(&v6_off, "disable_ipv6").trim(), "1");

    // inspect: Docker's fields, for the container and the network.
    let c = json(&lab.netd_ok(&["inspect", "a", "b"]));
    let ea = &c[0]["NetworkSettings"]["Networks"]["v6a"];
    assert_eq!(ea["GlobalIPv6Address"], "fd00:91::2", "{ea}");
    assert_eq!(ea["GlobalIPv6PrefixLen"], 64, "{ea}");
    assert_eq!(ea["IPv6Gateway"], "fd00:91::1", "{ea}");
    assert!(ea["IPAMConfig"].is_null(), "{ea}");
    let eb = &c[1]["NetworkSettings"]["Networks"]["v6a"];
    assert_eq!(eb["IPAMConfig"]["IPv6Address"], "fd00:91::99", "{eb}");
    let v = json(&lab.netd_ok(&["network", "inspect", "v6a"]))[0].clone();
    let v6s: Vec<&str> = v["Containers"]
        .as_object()
        .expect("containers")
        .values()
        .map(|m| m["IPv6Address"].as_str().unwrap_or(""))
        .collect();
    assert!(
        v6s.contains(&"fd00:91::2/64") && v6s.contains(&"fd00:91::99/64"),
        "{v}"
    );

    // A restarted daemon reconciles without touching what works (set_lo_up runs again
    // for every namespace: it must not turn IPv6 off).
    lab.stop_daemon(libc::SIGTERM);
    lab.start_daemon().expect("restarting the daemon");
    let a_addrs = ok(
        &in_container(
            &lab,
            "a",
            &["ip", "-6", "-o", "addr", "show", "scope", "global"],
        ),
        "a's addresses after a restart",
    );
    assert!(a_addrs.contains("fd00:91::2/64"), "{a_addrs}");
    ok(&ping6(&lab, "b", "fd00:91::2"), "b pings a after a restart");
    ok(&ping6(&lab, "a", "::1"), "a's loopback has IPv6");

    // An IPv6 network turns IPv6 forwarding on in the daemon's namespace (NAT66 and
    // DNAT66 forward), as dockerd does; it was off before.
    assert_eq!(forwarding, "0");
    assert_eq!(host_forwarding(&lab), "1");
    lab.netd_ok(&["rm", "-f", "a", "b"]);
    lab.netd_ok(&["network", "rm", "v6a"]);
    assert!(!lab.host_links().iter().any(|l| l == "ndt-v6a"));
}

#[test]
fn ipv6_automatic_subnets_and_networks_without_ipv6() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--ipv6", "auto1"]);
    lab.netd_ok(&["network", "create", "--ipv6", "auto2"]);
    lab.netd_ok(&["network", "create", "--subnet", "10.93.0.0/24", "plain"]);
    let nets = json(&lab.netd_ok(&["network", "inspect", "auto1", "auto2", "plain"]));
    // Two /64s of one ULA /48 (the instance's), each with its ::1 gateway.
    let subnet6 = |i: usize| {
        nets[i]["IPAM"]["Config"][1]["Subnet"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let (s1, s2) = (subnet6(0), subnet6(1));
    for s in [&s1, &s2] {
        assert!(s.starts_with("fd") && s.ends_with("::/64"), "{nets}");
    }
    assert_ne!(s1, s2);
    let p48 = |s: &str| s.split(':').take(3).collect::<Vec<_>>().join(":");
    assert_eq!(p48(&s1), p48(&s2), "one /48: {s1} {s2}");
    let gw1 = nets[0]["IPAM"]["Config"][1]["Gateway"]
        .as_str()
        .unwrap_or("");
    assert_eq!(gw1, s1.replace("::/64", "::1"));
    assert_eq!(nets[2]["EnableIPv6"], false);
    assert_eq!(nets[2]["IPAM"]["Config"].as_array().map(Vec::len), Some(1));

    // A container on a network without IPv6 has none, not even link-local.
    run(&lab, "p", &["--network", "plain"]);
    assert_eq!(sysctl_in(&lab, "p", "eth0/disable_ipv6"), "1");
    assert_eq!(sysctl_in(&lab, "p", "lo/disable_ipv6"), "1");
    let none = ok(
        &in_container(&lab, "p", &["ip", "-6", "-o", "addr"]),
        "p's v6",
    );
    assert!(none.trim().is_empty(), "{none}");
    // Connected to a v6 network as well: IPv6 on that interface only. A dual-stack
    // endpoint comes before an IPv4-only one in Docker 28's choice of the gateway
    // endpoint: both default routes move to it.
    run(&lab, "q", &["--network", "auto1"]);
    lab.netd_ok(&["network", "connect", "auto1", "p"]);
    assert_eq!(sysctl_in(&lab, "p", "eth0/disable_ipv6"), "1");
    assert_eq!(sysctl_in(&lab, "p", "eth1/disable_ipv6"), "0");
    let route = |family: &str| {
        ok(
            &in_container(&lab, "p", &["ip", family, "route", "show", "default"]),
            "routes",
        )
    };
    let (r6, r4) = (route("-6"), route("-4"));
    assert!(
        r6.starts_with(&format!("default via {gw1} dev eth1")),
        "{r6}"
    );
    assert!(r4.contains("dev eth1") && r4.lines().count() == 1, "{r4}");
    let q = json(&lab.netd_ok(&["inspect", "q"]));
    let q6 = q[0]["NetworkSettings"]["Networks"]["auto1"]["GlobalIPv6Address"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(q6, s1.replace("::/64", "::2"), "{q}");
    ok(&ping6(&lab, "p", &q6), "p reaches q on auto1 over IPv6");
    let p = json(&lab.netd_ok(&["inspect", "p"]));
    assert_eq!(
        p[0]["NetworkSettings"]["Networks"]["plain"]["GlobalIPv6Address"],
        ""
    );
    assert_eq!(
        p[0]["NetworkSettings"]["Networks"]["auto1"]["GlobalIPv6Address"],
        s1.replace("::/64", "::3")
    );
    // Disconnected, its IPv6 goes with the interface.
    lab.netd_ok(&["network", "disconnect", "auto1", "p"]);
    let none = ok(
        &in_container(
            &lab,
            "p",
            &["ip", "-6", "-o", "addr", "show", "scope", "global"],
        ),
        "p",
    );
    assert!(none.trim().is_empty(), "{none}");
    lab.netd_ok(&["rm", "-f", "p", "q"]);
}

#[test]
fn ipv6_bad_input_is_one_clear_line_and_changes_nothing() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:92::/64",
        "used6",
    ]);
    lab.netd_ok(&["network", "create", "--ipv6", "auto6"]);
    lab.netd_ok(&["network", "create", "plain"]);
    run(&lab, "x", &["--network", "used6", "--ip6", "fd00:92::5"]);
    let before = (
        lab.netd_ok(&["network", "ls"]),
        lab.netd_ok(&["ps", "-a", "-q"]),
        lab.host_links(),
        lab.container_namespaces(),
    );
    let create = |extra: &[&'static str]| {
        let mut v = vec!["network", "create"];
        v.extend_from_slice(extra);
        v.push("n1");
        v
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (create(&["--subnet", "fd00:93::/64"]), "needs --ipv6"),
        (
            create(&["--ipv6", "--subnet", "fd00:92::/48"]),
            "overlaps with network used6",
        ),
        (create(&["--ipv6", "--subnet", "fe80::/64"]), "link-local"),
        (create(&["--ipv6", "--subnet", "ff05::/64"]), "multicast"),
        (
            create(&["--ipv6", "--subnet", "fd00:93::/127"]),
            "too small",
        ),
        (
            create(&["--ipv6", "--subnet", "fd00:93::1/64"]),
            "did you mean fd00:93::/64",
        ),
        (
            create(&[
                "--ipv6",
                "--subnet",
                "fd00:93::/64",
                "--gateway",
                "fd00:94::1",
            ]),
            "gateway fd00:94::1 is not a usable address of subnet fd00:93::/64",
        ),
        (
            create(&[
                "--ipv6",
                "--subnet",
                "fd00:93::/64",
                "--subnet",
                "fd00:94::/64",
            ]),
            "--subnet given twice for IPv6",
        ),
        (
            create(&["--ipv6", "--gateway", "fd00:93::1"]),
            "needs an IPv6 --subnet",
        ),
        (
            vec![
                "run",
                "--name",
                "y",
                "--network",
                "plain",
                "--ip6",
                "fd00:93::2",
            ],
            "created without --ipv6",
        ),
        (
            vec![
                "run",
                "--name",
                "y",
                "--network",
                "auto6",
                "--ip6",
                "fd00:93::2",
            ],
            "IPv6 --subnet",
        ),
        (
            vec![
                "run",
                "--name",
                "y",
                "--network",
                "used6",
                "--ip6",
                "fd00:92::5",
            ],
            "already in use",
        ),
        (
            vec![
                "run",
                "--name",
                "y",
                "--network",
                "host",
                "--ip6",
                "fd00:92::6",
            ],
            "need a bridge network",
        ),
        (
            vec!["network", "connect", "--ip6", "fd00:93::9", "plain", "x"],
            "created without --ipv6",
        ),
        (
            vec!["run", "--name", "y", "--ip6", "fd00::zz"],
            "invalid value",
        ),
    ];
    for (args, want) in cases {
        let o = lab.netd(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "netd {args:?} succeeded");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "netd {args:?}: not one line:\n{err}"
        );
        assert!(
            err.contains(want),
            "netd {args:?}: {err:?} does not say {want:?}"
        );
    }
    // Over the API: Docker's status and a JSON message.
    for (body, status, want) in [
        (
            r#"{"Name":"n2","IPAM":{"Config":[{"Subnet":"fd00:95::/64"}]}}"#,
            "400",
            "needs --ipv6",
        ),
        (
            r#"{"Name":"n2","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fd00:92::/64"}]}}"#,
            "409",
            "overlaps with network used6",
        ),
        (
            r#"{"Name":"n2","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fd00:95::/64"},{"Subnet":"fd00:96::/64"}]}}"#,
            "400",
            "one IPv6 subnet per network",
        ),
    ] {
        let o = std::process::Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(lab.socket())
            .args([
                "-w",
                "\n%{http_code}",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["-d", body, "http://netd/networks/create"])
            .output()
            .expect("curl");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (json_body, code) = out.rsplit_once('\n').expect("status line");
        assert_eq!(code.trim(), status, "{body}: {out}");
        let msg = json(json_body)["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let after = (
        lab.netd_ok(&["network", "ls"]),
        lab.netd_ok(&["ps", "-a", "-q"]),
        lab.host_links(),
        lab.container_namespaces(),
    );
    assert_eq!(before, after, "bad input changed something");
    lab.netd_ok(&["rm", "-f", "x"]);
}

#[test]
fn ipv6_identity_and_isolation_are_kept_in_ebpf() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:93::/64",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "v6icc",
    ]);
    run(&lab, "a", &["--network", "v6icc"]);
    run(&lab, "b", &["--network", "v6icc"]);
    let counter = |r: &str| lab.stats()["counters"][r].as_u64().unwrap_or(0);
    let ip6 = |n: &str| {
        lab.inspect(n)["NetworkSettings"]["Networks"]["v6icc"]["GlobalIPv6Address"]
            .as_str()
            .expect("v6 address")
            .to_string()
    };
    let (a, b) = (ip6("a"), ip6("b"));
    // The gateway answers; the other container does not (icc=false), and the drop is
    // the IPv6 program's, counted.
    assert!(
        ping6(&lab, "a", "fd00:93::1").status.success(),
        "a -> gateway"
    );
    let icc = counter("drop_icc");
    assert!(
        !ping6(&lab, "a", &b).status.success(),
        "icc=false over IPv6"
    );
    assert!(counter("drop_icc") > icc);
    // Neither do all-nodes multicast pings reach b.
    let all = in_container(
        &lab,
        "a",
        &["ping", "-6", "-c2", "-W1", "-I", "eth0", "ff02::1"],
    );
    assert!(
        !String::from_utf8_lossy(&all.stdout).contains(&b),
        "b answered a multicast ping"
    );

    // An address a gives itself is not its own: dropped and counted.
    let spoof = "fd00:93::99";
    ok(
        &in_container(
            &lab,
            "a",
            &[
                "ip",
                "addr",
                "add",
                &format!("{spoof}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        ),
        "adding an address",
    );
    let spoofed = counter("drop_spoofed_ip");
    assert!(!in_container(
        &lab,
        "a",
        &["ping", "-6", "-c1", "-W2", "-I", spoof, "fd00:93::1"]
    )
    .status
    .success());
    assert!(counter("drop_spoofed_ip") > spoofed);
    let _ = a;

    // The programs go with the container.
    lab.netd_ok(&["rm", "-f", "a", "b"]);
    assert!(
        lab.endpoint_pins().is_empty(),
        "pins left: {:?}",
        lab.endpoint_pins()
    );
    let (ipt, nft) = lab.host_rulesets();
    assert!(ipt.is_empty() && nft.is_empty(), "{ipt}\n{nft}");
}

/// Sends, from a container's eth0 (a raw ICMPv6 socket: the kernel fills in the
/// checksum), a router advertisement and a neighbour advertisement for `target`.
const SEND_RA_AND_NA: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
to = ("ff02::1", 0, 0, socket.if_nametoindex("eth0"))
# Router advertisement: hop limit 64, router lifetime 1800 s.
s.sendto(bytes([134, 0, 0, 0, 64, 0, 0x07, 0x08]) + bytes(8), to)
# Neighbour advertisement (override) for someone else's address.
s.sendto(bytes([136, 0, 0, 0, 0x20, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, sys.argv[1]), to)
"#;

#[test]
fn a_containers_router_and_foreign_neighbour_advertisements_are_dropped_and_counted() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.99.0.0/24",
        "--subnet",
        "fd00:99::/64",
        "-o",
        "com.docker.network.bridge.name=ndt-v6ra",
        "v6ra",
    ]);
    run(&lab, "a", &["--network", "v6ra"]);
    run(&lab, "b", &["--network", "v6ra"]);
    let b6 = lab.inspect("b")["NetworkSettings"]["Networks"]["v6ra"]["GlobalIPv6Address"]
        .as_str()
        .expect("b's IPv6 address")
        .to_string();
    let counter = |r: &str| lab.stats()["counters"][r].as_u64().unwrap_or(0);
    let (ra, nd) = (counter("drop_router_advert"), counter("drop_spoofed_nd"));
    ok(
        &in_container(&lab, "a", &["python3", "-c", SEND_RA_AND_NA, &b6]),
        "sending an RA and an NA from a",
    );
    assert!(counter("drop_router_advert") > ra, "the RA was not dropped");
    assert!(
        counter("drop_spoofed_nd") > nd,
        "the NA for b was not dropped"
    );
    // b still reaches a: its neighbour entry for a was not poisoned, its routes are its own.
    let a6 = lab.inspect("a")["NetworkSettings"]["Networks"]["v6ra"]["GlobalIPv6Address"]
        .as_str()
        .expect("a's IPv6 address")
        .to_string();
    ok(&ping6(&lab, "b", &a6), "b pings a");
    let routes = ok(
        &in_container(&lab, "b", &["ip", "-6", "route"]),
        "b's routes",
    );
    assert!(!routes.contains("proto ra"), "{routes}");
}
