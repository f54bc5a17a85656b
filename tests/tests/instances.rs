//! One daemon instance never touches another's objects, and only root (or the API
//! group) may talk to a daemon. Run as root (cargo xtask test does).
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{netd_bin, Lab, HOST_IP};

/// A second daemon in lab `b`'s host namespace that uses `prefix` for its container
/// namespaces (the lab's own daemon would use the lab's prefix).
fn spawn_daemon_with_prefix(b: &Lab, prefix: &str) -> Child {
    let log = std::fs::File::create(b.dir.join("daemon-b.log")).expect("log");
    let child = Command::new(netd_bin())
        .args(["daemon", "--netns", &b.host])
        .arg("--state-dir")
        .arg(b.dir.join("state"))
        .arg("--run-dir")
        .arg(b.dir.join("run"))
        .arg("--bpf-dir")
        .arg(&b.bpf_dir)
        .args(["--netns-prefix", prefix])
        .arg("--cgroup")
        .arg(b.cgroup.as_ref().expect("the e2e lab has a cgroup"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawning the second daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.netd(&["ps"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the second daemon did not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn namespace_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn a_restarted_daemon_removes_only_what_it_made() {
    let mut a = Lab::new();
    a.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    let prefix = a.container_prefix();

    // A second instance, in a host namespace of its own, with the SAME namespace prefix.
    let b = Lab::without_daemon();
    let mut bd = spawn_daemon_with_prefix(&b, &prefix);
    b.netd_ok(&["run", "-d", "--name", "other", "--", "sleep", "600"]);
    let theirs = format!("{prefix}other");
    assert!(namespace_exists(&theirs));

    // Objects nobody's netd made, with netd's names: a namespace with the prefix, a
    // link with the veth prefix and one with the bridge prefix in A's host namespace.
    let intruder = format!("{prefix}intruder");
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().expect("ip");
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    };
    ip(&["netns", "add", &intruder]);
    ip(&[
        "-n",
        &a.host,
        "link",
        "add",
        "ndvforeign0",
        "type",
        "bridge",
    ]);
    ip(&["-n", &a.host, "link", "add", "ndbr-x", "type", "bridge"]);

    // A restart reconciles and cleans up leftovers: only its own.
    a.stop_daemon(libc::SIGTERM);
    a.start_daemon().expect("restart");
    assert!(
        namespace_exists(&theirs),
        "the other instance's namespace was removed"
    );
    assert!(
        namespace_exists(&intruder),
        "a namespace nobody's netd made was removed"
    );
    let links = a.host_links();
    assert!(links.contains(&"ndvforeign0".to_string()), "{links:?}");
    assert!(links.contains(&"ndbr-x".to_string()), "{links:?}");
    assert!(namespace_exists(&format!("{prefix}web")));
    a.from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .expect("A's own container still answers");
    let ps = b.netd_ok(&["ps", "--format", "json"]);
    assert!(
        ps.contains("other") && ps.contains("running"),
        "B lost its container: {ps}"
    );

    // B's container goes through B; the intruder goes by hand.
    b.netd_ok(&["rm", "-f", "other"]);
    assert!(!namespace_exists(&theirs));
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(bd.id() as i32, libc::SIGTERM) };
    let _ = bd.wait();
    ip(&["netns", "del", &intruder]);
}

fn as_nobody(sock: &std::path::Path, group: u32, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            &format!("--regid={group}"),
            "--clear-groups",
        ])
        .arg(netd_bin())
        .arg("-H")
        .arg(sock)
        .args(args)
        .output()
        .expect("setpriv")
}

#[test]
fn only_root_and_the_api_group_may_use_the_socket() {
    // A service manager's UMask=0000 must not make the socket world-writable.
    // SAFETY: umask(2) only changes this process's file creation mask; the daemon
    // inherits it.
    let old = unsafe { libc::umask(0) };
    let lab = Lab::new();
    let grouped = Lab::with_args(&["-G", "nogroup"]);
    unsafe { libc::umask(old) };

    let sock = lab.socket();
    let m = std::fs::metadata(&sock).expect("socket");
    assert_eq!(m.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!((m.uid(), m.gid()), (0, 0));
    let run = std::fs::metadata(sock.parent().expect("run dir")).expect("run dir");
    assert_eq!(run.permissions().mode() & 0o777, 0o750, "run dir mode");

    // An unprivileged user is refused, with one line and a non-zero exit.
    let o = as_nobody(&sock, 65534, &["ps"]);
    assert!(!o.status.success(), "nobody may use the API: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.to_lowercase().contains("permission denied"), "{err}");

    // With -G, the group's members may, and others still may not.
    let gsock = grouped.socket();
    assert_eq!(std::fs::metadata(&gsock).expect("socket").gid(), 65534);
    let o = as_nobody(&gsock, 65534, &["ps"]);
    assert!(o.status.success(), "a member of the API group: {o:?}");
    let o = as_nobody(&gsock, 1, &["ps"]);
    assert!(!o.status.success(), "not a member of the API group: {o:?}");
}
