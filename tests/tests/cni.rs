//! End-to-end: netd-cni executed the way container runtimes execute CNI plugins (CNI_*
//! environment variables, the configuration on stdin, inside the lab's host namespace)
//! against namespaces made with `ip netns add`, then driven by a real runtime (Podman).
//! Run as root (cargo xtask test does).
use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{tester_bin, Lab, CLIENT_IP, HOST_IP};
use serde_json::{json, Value};

#[path = "cni/containerd.rs"]
mod containerd;
#[path = "cni/dual_stack.rs"]
mod dual_stack;
#[path = "cni/podman.rs"]
mod podman;

/// The plugin binary: from xtask, or next to the test binary.
pub fn cni_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NETD_CNI_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("netd-cni"))
        .expect("target dir")
}

/// What one plugin execution printed, and its exit status.
pub struct Run {
    pub ok: bool,
    pub out: Value,
    pub raw: String,
}

/// Executes netd-cni in the lab's host namespace with `verb`, the CNI_* variables of
/// `env` (container id, netns path, ifname) and `conf` on stdin.
pub fn cni(lab: &Lab, verb: &str, env: Option<(&str, &str, &str)>, conf: &Value) -> Run {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.host])
        .arg(cni_bin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((id, netns, ifname)) = env {
        cmd.env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname);
    }
    let mut child = cmd.spawn().expect("running netd-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("writing the configuration");
    let o = child.wait_with_output().expect("netd-cni output");
    let raw = String::from_utf8_lossy(&o.stdout).into_owned();
    Run {
        ok: o.status.success(),
        out: serde_json::from_str(raw.trim()).unwrap_or(Value::Null),
        raw: format!("{raw}{}", String::from_utf8_lossy(&o.stderr)),
    }
}

/// A namespace made as a runtime makes it, named with the lab's prefix (so a crashed
/// run's leftovers are swept), deleted when dropped.
pub struct RuntimeNs {
    pub name: String,
    pub path: String,
}

impl RuntimeNs {
    pub fn new(lab: &Lab, tag: &str) -> RuntimeNs {
        let name = format!("{}-{tag}", lab.name);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(st.success(), "ip netns add {name}");
        let _ = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status();
        RuntimeNs {
            path: format!("/run/netns/{name}"),
            name,
        }
    }

