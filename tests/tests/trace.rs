//! `netd trace` and `netd daemon --debug-datapath`: the datapath's per-packet records,
//! read from real packets, and the trace bit that is on only while someone reads.
use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{netd_bin, Lab, CLIENT_IP, CLIENT_IP6, HOST_IP, HOST_IP6};
use serde_json::Value;

/// CONFIG_F_TRACE in the config entry's flags (netd_common), read from the pinned map.
fn trace_bit_on(lab: &Lab) -> bool {
    let pin = lab.bpf_dir.join("NETD_CONFIG");
    let o = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&pin)
        .output()
        .expect("bpftool");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("bpftool json");
    // Config: uplink_ifindex u32, uplink_ip u32, flags u32 (bytes 8..12, little endian).
    let byte = v[0]["value"][8].as_str().expect("flags byte");
    let flags = u8::from_str_radix(byte.trim_start_matches("0x"), 16).expect("hex");
    flags & 4 != 0
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `netd trace ARGS --format json` in the background.
fn start_trace(lab: &Lab, args: &[&str]) -> Child {
    Command::new(netd_bin())
        .arg("-H")
        .arg(lab.socket())
        .arg("trace")
        .args(args)
        .args(["--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting netd trace")
}

/// Waits for a `trace -n N` to end by itself; its JSON lines.
fn finish(mut child: Child) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let mut out = String::new();
            child
                .stdout
                .take()
                .expect("stdout")
                .read_to_string(&mut out)
                .expect("read");
            let mut err = String::new();
            let _ = child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err);
            assert!(st.success(), "netd trace failed: {err}");
            return out
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netd trace did not stop after its count");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn trace_shows_a_published_connection_after_nat_and_is_off_without_readers() {
    let lab = Lab::new();
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    let ip = lab.inspect("web")["NetworkSettings"]["IPAddress"]
        .as_str()
        .expect("address")
        .to_string();
    assert!(!trace_bit_on(&lab), "the trace is on with no reader");
    let trace = start_trace(&lab, &["--proto", "tcp", "--addr", CLIENT_IP, "-n", "2"]);
    wait_for("the trace bit", || trace_bit_on(&lab));
    lab.from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .expect("published port answers");
    let lines = finish(trace);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The SYN, as uplink_ingress sent it on: DNATed to the container, client source kept.
    let syn = &lines[0];
    assert_eq!(syn["hook"], "uplink_ingress", "{syn}");
    assert_eq!(syn["verdict"], "redirect", "{syn}");
    assert_eq!(syn["proto"], "tcp", "{syn}");
    assert_eq!(syn["dst"], format!("{ip}:80"), "{syn}");
    assert!(
        syn["src"].as_str().unwrap_or("").starts_with(CLIENT_IP),
        "{syn}"
    );
    // The SYN-ACK, as endpoint_egress sent it on: from the published address again.
    let synack = &lines[1];
    assert_eq!(synack["hook"], "endpoint_egress", "{synack}");
    assert_eq!(synack["src"], format!("{HOST_IP}:8080"), "{synack}");
    assert_eq!(synack["dst"], syn["src"], "{synack}");
    // The last reader gone, the datapath stops writing records.
    wait_for("the trace bit to clear", || !trace_bit_on(&lab));
}

