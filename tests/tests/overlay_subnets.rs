//! End-to-end: overlay networks with several IPv4 subnets (Docker's own example,
//! verbatim), a gateway and aux addresses per subnet, cluster-wide, on a cluster lab of
//! two nodes and etcd. Run as root (cargo xtask test does).
use std::time::{Duration, Instant};

use netd_lab::cluster::Cluster;
use netd_tests::{json, ok, Lab};
use serde_json::Value;

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ipam(node: &Lab, net: &str) -> Option<Value> {
    let o = node.netd(&["network", "inspect", net]);
    o.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&o.stdout))[0]["IPAM"]["Config"].clone())
}

fn ip_on(node: &Lab, name: &str, net: &str) -> String {
    node.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {net}"))
        .to_string()
}

/// A sandbox `name` on `net` (and `extra` flags), retried while another node's record
/// of the address it would get is on its way (that conflict is a clear error).
fn sandbox(node: &Lab, name: &str, net: &str, extra: &[&str]) -> String {
    eventually(10, "the container is made", || {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend_from_slice(extra);
        node.netd(&args).status.success()
    });
    ip_on(node, name, net)
}

fn ping(node: &Lab, from: &str, to: &str) -> Result<(), String> {
    let ns = format!("{}{from}", node.container_prefix());
    let o = node.exec_in(&ns, &["ping", "-c", "1", "-W", "2", to]);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{from} -> {to}: {}",
            String::from_utf8_lossy(&o.stdout)
        ))
    }
}

#[test]
fn dockers_overlay_example_with_two_subnets_runs_verbatim_across_nodes() {
    let c = Cluster::new(2, &[]);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    // docs.docker.com's `network create` example, as its flags are given there.
    a.netd_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet=192.168.10.0/25",
        "--subnet=192.168.20.0/25",
        "--gateway=192.168.10.100",
        "--gateway=192.168.20.100",
        "--aux-address=my-router=192.168.10.5",
        "--aux-address=my-switch=192.168.10.6",
        "--aux-address=my-printer=192.168.20.5",
        "--aux-address=my-nas=192.168.20.6",
        "my-multihost-network",
    ]);
    let net = "my-multihost-network";
    eventually(10, "node B sees the network", || ipam(b, net).is_some());
    let cfg = ipam(b, net).unwrap();
    assert_eq!(cfg[0]["Subnet"], "192.168.10.0/25");
    assert_eq!(cfg[0]["Gateway"], "192.168.10.100");
    assert_eq!(
        cfg[0]["AuxiliaryAddresses"],
        serde_json::json!({"my-router": "192.168.10.5", "my-switch": "192.168.10.6"})
    );
    assert_eq!(cfg[1]["Subnet"], "192.168.20.0/25");
    assert_eq!(cfg[1]["Gateway"], "192.168.20.100");
    assert_eq!(
        cfg[1]["AuxiliaryAddresses"],
        serde_json::json!({"my-nas": "192.168.20.6", "my-printer": "192.168.20.5"})
    );
    // One claim per subnet in the cluster store.
    let mut claims = c.etcd_keys("/netd/v1/subnets/");
    claims.sort();
    assert_eq!(
        claims,
        [
            "/netd/v1/subnets/192.168.10.0-25",
            "/netd/v1/subnets/192.168.20.0-25"
        ]
    );
    // Every node's bridge holds both gateways.
    for node in [a, b] {
        let o = node.exec_in(&node.host, &["ip", "-4", "-o", "addr"]);
        let addrs = String::from_utf8_lossy(&o.stdout).to_string();
        let dev_of = |addr: &str| {
            addrs
                .lines()
                .find(|l| l.contains(addr))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(String::from)
        };
        let dev = dev_of("192.168.10.100/25");
        assert!(
            dev.is_some() && dev == dev_of("192.168.20.100/25"),
            "{addrs}"
        );
    }

    // Addresses: the first subnet first (the aux addresses and gateways skipped), a
    // static one in either subnet, on either node.
    let a1 = sandbox(a, "a1", net, &[]);
    assert_eq!(a1, "192.168.10.1");
    let b1 = sandbox(b, "b1", net, &["--ip", "192.168.20.10"]);
    let b2 = sandbox(b, "b2", net, &["--ip", "192.168.10.50"]);
    let a2 = sandbox(a, "a2", net, &["--ip", "192.168.20.20"]);
    assert_eq!(
        b.inspect("b1")["NetworkSettings"]["Networks"][net]["Gateway"],
        "192.168.20.100",
        "each subnet's own gateway"
    );
    // Across nodes, within a subnet and between the two (through each side's
    // gateway); on one node between the subnets.
    for (node, from, to) in [
        (a, "a1", &b2),
        (b, "b2", &a1),
        (a, "a1", &b1),
        (b, "b1", &a1),
        (a, "a2", &b2),
        (a, "a1", &a2),
        (b, "b1", &b2),
    ] {
        let r = ping(node, from, to);
        eventually(10, &format!("{r:?}"), || ping(node, from, to).is_ok());
    }
    // An address outside both subnets, or an aux address, is refused.
    for (ip, want) in [
        ("192.168.30.1", "is not a usable address"),
        ("192.168.20.5", "already in use"),
    ] {
        let o = a.netd(&["run", "-d", "--name", "x", "--network", net, "--ip", ip]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{ip}: {err}");
    }
}

#[test]
fn addresses_come_from_the_first_subnet_with_room_cluster_wide() {
    let c = Cluster::new(2, &[]);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    // The docker CLI pairs each gateway with its subnet too.
    ok(
        &a.docker(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.71.0.0/29",
            "--subnet",
            "10.71.1.0/29",
            "--gateway",
            "10.71.1.6",
            "small",
        ]),
        "docker network create -d overlay with two subnets",
    );
    eventually(10, "node B sees the network", || ipam(b, "small").is_some());
    let cfg = ipam(a, "small").unwrap();
    let gw = |s: &str| {
        cfg.as_array()
            .unwrap()
            .iter()
            .find(|c| c["Subnet"] == s)
            .map(|c| c["Gateway"].clone())
    };
    assert_eq!(gw("10.71.0.0/29"), Some("10.71.0.1".into()));
    assert_eq!(gw("10.71.1.0/29"), Some("10.71.1.6".into()));
    let first = cfg[0]["Subnet"].as_str().unwrap().to_string();
    let second = cfg[1]["Subnet"].as_str().unwrap().to_string();
    // 5 addresses in each /29 besides its gateway: five sandboxes over both nodes
    // fill the first subnet, the sixth gets the second's first free address.
    let mut got = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { a } else { b };
        got.push(sandbox(node, &format!("s{i}"), "small", &[]));
    }
    let prefix = |s: &str| s.rsplit_once('.').unwrap().0.to_string();
    let (p1, p2) = (
        prefix(first.split('/').next().unwrap()),
        prefix(second.split('/').next().unwrap()),
    );
    assert!(
        got[..5].iter().all(|ip| ip.starts_with(&format!("{p1}."))),
        "{got:?}"
    );
    assert!(got[5].starts_with(&format!("{p2}.")), "{got:?}");
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "no address twice: {got:?}");
    // A bridge network takes one IPv4 subnet, as Docker's bridge driver.
    let o = a.netd(&[
        "network",
        "create",
        "--subnet",
        "10.72.0.0/24",
        "--subnet",
        "10.72.1.0/24",
        "br2",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("the bridge driver takes one IPv4 subnet"),
        "{err}"
    );
}
