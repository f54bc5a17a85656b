//! End-to-end: IPv6 names and the default bridge's IPv6 (issue #12, control plane).
//! The embedded DNS answers AAAA and ip6.arpa PTR for containers with an IPv6 address,
//! NOERROR-empty AAAA for those without, and still forwards AAAA of other names; a
//! name resolves for `ping -6`. `netd daemon --ipv6 --fixed-cidr-v6` makes the default
//! `bridge` dual stack, and a restart with other flags rebuilds it without leftovers.
use std::{collections::BTreeSet, path::Path, process::Command, process::Stdio};

use netd_tests::{Lab, CLIENT_IP};
use serde_json::Value;

fn ns_of(lab: &Lab, name: &str) -> String {
    format!("{}{name}", lab.container_prefix())
}

fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `dig @127.0.0.11 ARGS` from container `from`'s namespace: (status, answers' data).
fn dig(lab: &Lab, from: &str, args: &[&str]) -> (String, Vec<String>, String) {
    let mut full = vec!["dig", "@127.0.0.11", "+tries=1", "+time=5"];
    full.extend_from_slice(args);
    let o = lab.exec_in(&ns_of(lab, from), &full);
    let raw = String::from_utf8_lossy(&o.stdout).into_owned();
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_string();
    let answers = raw
        .split(";; ANSWER SECTION:\n")
        .nth(1)
        .map(|s| {
            s.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().last().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (status, answers, raw)
}

fn endpoint(lab: &Lab, name: &str, net: &str) -> Value {
    lab.inspect(name)["NetworkSettings"]["Networks"][net].clone()
}

fn run(lab: &Lab, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sleep", "600"]);
    lab.netd_ok(&args);
}

/// dnsmasq in the client namespace (the outside world) with an AAAA for outside.test.
fn dnsmasq_in_client(lab: &mut Lab) {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            "dnsmasq",
            "--keep-in-foreground",
        ])
        .args([
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
        ])
        .arg(format!("--listen-address={CLIENT_IP}"))
        .args(["--address=/outside.test/2001:db8::7", "--pid-file="])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting dnsmasq in the client namespace");
    lab.adopt_background(child);
    let client = lab.client.clone();
    lab.wait_listening(&client, &["serve-udp", "53"]);
}

