//! The lab itself: teardown leaves nothing behind, and the sweep removes only what dead
//! runs of its own tag left. Run as root (cargo xtask test does).
use std::path::PathBuf;

use netd_lab::{leaks, netns, sweep, Lab};

#[test]
fn teardown_leaves_no_namespace_pin_or_cgroup() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "run", "-d", "--name", "c1", "-p", "8080:80", "--", "sleep", "600",
    ]);
    let (name, bpf_dir, cgroup) = (lab.name.clone(), lab.bpf_dir.clone(), lab.cgroup.clone());
    let before = lab.leftovers();
    // Host, client, the container's namespace, the pins and the cgroup.
    assert!(before.len() >= 5, "{before:?}");
    assert_eq!(
        lab.endpoint_programs().len(),
        1,
        "the endpoint program on its veth"
    );
    lab.close().expect("teardown reports no problem");
    assert_eq!(
        leaks::leftovers(&name, &bpf_dir, cgroup.as_deref()),
        Vec::<String>::new()
    );
}

/// A pid no process has (any more).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().expect("true");
    let pid = c.id();
    c.wait().expect("wait");
    assert!(!sweep::pid_alive(pid));
    pid
}

#[test]
fn sweep_removes_only_dead_runs_of_its_own_tag() {
    let (dead, me) = (dead_pid(), std::process::id());
    let stale = format!("ndt-{dead}-0-host");
    let live = format!("ndt-{me}-sweeptest-host");
    let other = format!("ndx-{dead}-0-host");
    for ns in [&stale, &live, &other] {
        netns::create(ns).expect("creating a namespace");
    }
    let stale_dir = PathBuf::from(sweep::BPFFS).join(format!("ndt-{dead}-0"));
    std::fs::create_dir_all(stale_dir.join("links")).expect("bpffs dir");
    let stale_tmp = std::env::temp_dir().join(format!("ndt-{dead}-0"));
    std::fs::create_dir_all(stale_tmp.join("state")).expect("temp dir");

    let removed = sweep::sweep_stale("ndt");

    let (live_left, other_left) = (netns::exists(&live), netns::exists(&other));
    for ns in [&live, &other] {
        let _ = netns::delete(ns);
    }
    assert!(!netns::exists(&stale), "{stale} survived: {removed:?}");
    assert!(!stale_dir.exists() && !stale_tmp.exists(), "{removed:?}");
    assert!(live_left, "the sweep took a live run's namespace {live}");
    assert!(other_left, "the sweep took another tag's namespace {other}");
}
