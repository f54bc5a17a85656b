//! Conntrack under pressure: capacity is a flag, pressure is reported, and a flood of
//! new flows never breaks established ones. Run as root (cargo xtask test does).
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use netd_tests::{netd_bin, tester_bin, Lab, CLIENT_IP, HOST_IP};

/// How long serve-push stays silent on an established connection; the flood runs in it.
const PAUSE_MS: &str = "4000";

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a client")
}

fn finish(what: &str, c: Child) {
    let o = c.wait_with_output().expect("client");
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("2"),
        "{what} broke: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn established_flows_survive_a_flood_of_new_ones() {
    // 1,024 flows: the flood below is six times that.
    let mut lab = Lab::with_args(&["--ct-max", "1024"]);
    let st = lab.stats();
    assert_eq!(st["conntrack_capacity"], 2048, "{st}");
    // Host port != container port: a reply that lost its conntrack entry would be
    // masqueraded to another source port and never match the client's connection.
    lab.run_server("push", &["9100:9000"], &["serve-push", "9000", PAUSE_MS]);
    lab.run_server("dns", &["5353:53/udp"], &["serve-udp", "53"]);
    lab.serve_in_client(&["serve-push", "9001", PAUSE_MS]);
    let tester = tester_bin();
    // DNATed: the client holds a connection to a published port, idle until the
    // server speaks again.
    let dnat = spawn(
        Command::new("ip")
            .args(["netns", "exec", &lab.client])
            .arg(&tester)
            .args(["read-push", &format!("{HOST_IP}:9100"), "15000"]),
    );
    // Masqueraded: a container holds a connection to the client.
    let masq = spawn(
        Command::new(netd_bin())
            .arg("-H")
            .arg(lab.socket())
            .args(["exec", "push"])
            .arg(&tester)
            .args(["read-push", &format!("{CLIENT_IP}:9001"), "15000"]),
    );
    std::thread::sleep(Duration::from_millis(800));
    // 6,144 new UDP flows through a published port, each answered.
    let flood = lab
        .from_client(&["udp-flood", &format!("{HOST_IP}:5353"), "6144"])
        .expect("flood");
    assert!(flood.contains("sent=6144"), "{flood}");
    let st = lab.stats();
    assert!(
        st["counters"]["ct_new"].as_u64().unwrap_or(0) > 2048,
        "the flood did not overflow the table: {st}"
    );
    finish("the DNATed connection", dnat);
    finish("the masqueraded connection", masq);
    // The table stayed within its bounds and said it was under pressure.
    let st = lab.stats();
    let bound = st["conntrack_capacity"].as_u64().unwrap_or(0)
        + st["conntrack_new_capacity"].as_u64().unwrap_or(0);
    assert!(
        st["conntrack_entries"].as_u64().unwrap_or(0) <= bound,
        "{st}"
    );
    assert!(
        st["conntrack_insert_failures"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    // And new connections still work afterwards.
    let o = Command::new("ip")
        .args(["netns", "exec", &lab.client])
        .arg(&tester)
        .args(["read-push", &format!("{HOST_IP}:9100"), "15000"])
        .output()
        .expect("tester");
    assert!(
        o.status.success(),
        "a new connection after the flood: {o:?}"
    );
}
