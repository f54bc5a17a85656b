//! End-to-end fuzzing of the datapath: 20,000 random and malformed frames of both
//! families from inside a container of a masquerading network (scapy's fuzz(),
//! truncations, bad lengths, fragments at random offsets, IPv6 extension-header chains,
//! ICMP errors quoting anything, stacked VLAN tags: fuzz/fuzz.py) and 6,000 from the
//! outside at the uplink, while established flows of both families run through a
//! published port and through masquerade. Everything that leaves the host is captured
//! on the client's side of the uplink: no frame may carry a container's address as its
//! source, every flow must keep going, and the daemon must stay up.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use netd_tests::{netd_bin, ok, tester_bin, Lab, CLIENT_IP, HOST_IP};
use serde_json::Value;

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/fuzz.py");
/// Debian's Python, where python3-scapy installs (another python3 may come first in
/// PATH).
const PYTHON: &str = "/usr/bin/python3";
const HOST6: &str = "fd00:199::1";
const CLIENT6: &str = "fd00:199::2";
const NET4: &str = "10.89.0.0/24";
const NET6: &str = "fd00:89::/64";
/// Long enough for both fuzzers to finish while the flows run.
const HOLD_SECS: &str = "14";

/// The MAC of `dev` in namespace `ns`.
fn mac_of(lab: &Lab, ns: &str, dev: &str) -> String {
    let o = ok(
        &lab.exec_in(ns, &["cat", &format!("/sys/class/net/{dev}/address")]),
        dev,
    );
    o.trim().to_string()
}

/// `args` in namespace `ns`, started now, its output kept for the end.
fn start_in(ns: &str, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {args:?} in {ns}: {e}"))
}

/// The netd CLI against the lab's daemon, started now.
fn start_netd(lab: &Lab, args: &[&str]) -> Child {
    Command::new(netd_bin())
        .arg("-H")
        .arg(lab.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting netd {args:?}: {e}"))
}

fn finished(child: Child, what: &str) -> String {
    let o = child.wait_with_output().expect("waiting");
    ok(&o, what)
}

/// tcpdump on the client's end of the uplink, writing `pcap`, once it listens.
fn capture(lab: &Lab, pcap: &str) -> Child {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            "tcpdump",
            "-i",
            "cl0",
            "-n",
            "-U",
        ])
        .args(["-s", "128", "-w", pcap])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (the tcpdump package)");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("listening on") {
        line.clear();
    }
    child
}

#[test]
fn random_and_malformed_packets_never_leave_with_a_container_source() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-echo6", "7010"]);
    let bridge = "com.docker.network.bridge.name=ndt-fz";
    lab.netd_ok(&[
        "network", "create", "--ipv6", "--subnet", NET4, "--subnet", NET6, "-o", bridge, "fz",
    ]);
    let tester = tester_bin();
    let t = tester.to_str().expect("utf-8 path");
    for (name, publish, port) in [("web", "8080:80", "80"), ("app", "8081:81", "81")] {
        lab.netd_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "fz",
            "-p",
            publish,
            "--",
            t,
            "serve-echo6",
            port,
        ]);
    }
    let app: Value = lab.inspect("app")["NetworkSettings"]["Networks"]["fz"].clone();
    let (app4, app6, app_mac) = (
        app["IPAddress"].as_str().expect("IPv4"),
        app["GlobalIPv6Address"].as_str().expect("IPv6"),
        app["MacAddress"].as_str().expect("MAC"),
    );
    let (host, client) = (lab.host.clone(), lab.client.clone());
    let (bridge_mac, up_mac) = (mac_of(&lab, &host, "ndt-fz"), mac_of(&lab, &host, "up0"));
    let client_mac = mac_of(&lab, &client, "cl0");
    let pcap = lab.dir.join("uplink.pcap");
    let pcap = pcap.to_str().expect("utf-8 path").to_string();
    let mut tcpdump = capture(&lab, &pcap);

    // Flows that must keep going: through the published port and through masquerade,
    // on both families, a byte and its echo every 100 ms.
    let mut holds = Vec::new();
    for to in [format!("{HOST_IP}:8080"), format!("[{HOST6}]:8080")] {
        holds.push((to.clone(), start_in(&client, &[t, "hold", &to, HOLD_SECS])));
    }
    for to in [format!("{CLIENT_IP}:7010"), format!("[{CLIENT6}]:7010")] {
        let hold = start_netd(&lab, &["exec", "web", t, "hold", &to, HOLD_SECS]);
        holds.push((to, hold));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));

    let inside = start_netd(
        &lab,
        &[
            "exec",
            "app",
            PYTHON,
            FUZZ,
            "send",
            "eth0",
            app_mac,
            &bridge_mac,
            app4,
            app6,
            CLIENT_IP,
            CLIENT6,
            "20000",
            "1",
        ],
    );
    let outside = start_in(
        &client,
        &[
            PYTHON,
            FUZZ,
            "send",
            "cl0",
            &client_mac,
            &up_mac,
            CLIENT_IP,
            CLIENT6,
            HOST_IP,
            HOST6,
            "6000",
            "2",
        ],
    );
    let sent_in = finished(inside, "fuzzing from inside the container");
    let sent_out = finished(outside, "fuzzing from outside");
    for (to, hold) in holds {
        let held = finished(hold, &format!("the flow to {to}"));
        assert!(held.starts_with("held "), "{to}: {held}");
    }
    // SIGINT: tcpdump writes out what it has and exits.
    // SAFETY: a signal to the capture this test started, by its pid.
    unsafe { libc::kill(tcpdump.id() as libc::pid_t, libc::SIGINT) };
    let _ = tcpdump.wait();

    let o = Command::new(PYTHON)
        .args([FUZZ, "check", &pcap, NET4, NET6])
        .output()
        .expect("checking the capture");
    let report = ok(&o, "reading the capture");
    assert!(
        report.starts_with("frames ") && report.contains(" leaks 0"),
        "frames left the host with a container's source ({}, {}):\n{report}",
        sent_in.trim(),
        sent_out.trim()
    );
    // The daemon is up and answers, and the fuzzing did reach the datapath's checks.
    lab.netd_ok(&["ps"]);
    let st = lab.stats();
    let c = |n: &str| st["counters"][n].as_u64().unwrap_or(0);
    assert!(c("drop_malformed") + c("drop_untranslatable") > 0, "{st}");
    assert!(lab
        .daemon_pid()
        .is_some_and(|p| { std::path::Path::new(&format!("/proc/{p}")).exists() }));
}