#[test]
fn trace_shows_ipv6_through_the_ipv6_programs() {
    let lab = Lab::with_args(&["--ipv6"]);
    lab.run_server("web6", &["8082:80"], &["serve-tcp6", "80"]);
    let ip6 = lab.inspect("web6")["NetworkSettings"]["GlobalIPv6Address"]
        .as_str()
        .expect("IPv6 address")
        .to_string();
    let trace = start_trace(&lab, &["--proto", "tcp", "--addr", CLIENT_IP6, "-n", "2"]);
    wait_for("the trace bit", || trace_bit_on(&lab));
    lab.from_client(&["tcp", &format!("[{HOST_IP6}]:8082")])
        .expect("published port answers over IPv6");
    let lines = finish(trace);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The SYN, DNAT66ed by uplink_ingress6 and sent into the container.
    let syn = &lines[0];
    assert_eq!(syn["hook"], "uplink_ingress6", "{syn}");
    assert_eq!(syn["verdict"], "redirect", "{syn}");
    assert_eq!(syn["dst"], format!("[{ip6}]:80"), "{syn}");
    assert!(
        syn["src"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("[{CLIENT_IP6}]")),
        "{syn}"
    );
    // The SYN-ACK, back from the published address by endpoint_egress6, once.
    let synack = &lines[1];
    assert_eq!(synack["hook"], "endpoint_egress6", "{synack}");
    assert_eq!(synack["src"], format!("[{HOST_IP6}]:8082"), "{synack}");
}

#[test]
fn trace_names_the_drop_reason_of_a_spoofed_packet() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.42.0.0/24", "t"]);
    for (name, ip) in [("a", "10.42.0.10"), ("b", "10.42.0.11")] {
        lab.netd_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "t",
            "--ip",
            ip,
            "--",
            "sleep",
            "600",
        ]);
    }
    let mac_b = lab.inspect("b")["NetworkSettings"]["Networks"]["t"]["MacAddress"]
        .as_str()
        .expect("mac")
        .to_string();
    // A source address that is not a's own, and b's MAC known without ARP (which would
    // be dropped first, for the same reason, as ARP).
    let sh = |cmd: &str| lab.netd(&["exec", "a", "sh", "-c", cmd]).status.success();
    assert!(sh(&format!(
        "ip addr add 10.42.0.99/24 dev eth0 && ip neigh replace 10.42.0.11 lladdr {mac_b} dev eth0"
    )));
    let trace = start_trace(&lab, &["--addr", "10.42.0.99", "-n", "1"]);
    wait_for("the trace bit", || trace_bit_on(&lab));
    assert!(
        !sh("ping -c 1 -W 1 -I 10.42.0.99 10.42.0.11"),
        "spoofed source got through"
    );
    let lines = finish(trace);
    let drop = &lines[0];
    assert_eq!(drop["hook"], "endpoint_egress", "{drop}");
    assert_eq!(drop["verdict"], "drop", "{drop}");
    assert_eq!(drop["reason"], "drop_spoofed_ip", "{drop}");
    assert_eq!(drop["proto"], "icmp", "{drop}");
    assert_eq!(
        drop["dst"].as_str().map(|d| d.starts_with("10.42.0.11:")),
        Some(true)
    );
}

#[test]
fn debug_datapath_logs_every_decision_and_keeps_the_bit_on() {
    let lab = Lab::with_args(&["--debug-datapath"]);
    lab.run_server("web", &["8081:80"], &["serve-tcp", "80"]);
    assert!(trace_bit_on(&lab));
    lab.from_client(&["tcp", &format!("{HOST_IP}:8081")])
        .expect("published port answers");
    wait_for("the packet in the daemon's log", || {
        let log = lab.daemon_log();
        log.contains("uplink_ingress") && log.contains(":80 ") && log.contains("redirect")
    });
    // A reader coming and going leaves it on. The bit says nothing about when the
    // reader is subscribed here, so connect until it has seen a packet.
    let mut trace = start_trace(&lab, &["-n", "1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while trace.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        lab.from_client(&["tcp", &format!("{HOST_IP}:8081")])
            .expect("published port answers");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(finish(trace).len(), 1);
    assert!(trace_bit_on(&lab));
}

#[test]
fn trace_rejects_an_unknown_filter() {
    let lab = Lab::new();
    let o = lab.netd(&["trace", "--proto", "bogus"]);
    assert!(!o.status.success());
    let o = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(lab.socket())
        .arg("http://netd/netd/trace?iface=eth0")
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(
        body.contains("invalid trace filter \\\"iface\\\""),
        "{body}"
    );
    assert!(!trace_bit_on(&lab));
}