#[test]
fn ipv6_names_answer_aaaa_ptr6_and_ping6_by_name() {
    let mut lab = Lab::new();
    dnsmasq_in_client(&mut lab);
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.96.0.0/24",
        "--subnet",
        "fd00:96::/64",
        "n6",
    ]);
    lab.netd_ok(&["network", "create", "--subnet", "10.97.0.0/24", "plain"]);
    run(
        &lab,
        "a",
        &["--network", "n6", "--alias", "svc", "--dns", CLIENT_IP],
    );
    run(&lab, "b", &["--network", "n6", "--alias", "svc"]);
    run(&lab, "c4", &["--network", "plain"]);
    lab.netd_ok(&["network", "connect", "plain", "a"]);
    let a6 = endpoint(&lab, "a", "n6")["GlobalIPv6Address"]
        .as_str()
        .expect("a's IPv6 address")
        .to_string();
    let eb = endpoint(&lab, "b", "n6");
    let b6 = eb["GlobalIPv6Address"]
        .as_str()
        .expect("b's IPv6")
        .to_string();
    let b4 = eb["IPAddress"].as_str().expect("b's IPv4").to_string();
    assert!(b6.starts_with("fd00:96::"), "{eb}");

    // AAAA is the inspect's GlobalIPv6Address, A the IPAddress, ANY both.
    let (st, ans, raw) = dig(&lab, "a", &["b", "AAAA"]);
    assert_eq!((st.as_str(), ans), ("NOERROR", vec![b6.clone()]), "{raw}");
    let (_, ans, raw) = dig(&lab, "a", &["b", "A"]);
    assert_eq!(ans, vec![b4.clone()], "{raw}");
    let (_, ans, raw) = dig(&lab, "a", &["+tcp", "B", "ANY"]);
    assert_eq!(
        ans.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([b4.clone(), b6.clone()]),
        "{raw}"
    );
    // The shared alias answers every IPv6 address.
    let (_, ans, raw) = dig(&lab, "b", &["svc", "AAAA"]);
    assert_eq!(
        ans.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([a6.clone(), b6.clone()]),
        "{raw}"
    );
    // PTR of an IPv6 address (ip6.arpa nibbles).
    let (_, ans, raw) = dig(&lab, "a", &["-x", &b6]);
    assert_eq!(ans, vec!["b.".to_string()], "{raw}");
    // A container without IPv6: its name exists, AAAA is NOERROR and empty.
    let (st, ans, raw) = dig(&lab, "a", &["c4", "AAAA"]);
    assert_eq!(st, "NOERROR", "{raw}");
    assert!(ans.is_empty(), "c4 has no IPv6: {raw}");
    assert_eq!(dig(&lab, "a", &["c4", "A"]).1.len(), 1);
    // Other names' AAAA still go to the upstream (a's --dns, in the client).
    let (_, ans, raw) = dig(&lab, "a", &["www.outside.test", "AAAA"]);
    assert_eq!(ans, vec!["2001:db8::7".to_string()], "{raw}");

    // By name, through the resolver: ping -6 resolves b's AAAA over 127.0.0.11.
    ok(
        &lab.exec_in(&ns_of(&lab, "a"), &["ping", "-6", "-c1", "-W2", "b"]),
        "a pings b by name over IPv6",
    );
    // a's hosts lists its own IPv6 address next to the IPv4 one, as Docker's.
    let hosts =
        std::fs::read_to_string(Path::new("/etc/netns").join(ns_of(&lab, "a")).join("hosts"))
            .expect("a's hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&format!("{a6}\t")) && l.ends_with(" a")),
        "{hosts}"
    );
    lab.netd_ok(&["rm", "-f", "a", "b", "c4"]);
    lab.netd_ok(&["network", "rm", "n6", "plain"]);
}

fn bridge_json(lab: &Lab) -> Value {
    let out = lab.netd_ok(&["network", "inspect", "bridge"]);
    serde_json::from_str::<Value>(&out).expect("inspect JSON")[0].clone()
}

