//! End-to-end: overlay networks across hosts (issue #15). A cluster lab: two or more
//! lab hosts on an underlay switch, etcd in a namespace of its own, every daemon
//! started with --cluster-store and --cluster-advertise.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use netd_lab::cluster::Cluster;
use netd_tests::Lab;
use serde_json::Value;

#[path = "overlay/tls.rs"]
mod tls;
#[path = "overlay/traffic.rs"]
mod traffic;

/// `GET /info` of a node's daemon (the cluster fields are netd's and pre-Swarm Docker's).
fn info(node: &Lab) -> Value {
    let o = Command::new("curl")
        .args(["-sf", "--unix-socket"])
        .arg(node.socket())
        .arg("http://netd/info")
        .output()
        .expect("running curl");
    assert!(o.status.success(), "GET /info failed");
    serde_json::from_slice(&o.stdout).expect("/info is JSON")
}

fn cluster_nodes(node: &Lab) -> Vec<String> {
    let mut v: Vec<String> = info(node)["ClusterNodes"]
        .as_array()
        .expect("ClusterNodes")
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Polls `f` for up to `secs` seconds.
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_register_with_a_lease_and_see_each_other() {
    let mut c = Cluster::new(2, &[]);
    let both = vec![Cluster::node_ip(0), Cluster::node_ip(1)];
    for (i, node) in c.nodes.iter().enumerate() {
        eventually(10, "every node sees both", || cluster_nodes(node) == both);
        let inf = info(node);
        assert_eq!(inf["ClusterAdvertise"], Cluster::node_ip(i).as_str());
        assert!(inf["ClusterStore"].as_str().unwrap().starts_with("etcd://"));
    }
    assert_eq!(c.etcd_keys("/netd/v1/nodes/").len(), 2);
    // One VXLAN device per node, in metadata mode: no VNI, no remote, no learning.
    for node in &c.nodes {
        let o = Command::new("ip")
            .args(["-n", &node.host, "-d", "link", "show", "ndbr-vxlan"])
            .output()
            .expect("running ip");
        let dev = String::from_utf8_lossy(&o.stdout);
        assert!(
            dev.contains("vxlan external")
                && dev.contains("dstport 4789")
                && dev.contains("nolearning"),
            "{dev}"
        );
        assert!(
            dev.contains("state UNKNOWN") || dev.contains(",UP"),
            "{dev}"
        );
    }

    // A stop is not a leave: the node keeps its lease, so the others keep tunnelling to
    // its containers while its agent restarts (it ages out after the lease's TTL if no
    // agent comes back: a_node_killed_ages_out_when_its_lease_ends).
    c.nodes[1].stop_daemon(libc::SIGTERM);
    assert_eq!(c.etcd_keys("/netd/v1/nodes/").len(), 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cluster_nodes(&c.nodes[0]), both);

    // Back again: same id (the instance id is kept in its state), registered again.
    c.nodes[1].start_daemon().expect("restarting node 1");
    eventually(10, "node 1 is back", || cluster_nodes(&c.nodes[0]) == both);
    assert_eq!(c.etcd_keys("/netd/v1/nodes/").len(), 2);

    // Stopped, both are still members; removed (--cleanup), they leave the store.
    c.nodes[0].stop_daemon(libc::SIGTERM);
    c.nodes[1].stop_daemon(libc::SIGTERM);
    assert_eq!(c.etcd_keys("/netd/v1/nodes/").len(), 2);
    for node in &c.nodes {
        let o = node.netd_cleanup().expect("cleanup");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(c.etcd_keys("/netd/").len(), 0, "no key of the test is left");
}

#[test]
fn a_bad_cluster_flag_is_one_clear_error() {
    for (args, want) in [
        (
            vec!["--cluster-store", "consul://10.0.0.1:8500"],
            "is not etcd://",
        ),
        (
            vec![
                "--cluster-store",
                "etcd://10.0.0.1:2379",
                "--cluster-advertise",
                "0.0.0.0",
            ],
            "cannot reach",
        ),
        (
            vec!["--cluster-advertise", "10.0.0.1"],
            "needs --cluster-store",
        ),
    ] {
        let o = Command::new(netd_tests::netd_bin())
            .arg("daemon")
            // Never the machine's own namespace, even if a flag were wrongly accepted.
            .args(["--netns", "netd-test-no-such-namespace"])
            .args(&args)
            .output()
            .expect("running netd");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `network ls --format json` of a node (a JSON object a line), as (name, driver, scope).
fn networks(node: &Lab) -> Vec<(String, String, String)> {
    let out = node.netd_ok(&["network", "ls", "--format", "json"]);
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (s("Name"), s("Driver"), s("Scope"))
        })
        .collect()
}

fn has_overlay(node: &Lab, name: &str) -> bool {
    networks(node)
        .iter()
        .any(|(n, d, s)| n == name && d == "overlay" && s == "global")
}

#[test]
fn an_overlay_network_made_on_one_node_is_seen_on_every_node() {
    let c = Cluster::new(2, &[]);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.netd_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.60.0.0/24",
        "ov1",
    ]);
    assert!(has_overlay(a, "ov1"), "{:?}", networks(a));
    eventually(10, "node B sees ov1", || has_overlay(b, "ov1"));
    let inspect: Value =
        serde_json::from_str(&b.netd_ok(&["network", "inspect", "ov1"])).expect("JSON");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.60.0.0/24");

    // Names and subnets are the cluster's: B may not take them again.
    let dup = b.netd(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.61.0.0/24",
        "ov1",
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let overlap = b.netd(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.60.0.128/25",
        "ov2",
    ]);
    assert!(!overlap.status.success());
    assert!(String::from_utf8_lossy(&overlap.stderr).contains("overlaps"));
    // A second one gets a VNI of its own (and no subnet given: one is picked).
    b.netd_ok(&["network", "create", "-d", "overlay", "ov2"]);
    eventually(10, "node A sees ov2", || has_overlay(a, "ov2"));
    let vnis = c.etcd_keys("/netd/v1/vnis/");
    assert_eq!(vnis.len(), 2, "{vnis:?}");

    // Removed on B: gone everywhere, with every claim in etcd.
    b.netd_ok(&["network", "rm", "ov1"]);
    b.netd_ok(&["network", "rm", "ov2"]);
    eventually(10, "node A drops them", || {
        !has_overlay(a, "ov1") && !has_overlay(a, "ov2")
    });
    assert!(!has_overlay(b, "ov1"));
    let left: Vec<String> = c
        .etcd_keys("/netd/")
        .into_iter()
        .filter(|k| !k.starts_with("/netd/v1/nodes/"))
        .collect();
    assert!(left.is_empty(), "left in etcd: {left:?}");
}

