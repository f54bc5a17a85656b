//! End-to-end names: the embedded DNS server on 127.0.0.11 in each container namespace
//! (resolution, scope, shuffle, empty answers, forwarding), the resolv.conf and hosts
//! files under /etc/netns, and --link on the default bridge.
use std::{collections::BTreeSet, path::Path};

use netd_tests::{Lab, CLIENT_IP};

fn ns_of(lab: &Lab, name: &str) -> String {
    format!("{}{name}", lab.container_prefix())
}

/// `dig @127.0.0.11 ARGS` from inside container `from`'s namespace.
fn dig(lab: &Lab, from: &str, args: &[&str]) -> netd_tests::Dig {
    netd_tests::dig(lab, &ns_of(lab, from), args)
}

fn ip_on(lab: &Lab, name: &str, net: &str) -> String {
    lab.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .expect("address")
        .to_string()
}

fn dnsmasq_in_client(lab: &mut Lab, log: &Path) {
    // The outside world's DNS server: answers outside.test, logs every query.
    netd_tests::dnsmasq_in_client(
        lab,
        &[
            "--address=/outside.test/198.51.100.7".into(),
            "--log-queries".into(),
            format!("--log-facility={}", log.display()),
        ],
    );
}

#[test]
fn dns_names_aliases_short_ids_and_scope() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.91.0.0/24", "red"]);
    lab.netd_ok(&[
        "network",
        "create",
        "--subnet",
        "10.92.0.0/24",
        "--internal",
        "blue",
    ]);
    let web_id = lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "red",
        "--alias",
        "front",
        "--hostname",
        "webhost",
    ]);
    let short = &web_id.trim()[..12];
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "blue",
        "--alias",
        "store",
    ]);
    lab.netd_ok(&["run", "-d", "--name", "both", "--network", "red"]);
    lab.netd_ok(&["network", "connect", "--link", "db:primary", "blue", "both"]);
    let web = ip_on(&lab, "web", "red");
    let db = ip_on(&lab, "db", "blue");

    // Name, alias, short id and hostname, in any case, from a container of the network.
    for name in ["web", "front", short, "webhost", "WEB"] {
        let d = dig(&lab, "both", &[name]);
        assert_eq!(d.status, "NOERROR", "{name}: {}", d.raw);
        assert_eq!(d.answers, vec![web.clone()], "{name}: {}", d.raw);
    }
    // Scope: both is on red and blue and sees db; web (red only) does not see it, nor
    // does db (blue only, internal: nothing is forwarded) see web.
    assert_eq!(dig(&lab, "both", &["store"]).answers, vec![db.clone()]);
    // `network connect --link`: a name for both only.
    assert_eq!(dig(&lab, "both", &["primary"]).answers, vec![db.clone()]);
    assert!(dig(&lab, "db", &["primary"]).answers.is_empty());
    let d = dig(&lab, "web", &["db"]);
    assert!(d.answers.is_empty(), "web must not see db: {}", d.raw);
    let d = dig(&lab, "db", &["web"]);
    assert!(d.answers.is_empty(), "db must not see web: {}", d.raw);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    // PTR for a container address.
    let d = dig(&lab, "both", &["-x", &web]);
    assert_eq!(d.answers, vec!["web.".to_string()], "{}", d.raw);
    // A name without a record of the asked type: NOERROR, no answer.
    for t in ["AAAA", "MX"] {
        let d = dig(&lab, "both", &["web", t]);
        assert_eq!(d.status, "NOERROR", "{t}: {}", d.raw);
        assert!(d.answers.is_empty(), "{t}: {}", d.raw);
    }
    // TCP answers the same.
    assert_eq!(
        dig(&lab, "both", &["+tcp", "front"]).answers,
        vec![web.clone()]
    );
    // Inspect shows the names.
    let ep = &lab.inspect("web")["NetworkSettings"]["Networks"]["red"];
    let names: Vec<&str> = ep["DNSNames"]
        .as_array()
        .expect("DNSNames")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(names, vec!["web", "front", short, "webhost"]);
    // Disconnect: at the next query both no longer sees db.
    lab.netd_ok(&["network", "disconnect", "blue", "both"]);
    assert!(dig(&lab, "both", &["store"]).answers.is_empty());
    lab.netd_ok(&["rm", "-f", "web", "db", "both"]);
}

