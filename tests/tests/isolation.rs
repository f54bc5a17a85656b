//! End-to-end isolation: the reachability matrix of Docker's rules, enforced in eBPF,
//! and spoofing attempts from inside containers.
use std::{
    collections::BTreeMap,
    process::Command,
    sync::{Arc, Mutex},
};

use netd_tests::{tester_bin, Lab, CLIENT_IP, HOST_IP};

/// One probe: TCP to :80, UDP to :81, ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reach {
    tcp: bool,
    udp: bool,
    ping: bool,
}

impl Reach {
    fn cell(&self) -> String {
        format!(
            "{}{}{}",
            if self.tcp { 'T' } else { '.' },
            if self.udp { 'U' } else { '.' },
            if self.ping { 'P' } else { '.' }
        )
    }
}

/// A command that runs `args` as the source `src`: a container (netd exec), the client
/// namespace or the host namespace.
fn as_source(lab: &Lab, src: &str, args: &[String]) -> Command {
    let mut c;
    match src {
        "client" | "host" => {
            c = Command::new("ip");
            let ns = if src == "client" {
                &lab.client
            } else {
                &lab.host
            };
            c.args(["netns", "exec", ns]);
        }
        name => {
            c = Command::new(netd_tests::netd_bin());
            c.arg("-H").arg(lab.socket()).args(["exec", name]);
        }
    }
    c.args(args).env("NETD_TESTER_TIMEOUT_MS", "500");
    c
}