    /// What a runtime does when the container is gone.
    pub fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Drop for RuntimeNs {
    fn drop(&mut self) {
        if std::path::Path::new(&self.path).exists() {
            self.delete();
        }
    }
}

/// A server of the tester inside a runtime's namespace, killed at the lab's teardown.
fn serve_in(lab: &mut Lab, ns: &RuntimeNs, server: &[&str]) {
    let name = ns.name.clone();
    let child = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(tester_bin())
        .args(server)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a server in the runtime's namespace");
    lab.adopt_background(child);
    lab.wait_listening(&name, server);
}

fn conf(lab: &Lab, version: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": version,
        "name": "cninet",
        "type": "netd-cni",
        "socket": lab.socket(),
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    c
}

fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match f() {
            Ok(t) => return t,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn cni_add_publishes_masquerades_checks_and_deletes_twice() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.88.7.0/24", "cninet"]);
    let ns = RuntimeNs::new(&lab, "cni1");
    let env = Some(("ctr1", ns.path.as_str(), "eth0"));
    let add_conf = conf(
        &lab,
        "1.1.0",
        json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
    );
    let add = cni(&lab, "ADD", env, &add_conf);
    assert!(add.ok, "ADD: {}\n{}", add.raw, lab.daemon_log());
    let r = &add.out;
    assert_eq!(r["cniVersion"], "1.1.0", "{r}");
    assert_eq!(r["interfaces"][2]["name"], "eth0", "{r}");
    assert_eq!(r["interfaces"][2]["sandbox"], ns.path.as_str(), "{r}");
    let addr = r["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    assert!(addr.starts_with("10.88.7.") && addr.ends_with("/24"), "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.88.7.1", "{r}");
    assert_eq!(r["ips"][0]["interface"], 2, "{r}");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0", "{r}");

    // The interface really is there, with the address the result names.
    let ip_a = lab.exec_in(&ns.name, &["ip", "-4", "-o", "addr"]);
    assert!(
        String::from_utf8_lossy(&ip_a.stdout).contains(&addr),
        "{ip_a:?}"
    );

    // In through the hostPort (eBPF DNAT), with the client's own address preserved.
    serve_in(&mut lab, &ns, &["serve-tcp", "80"]);
    let body = retry("hostPort 8080", || {
        lab.from_client(&["tcp", &format!("{HOST_IP}:8080")])
    });
    assert!(
        body.starts_with(&format!("peer={CLIENT_IP}:")),
        "body: {body}"
    );
    // Out through masquerade: the outside world sees the host's address.
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let nsname = ns.name.clone();
    let tester = tester_bin();
    let o = lab.exec_in(
        &nsname,
        &[
            tester.to_str().expect("utf-8"),
            "tcp",
            &format!("{CLIENT_IP}:7000"),
        ],
    );
    let body = String::from_utf8_lossy(&o.stdout);
    assert!(body.starts_with(&format!("peer={HOST_IP}:")), "{o:?}");

    // The attachment is a container record netd shows.
    let ps = lab.netd_ok(&["ps"]);
    assert!(ps.contains("cni-ctr1-eth0"), "{ps}");
    assert!(ps.contains("8080->80/tcp"), "{ps}");

    // CHECK with the ADD's result as prevResult: all as made.
    let mut check_conf = add_conf.clone();
    check_conf["prevResult"] = add.out.clone();
    let check = cni(&lab, "CHECK", env, &check_conf);
    assert!(check.ok, "CHECK: {}", check.raw);
    // Drift: the default route removed behind netd's back is reported.
    let _ = lab.exec_in(&nsname, &["ip", "route", "del", "default"]);
    let check = cni(&lab, "CHECK", env, &check_conf);
    assert!(!check.ok, "CHECK after drift succeeded: {}", check.raw);
    assert_eq!(check.out["code"], 101, "{}", check.raw);
    assert!(
        check.out["details"]
            .as_str()
            .unwrap_or("")
            .contains("default route"),
        "{}",
        check.raw
    );
    // So is the host veth's qdisc removed, which takes the endpoint program with it.
    let progs = lab.endpoint_programs();
    assert_eq!(progs.len(), 1, "{progs:?}");
    let _ = std::process::Command::new("tc")
        .args([
            "-n",
            &lab.host,
            "qdisc",
            "del",
            "dev",
            &progs[0].link,
            "clsact",
        ])
        .status();
    assert_eq!(lab.endpoint_programs(), vec![]);
    let check = cni(&lab, "CHECK", env, &check_conf);
    assert!(
        check.out["details"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("the endpoint program is not on {}", progs[0].link)),
        "{}",
        check.raw
    );

    // DEL twice: both succeed, and the port, the record and the veth are gone.
    let veths_before = lab.host_links().len();
    let del = cni(&lab, "DEL", env, &add_conf);
    assert!(del.ok, "DEL: {}", del.raw);
    let del = cni(&lab, "DEL", env, &add_conf);
    assert!(del.ok, "second DEL: {}", del.raw);
    assert!(lab
        .from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .is_err());
    assert!(!lab.netd_ok(&["ps", "-a"]).contains("cni-ctr1-eth0"));
    assert_eq!(lab.host_links().len(), veths_before - 1);
    // The runtime's namespace is the runtime's: DEL leaves it.
    assert!(std::path::Path::new(&ns.path).exists());
    // CHECK of a deleted attachment: the container is unknown (3).
    let check = cni(&lab, "CHECK", env, &check_conf);
    assert_eq!(check.out["code"], 3, "{}", check.raw);
}

#[test]
fn cni_version_status_gc_and_errors() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.88.8.0/24", "cninet"]);
    let v = cni(&lab, "VERSION", None, &json!({"cniVersion": "1.0.0"}));
    assert!(v.ok, "{}", v.raw);
    assert_eq!(v.out["cniVersion"], "1.0.0");
    assert_eq!(
        v.out["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    // Older result shapes: 0.4.0 carries each IP's version.
    let ns_old = RuntimeNs::new(&lab, "cniold");
    let old = cni(
        &lab,
        "ADD",
        Some(("ctrold", ns_old.path.as_str(), "eth0")),
        &conf(&lab, "0.4.0", json!({})),
    );
    assert!(old.ok, "{}", old.raw);
    assert_eq!(old.out["cniVersion"], "0.4.0");
    assert_eq!(old.out["ips"][0]["version"], "4", "{}", old.raw);

    // Static address and MAC (the ips and mac capabilities).
    let ns_a = RuntimeNs::new(&lab, "cnia");
    let a = cni(
        &lab,
        "ADD",
        Some(("ctra", ns_a.path.as_str(), "net1")),
        &conf(
            &lab,
            "1.1.0",
            json!({"runtimeConfig": {"ips": ["10.88.8.77/24"], "mac": "c2:11:22:33:44:55",
                                     "aliases": ["db"]}}),
        ),
    );
    assert!(a.ok, "{}", a.raw);
    assert_eq!(a.out["ips"][0]["address"], "10.88.8.77/24");
    assert_eq!(a.out["interfaces"][2]["mac"], "c2:11:22:33:44:55");
    let ns_b = RuntimeNs::new(&lab, "cnib");
    let b = cni(
        &lab,
        "ADD",
        Some(("ctrb", ns_b.path.as_str(), "eth0")),
        &conf(&lab, "1.1.0", json!({})),
    );
    assert!(b.ok, "{}", b.raw);
    // The same (container, interface) twice: refused, and the first stays.
    let again = cni(
        &lab,
        "ADD",
        Some(("ctrb", ns_b.path.as_str(), "eth0")),
        &conf(&lab, "1.1.0", json!({})),
    );
    assert!(
        !again.ok && again.out["code"].as_u64().is_some(),
        "{}",
        again.raw
    );

    // GC keeps the valid attachments of this network and removes the others.
    let gc = cni(
        &lab,
        "GC",
        None,
        &conf(
            &lab,
            "1.1.0",
            json!({"cni.dev/valid-attachments": [
                {"containerID": "ctra", "ifname": "net1"},
                {"containerID": "ctrold", "ifname": "eth0"}]}),
        ),
    );
    assert!(gc.ok, "GC: {}", gc.raw);
    let ps = lab.netd_ok(&["ps"]);
    assert!(
        ps.contains("cni-ctra-net1") && ps.contains("cni-ctrold-eth0"),
        "{ps}"
    );
    assert!(!ps.contains("cni-ctrb-eth0"), "{ps}");
    // The endpoint listing of the network says the same.
    let o = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(lab.socket())
        .arg("http://netd/netd/endpoints?network=cninet")
        .output()
        .expect("curl");
    let listed: Value = serde_json::from_slice(&o.stdout).expect("endpoint list JSON");
    let mut ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["container_id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["ctra", "ctrold"], "{listed}");

    // DEL after the runtime removed the namespace: still a success.
    ns_a.delete();
    let del = cni(
        &lab,
        "DEL",
        Some(("ctra", ns_a.path.as_str(), "net1")),
        &conf(&lab, "1.1.0", json!({})),
    );
    assert!(del.ok, "DEL without namespace: {}", del.raw);

    // Errors: CNI JSON on stdout with the spec's codes, non-zero exit.
    let bad = cni(
        &lab,
        "ADD",
        Some(("ctrx", ns_b.path.as_str(), "eth1")),
        &conf(&lab, "0.2.0", json!({})),
    );
    assert!(!bad.ok);
    assert_eq!(bad.out["code"], 1, "{}", bad.raw);
    let no_env = cni(&lab, "ADD", None, &conf(&lab, "1.1.0", json!({})));
    assert_eq!(no_env.out["code"], 4, "{}", no_env.raw);
    assert!(no_env.out["details"]
        .as_str()
        .unwrap_or("")
        .contains("CNI_"));
    let unknown_net = cni(
        &lab,
        "ADD",
        Some(("ctry", ns_b.path.as_str(), "eth1")),
        &conf(&lab, "1.1.0", json!({"network": "nosuchnet"})),
    );
    assert_eq!(unknown_net.out["code"], 7, "{}", unknown_net.raw);
    assert!(unknown_net.raw.contains("nosuchnet"), "{}", unknown_net.raw);

    // STATUS: ready with the daemon, 50 without it; ADD without it: try again (11).
    let st = cni(&lab, "STATUS", None, &conf(&lab, "1.1.0", json!({})));
    assert!(st.ok, "STATUS: {}", st.raw);
    lab.stop_daemon(libc::SIGTERM);
    let st = cni(&lab, "STATUS", None, &conf(&lab, "1.1.0", json!({})));
    assert!(!st.ok);
    assert_eq!(st.out["code"], 50, "{}", st.raw);
    let add = cni(
        &lab,
        "ADD",
        Some(("ctrz", ns_b.path.as_str(), "eth1")),
        &conf(&lab, "1.1.0", json!({})),
    );
    assert_eq!(add.out["code"], 11, "{}", add.raw);
    lab.start_daemon().expect("restarting the daemon");
}

#[test]
fn cni_endpoints_survive_a_daemon_restart_and_go_with_their_namespace() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.88.9.0/24", "cninet"]);
    let keep = RuntimeNs::new(&lab, "cnikeep");
    let gone = RuntimeNs::new(&lab, "cnigone");
    let add_conf = conf(
        &lab,
        "1.1.0",
        json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]}}),
    );
    assert!(
        cni(
            &lab,
            "ADD",
            Some(("keep", keep.path.as_str(), "eth0")),
            &add_conf
        )
        .ok
    );
    assert!(
        cni(
            &lab,
            "ADD",
            Some(("gone", gone.path.as_str(), "eth0")),
            &conf(&lab, "1.1.0", json!({}))
        )
        .ok
    );
    serve_in(&mut lab, &keep, &["serve-tcp", "80"]);
    lab.stop_daemon(libc::SIGTERM);
    // The runtime removes a container while netd is down.
    gone.delete();
    lab.start_daemon().expect("restarting the daemon");
    let ps = lab.netd_ok(&["ps"]);
    assert!(ps.contains("cni-keep-eth0"), "{ps}");
    assert!(!ps.contains("cni-gone-eth0"), "{ps}\n{}", lab.daemon_log());
    let body = retry("hostPort 8081 after a restart", || {
        lab.from_client(&["tcp", &format!("{HOST_IP}:8081")])
    });
    assert!(body.starts_with("peer="), "{body}");
    // netd never removed the runtime's namespace on the way.
    assert!(std::path::Path::new(&keep.path).exists());
    assert!(
        cni(
            &lab,
            "DEL",
            Some(("keep", keep.path.as_str(), "eth0")),
            &add_conf
        )
        .ok
    );
}