#[test]
fn dns_shared_alias_answers_every_address_shuffled() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--internal", "pool"]);
    let mut ips = BTreeSet::new();
    for n in ["p1", "p2", "p3"] {
        lab.netd_ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--network",
            "pool",
            "--alias",
            "svc",
        ]);
        ips.insert(ip_on(&lab, n, "pool"));
    }
    let mut firsts = BTreeSet::new();
    for _ in 0..20 {
        let d = dig(&lab, "p1", &["svc"]);
        assert_eq!(
            d.answers.iter().cloned().collect::<BTreeSet<_>>(),
            ips,
            "{}",
            d.raw
        );
        firsts.insert(d.answers[0].clone());
    }
    assert!(
        firsts.len() > 1,
        "20 answers, always the same order: {firsts:?}"
    );
    lab.netd_ok(&["rm", "-f", "p1", "p2", "p3"]);
}

#[test]
fn dns_forwards_to_dns_servers_but_not_from_internal_networks() {
    let mut lab = Lab::new();
    let log = lab.dir.join("dnsmasq.log");
    dnsmasq_in_client(&mut lab, &log);
    lab.netd_ok(&["network", "create", "out"]);
    lab.netd_ok(&["network", "create", "--internal", "closed"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "out",
        "--dns",
        CLIENT_IP,
    ]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "i",
        "--network",
        "closed",
        "--dns",
        CLIENT_IP,
    ]);
    let d = dig(&lab, "c", &["www.outside.test"]);
    assert_eq!(d.answers, vec!["198.51.100.7".to_string()], "{}", d.raw);
    // The query left from the container's namespace (masqueraded to the uplink), not
    // from the daemon's.
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.contains("www.outside.test"), "dnsmasq saw: {seen}");
    let d = dig(&lab, "i", &["other.outside.test"]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !seen.contains("other.outside.test"),
        "internal forwarded: {seen}"
    );
    // Inspect shows the settings; resolv.conf points at the embedded server.
    let hc = &lab.inspect("c")["HostConfig"];
    assert_eq!(hc["Dns"][0], CLIENT_IP);
    let rc = std::fs::read_to_string(
        Path::new("/etc/netns")
            .join(ns_of(&lab, "c"))
            .join("resolv.conf"),
    )
    .expect("resolv.conf");
    assert!(
        rc.contains("nameserver 127.0.0.11\n") && rc.contains("ndots:0"),
        "{rc}"
    );
    lab.netd_ok(&["rm", "-f", "c", "i"]);
}

