//! Containers of overlay networks on different nodes: reachability by address and by
//! name, isolation, masquerade, and the datapath surviving its agent and etcd.
use netd_lab::cluster::Cluster;
use netd_tests::{Lab, CLIENT_IP, HOST_IP};

use super::{eventually, has_overlay};

fn tester() -> String {
    netd_tests::tester_bin()
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

fn ns_of(node: &Lab, name: &str) -> String {
    format!("{}{name}", node.container_prefix())
}

fn ip_on(node: &Lab, name: &str, net: &str) -> String {
    node.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {net}"))
        .to_string()
}

fn counter(node: &Lab, name: &str) -> u64 {
    node.stats()["counters"][name].as_u64().unwrap_or(0)
}

/// An overlay network made on node 0 and seen on every node.
fn overlay(c: &Cluster, name: &str, subnet: &str) {
    c.nodes[0].netd_ok(&[
        "network", "create", "-d", "overlay", "--subnet", subnet, name,
    ]);
    for n in &c.nodes[1..] {
        eventually(10, "every node sees the network", || has_overlay(n, name));
    }
}

/// A tester TCP server `name` on `net` on `node`: its address. Retried while another
/// node's record of the same address is on its way (a conflict is a clear error).
fn serve(node: &Lab, name: &str, net: &str) -> String {
    let t = tester();
    eventually(10, "the container starts", || {
        node.netd(&[
            "run",
            "-d",
            "--network",
            net,
            "--name",
            name,
            "--",
            &t,
            "serve-tcp",
            "7000",
        ])
        .status
        .success()
    });
    node.wait_listening(&ns_of(node, name), &["serve-tcp", "7000"]);
    ip_on(node, name, net)
}

fn tcp_from(node: &Lab, name: &str, addr: &str) -> Result<String, String> {
    node.from_container(name, &["tcp", addr])
}

/// The addresses `name` resolves to inside container `from` (its embedded DNS).
fn resolve(node: &Lab, from: &str, name: &str) -> Vec<String> {
    let o = node.exec_in(&ns_of(node, from), &["getent", "ahostsv4", name]);
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn containers_on_two_nodes_reach_each_other_by_address_and_name() {
    let c = Cluster::new(2, &[]);
    overlay(&c, "ov1", "10.62.0.0/24");
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let a = serve(n0, "a", "ov1");
    let b = serve(n1, "b", "ov1");
    assert_ne!(a, b, "cluster-wide IPAM");
    assert_eq!(c.etcd_keys("/netd/v1/endpoints/").len(), 2);

    // TCP both ways, by address: the server sees the other container's own address.
    let out = tcp_from(n1, "b", &format!("{a}:7000")).expect("b -> a");
    assert!(out.starts_with(&format!("peer={b}:")), "{out}");
    let out = tcp_from(n0, "a", &format!("{b}:7000")).expect("a -> b");
    assert!(out.starts_with(&format!("peer={a}:")), "{out}");
    let ping = n1.exec_in(&ns_of(n1, "b"), &["ping", "-c", "1", "-W", "2", &a]);
    assert!(ping.status.success(), "ping b -> a");
    assert!(counter(n1, "overlay_tx") > 0 && counter(n1, "overlay_rx") > 0);
    assert!(counter(n1, "overlay_arp_reply") > 0);

    // By name, through each node's embedded DNS.
    eventually(10, "b resolves a", || {
        resolve(n1, "b", "a") == vec![a.clone()]
    });
    eventually(10, "a resolves b", || {
        resolve(n0, "a", "b") == vec![b.clone()]
    });

    // The MTU leaves room for VXLAN; the kernel holds no per-peer state for it.
    let link = n1.exec_in(&ns_of(n1, "b"), &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("mtu 1450"),
        "{}",
        String::from_utf8_lossy(&link.stdout)
    );
    for n in [n0, n1] {
        let fdb = n.exec_in(&n.host, &["bridge", "fdb", "show", "dev", "ndbr-vxlan"]);
        assert_eq!(String::from_utf8_lossy(&fdb.stdout).trim(), "");
        let (ipt, nft) = n.host_rulesets();
        assert!(ipt.is_empty() && nft.is_empty(), "{ipt}\n{nft}");
    }

    // A removed container is gone from the other node: its record, its name, its path.
    n1.netd_ok(&["rm", "-f", "b"]);
    assert_eq!(c.etcd_keys("/netd/v1/endpoints/").len(), 1);
    eventually(10, "a forgets b", || resolve(n0, "a", "b").is_empty());
    assert!(tcp_from(n0, "a", &format!("{b}:7000")).is_err());
}

#[test]
fn overlays_are_isolated_from_each_other_and_masquerade_on_their_own_node() {
    let mut c = Cluster::new(2, &[]);
    overlay(&c, "ov1", "10.62.1.0/24");
    overlay(&c, "ov2", "10.62.2.0/24");
    let a = serve(&c.nodes[0], "a", "ov1");
    let _ = serve(&c.nodes[1], "x", "ov2");
    let n1 = &c.nodes[1];
    let before = counter(n1, "drop_other_network");
    assert!(
        tcp_from(n1, "x", &format!("{a}:7000")).is_err(),
        "ov2 -> ov1"
    );
    assert!(counter(n1, "drop_other_network") > before);
    assert!(resolve(n1, "x", "a").is_empty(), "no names across networks");

    // The outside world sees the node's own address, as for a bridge network.
    c.nodes[0].serve_in_client(&["serve-tcp", "7100"]);
    let out = tcp_from(&c.nodes[0], "a", &format!("{CLIENT_IP}:7100")).expect("a -> outside");
    assert!(out.starts_with(&format!("peer={HOST_IP}:")), "{out}");

    // A port published on the node that runs the container, from that node's outside.
    let t = tester();
    let n1 = &c.nodes[1];
    n1.netd_ok(&[
        "run",
        "-d",
        "--network",
        "ov2",
        "-p",
        "8080:7000",
        "--name",
        "pub",
        "--",
        &t,
        "serve-tcp",
        "7000",
    ]);
    n1.wait_listening(&ns_of(n1, "pub"), &["serve-tcp", "7000"]);
    let out = n1
        .from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .expect("published port of an overlay container");
    assert!(out.starts_with(&format!("peer={CLIENT_IP}:")), "{out}");
}

#[test]
fn cross_node_traffic_outlives_a_killed_agent_and_etcd_and_a_dead_node_ages_out() {
    let mut c = Cluster::new(2, &[]);
    overlay(&c, "ov1", "10.62.3.0/24");
    let a = serve(&c.nodes[0], "a", "ov1");
    let _ = serve(&c.nodes[1], "b", "ov1");
    let to_a = format!("{a}:7000");

    // Node 0's agent killed: its programs and maps are pinned, traffic goes on.
    c.nodes[0].stop_daemon(libc::SIGKILL);
    tcp_from(&c.nodes[1], "b", &to_a).expect("b -> a with node 0's agent dead");
    c.nodes[0].start_daemon().expect("restarting node 0");
    tcp_from(&c.nodes[1], "b", &to_a).expect("b -> a after the restart");

    // etcd away: nothing of the datapath waits on it.
    c.stop_etcd();
    tcp_from(&c.nodes[1], "b", &to_a).expect("b -> a without etcd");
    c.start_etcd().expect("restarting etcd");
    eventually(20, "a's record is back", || {
        c.etcd_keys("/netd/v1/endpoints/").len() == 2
    });

    // Node 0 gone for good: when its lease ends, node 1 forgets its containers.
    c.nodes[0].stop_daemon(libc::SIGKILL);
    eventually(30, "node 1 drops a", || {
        c.etcd_keys("/netd/v1/endpoints/").len() == 1 && resolve(&c.nodes[1], "b", "a").is_empty()
    });
    assert!(tcp_from(&c.nodes[1], "b", &to_a).is_err());
}