/// The host's global IPv6 addresses on the default bridge, and how many bridges the
/// host namespace has.
fn bridge_v6(lab: &Lab) -> (String, usize) {
    let name = bridge_json(lab)["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .expect("bridge name")
        .to_string();
    let addrs = ok(
        &lab.exec_in(
            &lab.host,
            &[
                "ip", "-6", "-o", "addr", "show", "dev", &name, "scope", "global",
            ],
        ),
        "bridge addresses",
    );
    let bridges = ok(
        &lab.exec_in(&lab.host, &["ip", "-o", "link", "show", "type", "bridge"]),
        "bridges",
    );
    (addrs, bridges.lines().count())
}

fn restart_with(lab: &mut Lab, args: &[&str]) {
    lab.stop_daemon(libc::SIGTERM);
    lab.extra_daemon_args = args.iter().map(|s| s.to_string()).collect();
    lab.start_daemon().expect("restarting the daemon");
}

#[test]
fn ipv6_default_bridge_follows_the_daemon_flags() {
    let mut lab = Lab::with_args(&["--ipv6", "--fixed-cidr-v6", "fd00:dead:beef::/64"]);
    let b = bridge_json(&lab);
    assert_eq!(b["EnableIPv6"], true, "{b}");
    assert_eq!(
        b["IPAM"]["Config"][1]["Subnet"], "fd00:dead:beef::/64",
        "{b}"
    );
    assert_eq!(
        b["IPAM"]["Config"][1]["Gateway"], "fd00:dead:beef::1",
        "{b}"
    );
    run(&lab, "d", &[]);
    let e = endpoint(&lab, "d", "bridge");
    let d6 = e["GlobalIPv6Address"]
        .as_str()
        .expect("d's IPv6")
        .to_string();
    assert!(d6.starts_with("fd00:dead:beef::"), "{e}");
    assert_eq!(e["IPv6Gateway"], "fd00:dead:beef::1", "{e}");
    ok(
        &lab.exec_in(
            &ns_of(&lab, "d"),
            &["ping", "-6", "-c1", "-W2", "fd00:dead:beef::1"],
        ),
        "d pings the default bridge's IPv6 gateway",
    );

    // Another --fixed-cidr-v6 with a container on bridge: kept (its address came from
    // it), with a warning saying why.
    restart_with(&mut lab, &["--ipv6", "--fixed-cidr-v6", "fd00:beef::/64"]);
    let b = bridge_json(&lab);
    assert_eq!(
        b["IPAM"]["Config"][1]["Subnet"], "fd00:dead:beef::/64",
        "{b}"
    );
    assert!(
        lab.daemon_log().contains("containers are on it (d)"),
        "{}",
        lab.daemon_log()
    );
    lab.netd_ok(&["rm", "-f", "d"]);

    // Without containers the bridge follows: the new gateway only, one bridge.
    restart_with(&mut lab, &["--ipv6", "--fixed-cidr-v6", "fd00:beef::/64"]);
    let b = bridge_json(&lab);
    assert_eq!(b["IPAM"]["Config"][1]["Subnet"], "fd00:beef::/64", "{b}");
    let (addrs, bridges) = bridge_v6(&lab);
    assert!(addrs.contains("fd00:beef::1/64"), "{addrs}");
    assert!(!addrs.contains("fd00:dead:beef"), "stale address: {addrs}");
    assert_eq!(bridges, 1, "one bridge");
    run(&lab, "e", &[]);
    let e6 = endpoint(&lab, "e", "bridge")["GlobalIPv6Address"].clone();
    assert_eq!(e6, "fd00:beef::2");
    ok(
        &lab.exec_in(
            &ns_of(&lab, "e"),
            &["ping", "-6", "-c1", "-W2", "fd00:beef::1"],
        ),
        "e pings the new gateway",
    );
    lab.netd_ok(&["rm", "-f", "e"]);

    // --ipv6 alone: a /64 of the ULA pool; then no --ipv6: no IPv6 left on the bridge.
    restart_with(&mut lab, &["--ipv6"]);
    let b = bridge_json(&lab);
    let pool = b["IPAM"]["Config"][1]["Subnet"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(pool.starts_with("fd") && pool.ends_with("::/64"), "{b}");
    assert!(!pool.starts_with("fd00:beef:"), "{b}");
    restart_with(&mut lab, &[]);
    let b = bridge_json(&lab);
    assert_eq!(b["EnableIPv6"], false, "{b}");
    assert_eq!(b["IPAM"]["Config"].as_array().map(Vec::len), Some(1), "{b}");
    let (addrs, bridges) = bridge_v6(&lab);
    assert!(addrs.trim().is_empty(), "stale addresses: {addrs}");
    assert_eq!(bridges, 1);
    run(&lab, "f", &[]);
    assert_eq!(endpoint(&lab, "f", "bridge")["GlobalIPv6Address"], "");
    lab.netd_ok(&["rm", "-f", "f"]);

    // --fixed-cidr-v6 without --ipv6: one error line, the daemon does not start.
    lab.stop_daemon(libc::SIGTERM);
    lab.extra_daemon_args = vec!["--fixed-cidr-v6".into(), "fd00:dead:beef::/64".into()];
    let err = lab
        .start_daemon()
        .expect_err("--fixed-cidr-v6 alone must fail");
    assert!(
        err.to_string()
            .contains("Error: --fixed-cidr-v6 fd00:dead:beef::/64 needs --ipv6"),
        "{err}"
    );
}