fn probe(lab: &Lab, src: &str, ip: &str) -> Reach {
    let t = tester_bin().display().to_string();
    let run = |args: Vec<String>| {
        as_source(lab, src, &args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    Reach {
        tcp: run(vec![t.clone(), "tcp".into(), format!("{ip}:80")]),
        udp: run(vec![
            t.clone(),
            "udp".into(),
            format!("{ip}:81"),
            "x".into(),
        ]),
        ping: run(["ping", "-c", "1", "-W", "1", ip]
            .map(String::from)
            .to_vec()),
    }
}

fn ip_on(lab: &Lab, container: &str, network: &str) -> String {
    lab.inspect(container)["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{container} has no address on {network}"))
        .to_string()
}

#[test]
fn reachability_matrix_of_icc_internal_and_separate_networks() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.31.0.0/24", "plain"]);
    lab.netd_ok(&[
        "network",
        "create",
        "--subnet",
        "10.32.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "noicc",
    ]);
    lab.netd_ok(&[
        "network",
        "create",
        "--subnet",
        "10.33.0.0/24",
        "--internal",
        "intern",
    ]);
    let t = tester_bin().display().to_string();
    let servers = format!("{t} serve-tcp 80 & exec {t} serve-udp 81");
    for (name, net) in [
        ("p1", "plain"),
        ("p2", "plain"),
        ("n1", "noicc"),
        ("n2", "noicc"),
        ("i1", "intern"),
        ("i2", "intern"),
        ("pn", "plain"),
    ] {
        lab.netd_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "--",
            "sh",
            "-c",
            &servers,
        ]);
    }
    lab.netd_ok(&["network", "connect", "noicc", "pn"]);
    // Misbehaving parties, so the drops are netd's and not a missing route: an internal
    // container adds a default route through its gateway, and the outside world routes
    // the container subnets through the host.
    assert!(lab
        .netd(&[
            "exec",
            "i1",
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.33.0.1"
        ])
        .status
        .success());
    assert!(Command::new("ip")
        .args([
            "-n",
            &lab.client,
            "route",
            "add",
            "10.0.0.0/8",
            "via",
            HOST_IP
        ])
        .status()
        .unwrap()
        .success());
    lab.serve_in_client(&["serve-tcp", "80"]);
    lab.serve_in_client(&["serve-udp", "81"]);
    // Servers on the host itself (its own namespace), reached at the uplink address.
    for server in [["serve-tcp", "80"], ["serve-udp", "81"]] {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.host])
            .arg(tester_bin())
            .args(server)
            .spawn()
            .unwrap();
        lab.adopt_background(child);
    }
    for c in ["p1", "p2", "n1", "n2", "i1", "i2", "pn"] {
        lab.wait_listening(
            &format!("{}{c}", lab.container_prefix()),
            &["serve-udp", "81"],
        );
    }
    lab.wait_listening(&lab.host, &["serve-udp", "81"]);

    let mut targets: Vec<(String, String)> = Vec::new();
    for (c, n) in [
        ("p1", "plain"),
        ("p2", "plain"),
        ("n1", "noicc"),
        ("n2", "noicc"),
        ("i1", "intern"),
        ("i2", "intern"),
        ("pn", "plain"),
        ("pn", "noicc"),
    ] {
        targets.push((format!("{c}@{n}"), ip_on(&lab, c, n)));
    }
    targets.push(("client".into(), CLIENT_IP.into()));
    targets.push(("host".into(), HOST_IP.into()));
    let sources = ["p1", "p2", "n1", "n2", "i1", "i2", "pn", "client", "host"];

    // Docker's rules. Rows: sources; columns: the targets above; "TUP" reachable by TCP,
    // UDP and ping, "..." blocked.
    #[rustfmt::skip]
    let expected_rows: [(&str, [&str; 10]); 9] = [
        //          p1@plain p2@plain n1@noicc n2@noicc i1@intern i2@intern pn@plain pn@noicc client host
        ("p1",     ["-",    "TUP",   "...",   "...",   "...",    "...",    "TUP",   "...",   "TUP", "TUP"]),
        ("p2",     ["TUP",  "-",     "...",   "...",   "...",    "...",    "TUP",   "...",   "TUP", "TUP"]),
        ("n1",     ["...",  "...",   "-",     "...",   "...",    "...",    "...",   "...",   "TUP", "TUP"]),
        ("n2",     ["...",  "...",   "...",   "-",     "...",    "...",    "...",   "...",   "TUP", "TUP"]),
        ("i1",     ["...",  "...",   "...",   "...",   "-",      "TUP",    "...",   "...",   "...", "..."]),
        ("i2",     ["...",  "...",   "...",   "...",   "TUP",    "-",      "...",   "...",   "...", "..."]),
        ("pn",     ["TUP",  "TUP",   "...",   "...",   "...",    "...",    "-",     "-",     "TUP", "TUP"]),
        ("client", ["...",  "...",   "...",   "...",   "...",    "...",    "...",   "...",   "-",   "TUP"]),
        ("host",   ["TUP",  "TUP",   "TUP",   "TUP",   "TUP",    "TUP",    "TUP",   "TUP",   "TUP", "-"]),
    ];
    let expected: BTreeMap<(String, String), String> = expected_rows
        .iter()
        .flat_map(|(src, cells)| {
            targets
                .iter()
                .zip(cells.iter())
                .map(move |((tn, _), c)| ((src.to_string(), tn.clone()), c.to_string()))
        })
        .collect();

    let jobs: Vec<(String, String, String)> = sources
        .iter()
        .flat_map(|s| {
            targets
                .iter()
                .map(move |(tn, ip)| (s.to_string(), tn.clone(), ip.clone()))
        })
        .filter(|(s, tn, _)| expected[&(s.clone(), tn.clone())] != "-")
        .collect();
    let results = Arc::new(Mutex::new(BTreeMap::new()));
    let queue = Arc::new(Mutex::new(jobs));
    let lab_ref = &lab;
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let (queue, results) = (queue.clone(), results.clone());
            scope.spawn(move || loop {
                let Some((s, tn, ip)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let r = probe(lab_ref, &s, &ip);
                results.lock().unwrap().insert((s, tn), r.cell());
            });
        }
    });
    let results = results.lock().unwrap().clone();
    let mut table = format!("{:8}", "");
    for (tn, _) in &targets {
        table += &format!("{tn:>10}");
    }
    let mut wrong = 0;
    for s in sources {
        table += &format!("\n{s:8}");
        for (tn, _) in &targets {
            let key = (s.to_string(), tn.clone());
            let want = &expected[&key];
            let got = results.get(&key).cloned().unwrap_or_else(|| "-".into());
            if *want == got {
                table += &format!("{got:>10}");
            } else {
                wrong += 1;
                table += &format!("{:>10}", format!("{got}!={want}"));
            }
        }
    }
    assert_eq!(
        wrong, 0,
        "reachability differs from Docker's rules in {wrong} cells (got!=want):\n{table}"
    );
    let (ipt, nft) = lab.host_rulesets();
    assert!(ipt.is_empty() && nft.is_empty(), "host rulesets not empty");
    let st = lab.stats();
    for reason in [
        "drop_other_network",
        "drop_icc",
        "drop_internal",
        "guard_drop_to_container",
    ] {
        assert!(
            st["counters"][reason].as_u64().unwrap_or(0) > 0,
            "{reason} never counted: {st}"
        );
    }
}