/// kill -9 between the commit and the kernel work, both ways: the restarted daemon
/// completes a committed ADD (which the runtime, told to try again, then DELs) and
/// finishes a committed DEL.
#[test]
fn cni_add_and_del_are_completed_after_a_crash_past_their_commit() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.88.12.0/24", "cninet"]);
    let ns = RuntimeNs::new(&lab, "cnicrash");
    let env = Some(("crash", ns.path.as_str(), "eth0"));
    let c = conf(&lab, "1.1.0", json!({}));
    let veths = |lab: &Lab| {
        lab.host_links()
            .iter()
            .filter(|l| l.starts_with("ndv"))
            .count()
    };
    let crash_at = |lab: &mut Lab, point: &str| {
        lab.stop_daemon(libc::SIGTERM);
        lab.fault = Some(point.into());
        lab.start_daemon().expect("daemon with a fault point");
    };
    let restart = |lab: &mut Lab| {
        let st = lab.wait_daemon_death().expect("daemon status");
        assert!(!st.success(), "the daemon did not die at its fault point");
        lab.fault = None;
        lab.start_daemon().expect("restarting the daemon");
    };

    crash_at(&mut lab, "endpoint-committed");
    let add = cni(&lab, "ADD", env, &c);
    assert!(!add.ok);
    assert_eq!(add.out["code"], 11, "{}", add.raw);
    restart(&mut lab);
    assert!(lab.netd_ok(&["ps"]).contains("cni-crash-eth0"));
    let addr = lab.exec_in(&ns.name, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains("10.88.12."),
        "the committed attachment was not completed: {addr:?}\n{}",
        lab.daemon_log()
    );
    assert_eq!(veths(&lab), 1);

    crash_at(&mut lab, "endpoint-rm-committed");
    let del = cni(&lab, "DEL", env, &c);
    assert!(!del.ok);
    assert_eq!(del.out["code"], 11, "{}", del.raw);
    restart(&mut lab);
    assert!(!lab.netd_ok(&["ps", "-a"]).contains("cni-crash-eth0"));
    assert_eq!(veths(&lab), 0, "the removed endpoint's veth leaked");
    let link = lab.exec_in(&ns.name, &["ip", "link", "show", "eth0"]);
    assert!(!link.status.success(), "eth0 is still in the namespace");
    assert!(lab.endpoint_pins().is_empty(), "{:?}", lab.endpoint_pins());
    // The runtime's retry of DEL succeeds.
    assert!(cni(&lab, "DEL", env, &c).ok);
}

