//! Restarts and upgrades under load. The previous release (`NETD_PREVIOUS_BIN`: cargo
//! xtask test builds it from the commit in xtask/previous-release.txt) or this build
//! runs a user network with containers that publish ports, masquerade and have names;
//! while established flows run both ways and new connections start every 20 ms in both
//! directions, the agent is replaced. Nothing may be lost, and the new agent must
//! list, remove and create containers.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{dig, json, netd_bin, tester_bin, Lab, CLIENT_IP, HOST_IP};

/// How long the traffic runs; the agent is replaced `REPLACE_AT` into it.
const TRAFFIC_SECS: u64 = 7;
const REPLACE_AT: Duration = Duration::from_secs(2);

fn previous_bin() -> PathBuf {
    std::env::var_os("NETD_PREVIOUS_BIN")
        .map(PathBuf::from)
        .expect("NETD_PREVIOUS_BIN (cargo xtask test builds the previous release)")
}

fn tester() -> String {
    tester_bin().display().to_string()
}

/// A lab whose daemon is `bin`, with the containers and client servers the traffic
/// uses: `web` (a greeting on 80, published 8080), `echo` (published 7000) and `out`
/// (the source of outbound traffic), all on the user network `appnet`.
fn lab_with(bin: PathBuf, args: &[&str]) -> Lab {
    let mut lab = Lab::without_daemon();
    lab.netd_bin = bin;
    lab.extra_daemon_args = args.iter().map(|s| s.to_string()).collect();
    lab.start_daemon().expect("daemon");
    lab.netd_ok(&["network", "create", "--subnet", "10.66.0.0/24", "appnet"]);
    let t = tester();
    for (name, publish, server) in [
        ("web", "8080:80", ["serve-tcp", "80"]),
        ("echo", "7000:7000", ["serve-echo", "7000"]),
    ] {
        lab.netd_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "appnet",
            "-p",
            publish,
            "--",
            &t,
            server[0],
            server[1],
        ]);
        lab.wait_listening(&format!("{}{name}", lab.container_prefix()), &server);
    }
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "out",
        "--network",
        "appnet",
        "--",
        "sleep",
        "600",
    ]);
    lab.serve_in_client(&["serve-echo", "9000"]);
    lab.serve_in_client(&["serve-tcp", "9001"]);
    lab
}

/// One load generator: a tester run in a namespace.
struct Load {
    what: &'static str,
    child: Child,
    /// The fewest round trips (hold) or connections (connect-every) a run without a
    /// stall makes.
    at_least: u64,
}

fn spawn(ns: &str, what: &'static str, args: &[&str]) -> Load {
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    // hold: a round trip every 100 ms; connect-every: a connection every 20 ms plus
    // its own time (counted low, for a loaded 2-core machine).
    let at_least = if args[0] == "hold" {
        secs * 9
    } else {
        secs * 15
    };
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(tester_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the tester");
    Load {
        what,
        child,
        at_least,
    }
}

/// Established flows both ways and new connections both ways, for `TRAFFIC_SECS`.
fn start_traffic(lab: &Lab) -> Vec<Load> {
    let secs = TRAFFIC_SECS.to_string();
    let out = format!("{}out", lab.container_prefix());
    let (inb, outb) = (format!("{HOST_IP}:7000"), format!("{CLIENT_IP}:9000"));
    let (new_in, new_out) = (format!("{HOST_IP}:8080"), format!("{CLIENT_IP}:9001"));
    vec![
        spawn(
            &lab.client,
            "established, client to published 7000",
            &["hold", &inb, &secs],
        ),
        spawn(
            &out,
            "established, container to the outside",
            &["hold", &outb, &secs],
        ),
        spawn(
            &lab.client,
            "new connections to published 8080",
            &["connect-every", &new_in, &secs, "20"],
        ),
        spawn(
            &out,
            "new connections from a container to the outside",
            &["connect-every", &new_out, &secs, "20"],
        ),
    ]
}

/// Every load ran to its end without a failure; returns their reports.
fn check_traffic(loads: Vec<Load>, log: &str) -> Vec<String> {
    let mut reports = Vec::new();
    for l in loads {
        let o = l.child.wait_with_output().expect("tester");
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "{}: {out}{err}\ndaemon log:\n{log}",
            l.what
        );
        if out.starts_with('{') {
            let v = json(&out);
            assert_eq!(v["failed"], 0, "{}: {out}\ndaemon log:\n{log}", l.what);
            assert!(v["ok"].as_u64() >= Some(l.at_least), "{}: {out}", l.what);
        } else {
            let n: u64 = out.trim_start_matches("held ").parse().unwrap_or(0);
            assert!(n >= l.at_least, "{}: {out}", l.what);
        }
        reports.push(format!("{}: {out}", l.what));
    }
    reports
}