#[test]
fn spoofing_from_inside_a_container_is_dropped_and_counted() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.41.0.0/24", "s"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "s",
        "--ip",
        "10.41.0.10",
        "--",
        "sleep",
        "600",
    ]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "s",
        "--ip",
        "10.41.0.11",
        "--",
        "sleep",
        "600",
    ]);
    let sh = |c: &str, cmd: &str| lab.netd(&["exec", c, "sh", "-c", cmd]).status.success();
    let counter = |r: &str| lab.stats()["counters"][r].as_u64().unwrap_or(0);
    assert!(sh("a", "ping -c 1 -W 1 10.41.0.11"), "honest ping");
    // A second address that is not its own: ARP and IP with it are dropped.
    assert!(sh(
        "a",
        "ip addr add 10.41.0.99/24 dev eth0 && ip neigh flush dev eth0"
    ));
    assert!(
        !sh("a", "ping -c 1 -W 1 -I 10.41.0.99 10.41.0.11"),
        "spoofed source got through"
    );
    assert!(counter("drop_spoofed_arp") + counter("drop_spoofed_ip") >= 1);
    assert!(sh("a", "ip addr del 10.41.0.99/24 dev eth0"));
    // Another MAC: dropped.
    let mac = lab.inspect("a")["NetworkSettings"]["Networks"]["s"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sh(
        "a",
        "ip link set eth0 address 02:00:00:00:00:99 && ip neigh flush dev eth0"
    ));
    assert!(
        !sh("a", "ping -c 1 -W 1 10.41.0.11"),
        "forged MAC got through"
    );
    assert!(counter("drop_spoofed_mac") >= 1);
    // Its own identity back: traffic flows again.
    assert!(sh(
        "a",
        &format!("ip link set eth0 address {mac} && ip neigh flush dev eth0")
    ));
    assert!(
        sh("a", "ping -c 1 -W 1 10.41.0.11"),
        "honest traffic after the attempts"
    );
    let _ = Command::new("true").status();
}

/// Restarting the daemon with --icc=false isolates the default network's containers on
/// the next packet, established connections included.
#[test]
fn toggling_icc_cuts_an_established_connection() {
    let mut lab = Lab::new();
    let t = tester_bin().display().to_string();
    lab.netd_ok(&["run", "-d", "--name", "echo", "--", &t, "serve-echo", "7"]);
    lab.netd_ok(&["run", "-d", "--name", "talker", "--", "sleep", "600"]);
    lab.wait_listening(
        &format!("{}echo", lab.container_prefix()),
        &["serve-tcp", "7"],
    );
    let ip = ip_on(&lab, "echo", "bridge");
    let holder = Command::new(netd_tests::netd_bin())
        .arg("-H")
        .arg(lab.socket())
        .args(["exec", "talker", &t, "hold", &format!("{ip}:7"), "6"])
        .output();
    // First prove the connection holds with icc on (the default).
    let held = holder.expect("hold");
    assert!(
        held.status.success(),
        "icc on: {}",
        String::from_utf8_lossy(&held.stderr)
    );
    // Now hold one again and switch icc off under it.
    let child = Command::new(netd_tests::netd_bin())
        .arg("-H")
        .arg(lab.socket())
        .args(["exec", "talker", &t, "hold", &format!("{ip}:7"), "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    lab.stop_daemon(libc::SIGTERM);
    lab.extra_daemon_args = vec!["--icc=false".into()];
    lab.start_daemon().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("stalled after"),
        "the connection survived icc=false: {err}"
    );
    assert!(lab.stats()["counters"]["drop_icc"].as_u64().unwrap_or(0) > 0);
}