#[test]
fn cni_add_on_a_macvlan_network_puts_the_namespace_on_the_parents_segment() {
    let mut lab = Lab::new();
    // The uplink's segment, containers from the upper half of the client's /24.
    let p = HOST_IP
        .rsplit_once('.')
        .map(|(p, _)| p.to_string())
        .expect("prefix");
    lab.netd_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        &format!("{p}.0/24"),
        "--ip-range",
        &format!("{p}.128/25"),
        "--gateway",
        CLIENT_IP,
        "-o",
        "parent=up0",
        "cninet",
    ]);
    let ns = RuntimeNs::new(&lab, "mv1");
    let env = Some(("mvctr", ns.path.as_str(), "eth0"));
    // macvlan publishes no ports, through CNI as through run: one line, nothing made.
    let with_ports = conf(
        &lab,
        "1.1.0",
        json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]}}),
    );
    let refused = cni(&lab, "ADD", env, &with_ports);
    assert!(
        !refused.ok && refused.raw.contains("publishes no ports"),
        "{}",
        refused.raw
    );
    let add = cni(&lab, "ADD", env, &conf(&lab, "1.1.0", json!({})));
    assert!(add.ok, "ADD: {}\n{}", add.raw, lab.daemon_log());
    let r = &add.out;
    // One interface, the sandbox's (no host side), as the macvlan plugin reports it.
    assert_eq!(r["interfaces"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["interfaces"][0]["sandbox"], ns.path.as_str(), "{r}");
    assert_eq!(r["ips"][0]["interface"], 0, "{r}");
    let addr = r["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    let ip = addr.split('/').next().expect("ip").to_string();
    assert!(ip.starts_with(&format!("{p}.")), "{r}");
    // The client, on the parent's segment, reaches the namespace straight at its
    // address, and the server there sees the client's own address.
    serve_in(&mut lab, &ns, &["serve-tcp", "80"]);
    let body = retry("the macvlan endpoint from the client", || {
        lab.from_client(&["tcp", &format!("{ip}:80")])
    });
    assert!(body.contains(CLIENT_IP), "{body}");
    let check = cni(
        &lab,
        "CHECK",
        env,
        &conf(&lab, "1.1.0", json!({"prevResult": r})),
    );
    assert!(check.ok, "CHECK: {}", check.raw);
    let del = cni(&lab, "DEL", env, &conf(&lab, "1.1.0", json!({})));
    assert!(del.ok, "DEL: {}", del.raw);
    let links = lab.exec_in(&ns.name, &["ip", "-o", "link", "show", "eth0"]);
    assert!(!links.status.success(), "eth0 left in the namespace");
}