/// What a user does after the agent was replaced: list, resolve a name, remove, create.
fn manage(lab: &mut Lab) {
    let ps = lab.netd_ok(&["ps"]);
    for name in ["web", "echo", "out"] {
        assert!(ps.contains(name), "{name} not listed:\n{ps}");
    }
    let out = format!("{}out", lab.container_prefix());
    let d = dig(lab, &out, &["web"]);
    assert!(
        d.status == "NOERROR" && d.answers.iter().any(|a| a.starts_with("10.66.0.")),
        "{}",
        d.raw
    );
    lab.netd_ok(&["rm", "-f", "echo"]);
    assert!(lab
        .from_client(&["tcp", &format!("{HOST_IP}:7000")])
        .is_err());
    let t = tester();
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "appnet",
        "-p",
        "8081:80",
        "--",
        &t,
        "serve-tcp",
        "80",
    ]);
    lab.wait_listening(
        &format!("{}web2", lab.container_prefix()),
        &["serve-tcp", "80"],
    );
    let body = lab
        .from_client(&["tcp", &format!("{HOST_IP}:8081")])
        .expect("a container made by the new agent answers");
    assert!(body.starts_with(&format!("peer={CLIENT_IP}:")), "{body}");
}

/// How the running agent gives way to the next.
#[derive(Clone, Copy)]
enum Replace {
    /// `netd daemon --replace`: the new agent holds the links and sends SIGTERM.
    Takeover,
    /// SIGTERM, then the new agent.
    Sigterm,
    /// kill -9, then the new agent.
    Kill,
}

/// Replaces the lab's agent by `next` while traffic runs; returns how long the API was
/// away (from the stop to the new agent answering).
fn replace(lab: &mut Lab, next: PathBuf, how: Replace) -> Duration {
    let t0 = Instant::now();
    lab.netd_bin = next;
    match how {
        Replace::Takeover => {
            let mut old = lab.take_daemon().expect("a daemon runs");
            lab.extra_daemon_args.push("--replace".into());
            lab.start_daemon().expect("the new agent takes over");
            lab.extra_daemon_args.pop();
            old.wait_death();
        }
        Replace::Sigterm | Replace::Kill => {
            let sig = match how {
                Replace::Kill => libc::SIGKILL,
                _ => libc::SIGTERM,
            };
            lab.stop_daemon(sig);
            lab.start_daemon().expect("the new agent starts");
        }
    }
    t0.elapsed()
}

/// After `manage`: the endpoints the previous release made (`web`, `out`) keep their
/// pinned TCX links, the new program swapped in; those this build makes have their
/// programs in tc filters on the veth and no pin. `echo` left nothing.
fn assert_endpoint_attachments(lab: &Lab, from_previous: bool) {
    let pins = lab.endpoint_pins();
    let filters: Vec<_> = lab
        .endpoint_programs()
        .into_iter()
        .filter(|p| p.name.starts_with("endpoint_egress@"))
        .collect();
    let expected = if from_previous { (2, 1) } else { (0, 3) };
    assert_eq!(
        (pins.len(), filters.len()),
        expected,
        "pins {pins:?}, filters {filters:?}"
    );
}

fn under_load(first: PathBuf, how: Replace) {
    let from_previous = first != netd_bin();
    let mut lab = lab_with(first, &[]);
    let loads = start_traffic(&lab);
    std::thread::sleep(REPLACE_AT);
    let window = replace(&mut lab, netd_bin(), how);
    let log = lab.daemon_log();
    for r in check_traffic(loads, &log) {
        println!("{r}");
    }
    println!("agent away for {} ms", window.as_millis());
    // The agent that answers now is this build.
    let v = json(&lab.netd_ok(&["version", "--format", "json"]));
    assert_eq!(v["Server"]["GitCommit"], v["Client"]["GitCommit"], "{v}");
    manage(&mut lab);
    assert_endpoint_attachments(&lab, from_previous);
    // The previous release's state file is in the database now, kept as it was.
    let state = lab.dir.join("state");
    assert!(state.join("state.db").exists());
    assert!(!state.join("state.json").exists());
    // The previous release's IPv4-only trace ring went; this one's holds both families.
    assert!(
        !lab.bpf_dir.join("NETD_TRACE").exists(),
        "the old trace ring is left"
    );
    assert!(lab.bpf_dir.join("NETD_TRACE2").exists());
}

#[test]
fn upgrade_from_the_previous_release_with_replace_loses_nothing() {
    under_load(previous_bin(), Replace::Takeover);
}

