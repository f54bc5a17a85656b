//! netd-cni on a netd network with IPv6 (issue #12): the dual-stack result, static
//! addresses of both families, a published port over IPv6 from the client, CHECK of
//! the IPv6 side, and DEL leaving nothing of either family.
use netd_tests::{Lab, CLIENT_IP6, HOST_IP, HOST_IP6};
use serde_json::json;

use super::{cni, conf, retry, serve_in, RuntimeNs};

const SUBNET6: &str = "fd00:88:13::";

#[test]
fn cni_on_an_ipv6_network_gives_both_addresses_publishes_over_ipv6_and_deletes_both() {
    let mut lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.88.13.0/24",
        "--subnet",
        "fd00:88:13::/64",
        "cninet",
    ]);
    let ns = RuntimeNs::new(&lab, "cni6");
    let env = Some(("ctr6", ns.path.as_str(), "eth0"));
    // No hostIP: both families, as netd's own -p.
    let add_conf = conf(
        &lab,
        "1.1.0",
        json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]}}),
    );
    let add = cni(&lab, "ADD", env, &add_conf);
    assert!(add.ok, "ADD: {}\n{}", add.raw, lab.daemon_log());
    let r = &add.out;
    assert_eq!(r["ips"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.88.13.")),
        "{r}"
    );
    let addr6 = r["ips"][1]["address"].as_str().expect("IPv6").to_string();
    assert!(addr6.starts_with(SUBNET6) && addr6.ends_with("/64"), "{r}");
    assert_eq!(r["ips"][1]["gateway"], "fd00:88:13::1", "{r}");
    assert_eq!(r["ips"][1]["interface"], 2, "{r}");
    let routes: Vec<&str> = r["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|x| x["dst"].as_str())
        .collect();
    assert_eq!(routes, ["0.0.0.0/0", "::/0"], "{r}");

    // In the namespace: the IPv6 address, and the gateway answers ping -6.
    let ip6 = addr6.trim_end_matches("/64");
    let a = lab.exec_in(&ns.name, &["ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(String::from_utf8_lossy(&a.stdout).contains(ip6), "{a:?}");
    let ping = lab.exec_in(
        &ns.name,
        &["ping", "-6", "-c", "1", "-W", "2", "fd00:88:13::1"],
    );
    assert!(ping.status.success(), "ping -6 the gateway: {ping:?}");

    // The published port over IPv6 from the outside, the client's address kept; and
    // over IPv4 as before.
    serve_in(&mut lab, &ns, &["serve-tcp6", "80"]);
    let body = retry("[HOST_IP6]:8090", || {
        lab.from_client(&["tcp", &format!("[{HOST_IP6}]:8090")])
    });
    assert!(
        body.starts_with(&format!("peer=[{CLIENT_IP6}]:")),
        "body: {body}"
    );
    let body = retry("HOST_IP:8090", || {
        lab.from_client(&["tcp", &format!("{HOST_IP}:8090")])
    });
    assert!(body.starts_with("peer="), "{body}");
    let port = lab.netd_ok(&["port", "cni-ctr6-eth0"]);
    assert!(
        port.contains("[::]:8090") && port.contains("0.0.0.0:8090"),
        "{port}"
    );

    // CHECK: all as made; then the IPv6 default route removed behind netd's back.
    let mut check_conf = add_conf.clone();
    check_conf["prevResult"] = add.out.clone();
    let check = cni(&lab, "CHECK", env, &check_conf);
    assert!(check.ok, "CHECK: {}", check.raw);
    let _ = lab.exec_in(&ns.name, &["ip", "-6", "route", "del", "default"]);
    let check = cni(&lab, "CHECK", env, &check_conf);
    assert_eq!(check.out["code"], 101, "{}", check.raw);
    assert!(check.raw.contains("IPv6 default route"), "{}", check.raw);

    // Static addresses of both families (the ips capability).
    let ns2 = RuntimeNs::new(&lab, "cni6s");
    let env2 = Some(("ctr6s", ns2.path.as_str(), "eth0"));
    let static_conf = conf(
        &lab,
        "1.1.0",
        json!({"runtimeConfig": {"ips": ["fd00:88:13::42/64", "10.88.13.42/24"]}}),
    );
    let st = cni(&lab, "ADD", env2, &static_conf);
    assert!(st.ok, "static ADD: {}", st.raw);
    assert_eq!(st.out["ips"][0]["address"], "10.88.13.42/24", "{}", st.raw);
    assert_eq!(
        st.out["ips"][1]["address"], "fd00:88:13::42/64",
        "{}",
        st.raw
    );

    // An IPv6 address on a network without IPv6: one CNI error naming it, nothing made.
    lab.netd_ok(&["network", "create", "--subnet", "10.88.14.0/24", "cni4"]);
    let ns3 = RuntimeNs::new(&lab, "cni6x");
    let mut bad_conf = conf(
        &lab,
        "1.1.0",
        json!({"network": "cni4", "runtimeConfig": {"ips": ["fd00:88:14::5"]}}),
    );
    let bad = cni(
        &lab,
        "ADD",
        Some(("ctr6x", ns3.path.as_str(), "eth0")),
        &bad_conf,
    );
    assert!(!bad.ok);
    assert_eq!(bad.out["code"], 7, "{}", bad.raw);
    let details = bad.out["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("fd00:88:14::5") && details.contains("no IPv6"),
        "{}",
        bad.raw
    );
    bad_conf["runtimeConfig"]["ips"] = json!(["fd00:88:14::5", "fd00:88:14::6"]);
    let bad = cni(
        &lab,
        "ADD",
        Some(("ctr6x", ns3.path.as_str(), "eth0")),
        &bad_conf,
    );
    assert_eq!(bad.out["code"], 7, "{}", bad.raw);
    assert!(!lab.netd_ok(&["ps", "-a"]).contains("cni-ctr6x"));

    // DEL: both families' ports, both addresses, the records and veths are gone.
    for (env, c) in [(env, &add_conf), (env2, &static_conf)] {
        let del = cni(&lab, "DEL", env, c);
        assert!(del.ok, "DEL: {}", del.raw);
    }
    assert!(lab
        .from_client(&["tcp", &format!("[{HOST_IP6}]:8090")])
        .is_err());
    assert!(lab
        .from_client(&["tcp", &format!("{HOST_IP}:8090")])
        .is_err());
    let a = lab.exec_in(&ns.name, &["ip", "-6", "-o", "addr"]);
    assert!(
        !String::from_utf8_lossy(&a.stdout).contains(SUBNET6),
        "{a:?}"
    );
    assert!(!lab.netd_ok(&["ps", "-a"]).contains("cni-ctr6"));
    let stats = lab.stats();
    assert_eq!(stats["port_map_entries"], 0, "{stats}");
    assert_eq!(stats["endpoint_entries"], 0, "{stats}");
    assert!(lab.endpoint_pins().is_empty(), "{:?}", lab.endpoint_pins());
    let ct = lab.netd_ok(&["conntrack", "ls"]);
    assert!(!ct.contains(SUBNET6), "flows of a deleted endpoint: {ct}");
}