#[test]
fn dns_files_ip_netns_exec_recreation_and_removal() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--subnet",
        "10.93.0.0/24",
        "--internal",
        "app",
    ]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "app",
        "--ip",
        "10.93.0.10",
    ]);
    lab.netd_ok(&["run", "-d", "--name", "web", "--network", "app"]);
    let web_ns = ns_of(&lab, "web");
    // `ip netns exec` + getent: resolv.conf and hosts from /etc/netns.
    let o = lab.exec_in(&web_ns, &["getent", "hosts", "db"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("10.93.0.10 "), "getent: {out}");
    // Processes netd starts see the same files.
    let rc = lab.netd_ok(&["exec", "web", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("nameserver 127.0.0.11"), "{rc}");
    let hosts = lab.netd_ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(hosts.contains("\tweb") || hosts.contains(" web"), "{hosts}");
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "job",
        "--network",
        "app",
        "--",
        "sh",
        "-c",
        "cat /etc/resolv.conf; sleep 600",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !lab.netd_ok(&["logs", "job"]).contains("127.0.0.11") {
        assert!(
            std::time::Instant::now() < deadline,
            "job never saw its resolv.conf"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The host's own /etc/resolv.conf is untouched.
    let host_rc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!host_rc.contains("127.0.0.11"));
    // A re-created container resolves to its new address at the next query.
    lab.netd_ok(&["rm", "-f", "db"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "app",
        "--ip",
        "10.93.0.20",
    ]);
    assert_eq!(
        dig(&lab, "web", &["db"]).answers,
        vec!["10.93.0.20".to_string()]
    );
    // Files go with the container.
    let dir = Path::new("/etc/netns").join(&web_ns);
    assert!(dir.join("hosts").exists());
    lab.netd_ok(&["rm", "-f", "web", "db", "job"]);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn dns_bad_flags_are_one_clear_error() {
    let lab = Lab::new();
    for (args, want) in [
        (vec!["--dns", "not-an-ip"], "not an IP address"),
        (vec!["--dns-search", "bad domain"], "not a domain name"),
        (vec!["--dns-option", "a b"], "not a resolv.conf option"),
        (vec!["--link", "ghost:x"], "No such container"),
        (vec!["--link", "db:"], "NAME[:ALIAS]"),
    ] {
        let mut full = vec!["run", "-d", "--name", "x"];
        full.extend_from_slice(&args);
        let o = lab.netd(&full);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(lab.netd_ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn dns_link_on_the_default_bridge_hosts_env_and_icc_exception() {
    let lab = Lab::with_args(&["--icc", "false"]);
    let tester = netd_tests::tester_bin();
    let t = tester.to_str().expect("utf-8 path");
    // db serves 7000 (exposed) and 7001 (not exposed).
    let serve = format!("{t} serve-tcp 7000 & exec {t} serve-tcp 7001");
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--hostname",
        "dbhost",
        "--expose",
        "7000",
        "--",
        "sh",
        "-c",
        &serve,
    ]);
    let db_ns = ns_of(&lab, "db");
    lab.wait_listening(&db_ns, &["serve-tcp", "7000"]);
    lab.wait_listening(&db_ns, &["serve-tcp", "7001"]);
    let db = ip_on(&lab, "db", "bridge");
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--link",
        "db:data",
        "--",
        "sh",
        "-c",
        "env; cat /etc/hosts; exec sleep 600",
    ]);
    lab.netd_ok(&["run", "-d", "--name", "other", "--", "sleep", "600"]);
    // The hosts entry and Docker's variables, as the linking container's process sees them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let logs = loop {
        let l = lab.netd_ok(&["logs", "web"]);
        if l.contains("localhost") || std::time::Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(logs.contains(&format!("{db}\tdata dbhost db\n")), "{logs}");
    assert!(
        logs.contains(&format!("DATA_PORT_7000_TCP_ADDR={db}\n")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("DATA_PORT=tcp://{db}:7000\n")),
        "{logs}"
    );
    assert!(logs.contains("DATA_NAME=/web/data\n"), "{logs}");
    let o = lab.exec_in(&ns_of(&lab, "web"), &["getent", "hosts", "data"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("{db} ")));
    assert_eq!(
        lab.inspect("web")["HostConfig"]["Links"][0],
        "/db:/web/data"
    );
    // The default bridge has no embedded DNS: the host's servers, no loopback ones.
    let rc = lab.netd_ok(&["exec", "web", "cat", "/etc/resolv.conf"]);
    assert!(!rc.contains("127.0.0."), "{rc}");
    // icc=false: the link opens the exposed port only, for the linked pair only.
    let to = |port: u16| format!("{db}:{port}");
    assert!(
        lab.from_container("web", &["tcp", &to(7000)]).is_ok(),
        "linked, exposed"
    );
    assert!(
        lab.from_container("web", &["tcp", &to(7001)]).is_err(),
        "linked, not exposed"
    );
    assert!(
        lab.from_container("other", &["tcp", &to(7000)]).is_err(),
        "not linked"
    );
    // Removing the link's container closes it again.
    lab.netd_ok(&["rm", "-f", "web"]);
    lab.netd_ok(&["run", "-d", "--name", "web2", "--", "sleep", "600"]);
    assert!(
        lab.from_container("web2", &["tcp", &to(7000)]).is_err(),
        "stale exception"
    );
    lab.netd_ok(&["rm", "-f", "db", "other", "web2"]);
}