#[test]
fn upgrade_from_the_previous_release_after_kill_9_loses_nothing() {
    under_load(previous_bin(), Replace::Kill);
}

#[test]
fn restart_of_this_build_with_sigterm_loses_nothing() {
    under_load(netd_bin(), Replace::Sigterm);
}

/// A conntrack of another capacity is a new map: the flows of the old one are carried
/// into it (and the old pin removed once the new programs run).
#[test]
fn a_conntrack_resize_carries_the_established_flows() {
    let mut lab = lab_with(netd_bin(), &["--ct-max", "50000"]);
    let hold = spawn(
        &lab.client,
        "established, client to published 7000",
        &["hold", &format!("{HOST_IP}:7000"), "4"],
    );
    std::thread::sleep(Duration::from_secs(1));
    lab.stop_daemon(libc::SIGTERM);
    lab.extra_daemon_args = vec!["--ct-max".into(), "60000".into()];
    lab.start_daemon().expect("restart");
    let log = lab.daemon_log();
    check_traffic(vec![hold], &log);
    assert!(log.contains("carried"), "{log}");
    assert!(!lab.bpf_dir.join("old-layout").exists());
    let flows = lab.netd_ok(&["conntrack", "ls", "--port", "7000"]);
    assert!(flows.contains(":7000"), "{flows}");
}

/// Every file under `dir` with its inode: a pin made anew has another.
fn tree(dir: &std::path::Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else if let Ok(m) = p.metadata() {
            out.push((p.display().to_string(), m.ino()));
        }
    }
    out.sort();
    out
}

/// What a refused start must leave as it found it.
#[derive(PartialEq)]
struct Snapshot {
    pins: Vec<(String, u64)>,
    state_files: Vec<(String, u64)>,
    state: Vec<u8>,
    links: Vec<String>,
}

fn snapshot(lab: &Lab) -> Snapshot {
    Snapshot {
        pins: tree(&lab.bpf_dir),
        state_files: tree(&lab.dir.join("state")),
        state: std::fs::read(lab.dir.join("state/state.db")).expect("state"),
        links: lab.host_links(),
    }
}

/// The layout version the state database records.
fn state_version(db: &std::path::Path) -> u32 {
    let c = rusqlite::Connection::open(db).expect("the state database");
    c.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
        r.get(0)
    })
    .expect("its version")
}

/// Records layout version `v` in the state database, as a release of that version would.
fn set_state_version(db: &std::path::Path, v: u32) {
    let c = rusqlite::Connection::open(db).expect("the state database");
    c.execute("UPDATE meta SET value = ?1 WHERE key = 'version'", [v])
        .expect("setting its version");
}

/// Starts the lab's daemon expecting a refusal; returns the one line it printed.
fn refused(lab: &mut Lab) -> String {
    let before = lab.daemon_log();
    let e = lab
        .start_daemon()
        .expect_err("a newer release's datapath or state");
    let log = lab.daemon_log();
    let new = log[before.len()..].trim().to_string();
    assert_eq!(new.lines().count(), 1, "{new}\n{e}");
    new
}

#[test]
fn a_downgrade_is_refused_before_anything_changes() {
    let mut lab = Lab::new();
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    lab.stop_daemon(libc::SIGTERM);
    let layout = lab.bpf_dir.join("NETD_LAYOUT");
    let set_layout = |v: u8| {
        let o = Command::new("bpftool")
            .args(["map", "update", "pinned"])
            .arg(&layout)
            .args([
                "key",
                "0",
                "0",
                "0",
                "0",
                "value",
                &v.to_string(),
                "0",
                "0",
                "0",
            ])
            .output()
            .expect("bpftool");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    // As if a release with datapath layout 99 had run here.
    set_layout(99);
    let before = snapshot(&lab);
    let line = refused(&mut lab);
    assert!(
        line.starts_with("Error: the datapath pinned in ")
            && line.contains("has layout 99")
            && line.contains("(layout 2)"),
        "{line}"
    );
    assert!(
        before == snapshot(&lab),
        "a refused start changed something"
    );
    lab.from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .expect("the datapath still forwards");
    set_layout(2);

    // As if a release with state version 99 had written the state.
    let db = lab.dir.join("state/state.db");
    assert_eq!(state_version(&db), 4);
    set_state_version(&db, 99);
    let before = snapshot(&lab);
    let line = refused(&mut lab);
    assert!(
        line.contains("state version 99") && line.contains("reads up to 4"),
        "{line}"
    );
    assert!(
        before == snapshot(&lab),
        "a refused start changed something"
    );
    set_state_version(&db, 4);
    lab.start_daemon()
        .expect("this release's own state and datapath");
    assert!(lab.netd_ok(&["ps"]).contains("web"));
}