#[test]
fn etcd_down_fails_changes_clearly_and_they_work_again_when_it_is_back() {
    let mut c = Cluster::new(2, &[]);
    c.nodes[0].netd_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.62.0.0/24",
        "ov1",
    ]);
    eventually(10, "node B sees ov1", || has_overlay(&c.nodes[1], "ov1"));

    c.stop_etcd();
    let o = c.nodes[1].netd(&["network", "create", "-d", "overlay", "ov2"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cluster store"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // What the nodes had stays (their state is local).
    assert!(has_overlay(&c.nodes[1], "ov1"));

    c.start_etcd().expect("restarting etcd");
    eventually(20, "a change goes through again", || {
        c.nodes[1]
            .netd(&["network", "create", "-d", "overlay", "ov2"])
            .status
            .success()
    });
    eventually(10, "node A sees ov2", || has_overlay(&c.nodes[0], "ov2"));
    c.nodes[0].netd_ok(&["network", "rm", "ov1", "ov2"]);
    eventually(10, "node B drops them", || !has_overlay(&c.nodes[1], "ov1"));
}

#[test]
fn overlay_networks_need_a_cluster_store() {
    let lab = Lab::new();
    let o = lab.netd(&["network", "create", "-d", "overlay", "ov"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--cluster-store"), "{err}");
    assert!(!lab.netd_ok(&["network", "ls"]).contains("ov"));
}

#[test]
fn a_node_killed_ages_out_when_its_lease_ends() {
    let mut c = Cluster::new(2, &[]);
    let both = vec![Cluster::node_ip(0), Cluster::node_ip(1)];
    eventually(10, "both registered", || cluster_nodes(&c.nodes[0]) == both);
    // kill -9: no revoke; the record lives until the lease's TTL (15 s) runs out.
    let killed = Instant::now();
    c.nodes[1].stop_daemon(libc::SIGKILL);
    assert_eq!(
        c.etcd_keys("/netd/v1/nodes/").len(),
        2,
        "not yet: the lease runs"
    );
    eventually(30, "node 0 sees node 1 age out", || {
        cluster_nodes(&c.nodes[0]) == vec![Cluster::node_ip(0)]
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(5),
        "aged out after {:?}, before its lease could end",
        killed.elapsed()
    );
    assert_eq!(c.etcd_keys("/netd/v1/nodes/").len(), 1);
}
