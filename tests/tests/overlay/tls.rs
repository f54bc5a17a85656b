//! The cluster store behind TLS: etcd asks every client for a certificate signed by its
//! CA (`--client-cert-auth`), and the daemons reach it with Docker's
//! `--cluster-store-opt kv.cacertfile/kv.certfile/kv.keyfile`.
use netd_lab::cluster::Cluster;
use netd_tests::Lab;

use super::{eventually, has_overlay};

fn tester() -> String {
    netd_tests::tester_bin()
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// A tester TCP server `name` on `net` on `node`: its address.
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
    let ns = format!("{}{name}", node.container_prefix());
    node.wait_listening(&ns, &["serve-tcp", "7000"]);
    node.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {net}"))
        .to_string()
}

#[test]
fn overlay_networks_cross_two_nodes_through_etcd_with_mutual_tls() {
    let c = Cluster::new_tls(2, &[]);
    assert!(c.store_url().starts_with("etcds://"));
    eventually(10, "both nodes registered over TLS", || {
        c.etcd_keys("/netd/v1/nodes/").len() == 2
    });
    c.nodes[0].netd_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.62.9.0/24",
        "tlsov",
    ]);
    eventually(10, "node 1 sees the network", || {
        has_overlay(&c.nodes[1], "tlsov")
    });
    let a = serve(&c.nodes[0], "a", "tlsov");
    let b = serve(&c.nodes[1], "b", "tlsov");
    let out = c.nodes[1]
        .from_container("b", &["tcp", &format!("{a}:7000")])
        .expect("b -> a across the nodes");
    assert!(out.starts_with(&format!("peer={b}:")), "{out}");
    let out = c.nodes[0]
        .from_container("a", &["tcp", &format!("{b}:7000")])
        .expect("a -> b across the nodes");
    assert!(out.starts_with(&format!("peer={a}:")), "{out}");
}

/// The `Error:` lines a daemon that did not start wrote.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("Error: ")).collect()
}

#[test]
fn a_wrong_ca_or_no_client_certificate_stops_the_start_with_one_line() {
    let mut c = Cluster::new_tls(0, &[]);
    let t = c.tls.as_ref().expect("TLS files");
    let (ca, other, cert, key) = (
        t.ca().display().to_string(),
        t.other_ca().display().to_string(),
        t.client_cert().display().to_string(),
        t.client_key().display().to_string(),
    );
    let url = c.store_url();
    let cases: [(Vec<String>, &str); 2] = [
        // etcd's certificate is not signed by this CA.
        (
            vec![
                format!("kv.cacertfile={other}"),
                format!("kv.certfile={cert}"),
                format!("kv.keyfile={key}"),
            ],
            "not signed by kv.cacertfile",
        ),
        // No client certificate: etcd refuses the handshake.
        (
            vec![format!("kv.cacertfile={ca}")],
            "give kv.certfile and kv.keyfile",
        ),
    ];
    for (opts, advice) in cases {
        let mut args = vec!["--cluster-store".to_string(), url.clone()];
        for o in &opts {
            args.push("--cluster-store-opt".into());
            args.push(o.clone());
        }
        let e = match c.add_node(&args, &[]) {
            Ok(()) => panic!(
                "the daemon started: {}",
                std::fs::read_to_string(c.nodes[c.nodes.len() - 1].dir.join("daemon.log"))
                    .unwrap_or_default()
            ),
            Err(e) => e.to_string(),
        };
        // Refused before the daemon touched anything: no pinned datapath.
        let node = &c.nodes[c.nodes.len() - 1];
        assert!(
            !node.bpf_dir.join("links").exists(),
            "a refused start pinned its datapath"
        );
        let errors = error_lines(&e);
        assert_eq!(errors.len(), 1, "one error line: {e}");
        assert!(
            errors[0].contains(&url) && errors[0].contains(advice),
            "{}",
            errors[0]
        );
    }
}
