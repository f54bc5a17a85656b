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

    // A clean stop leaves the cluster at once (its lease is revoked), and the other
    // node's watch sees it go.
    c.nodes[1].stop_daemon(libc::SIGTERM);
    assert_eq!(c.etcd_keys("/netd/v1/nodes/").len(), 1);
    eventually(5, "node 0 sees node 1 leave", || {
        cluster_nodes(&c.nodes[0]) == vec![Cluster::node_ip(0)]
    });

    // Back again: same id (the instance id is kept in its state), registered again.
    c.nodes[1].start_daemon().expect("restarting node 1");
    eventually(10, "node 1 is back", || cluster_nodes(&c.nodes[0]) == both);
    assert_eq!(c.etcd_keys("/netd/v1/nodes/").len(), 2);

    c.nodes[0].stop_daemon(libc::SIGTERM);
    c.nodes[1].stop_daemon(libc::SIGTERM);
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
