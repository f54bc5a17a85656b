//! End-to-end: a real daemon in a host namespace, real packets from a client namespace.
//! Run as root (cargo xtask test does).
use std::time::Duration;

use netd_tests::{Lab, TcProgram, CLIENT_IP, HOST_IP};

fn published(port: u16) -> String {
    format!("{HOST_IP}:{port}")
}

fn assert_rulesets_empty(lab: &Lab) {
    let (ipt, nft) = lab.host_rulesets();
    assert!(ipt.is_empty(), "host iptables has rules:\n{ipt}");
    assert!(nft.is_empty(), "host nftables has a ruleset:\n{nft}");
}

#[test]
fn published_tcp_port_reaches_container_with_client_source_preserved() {
    let lab = Lab::new();
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    let body = lab
        .from_client(&["tcp", &published(8080)])
        .expect("published port answers");
    // No proxy and no SNAT on the way in: the container sees the client's own address.
    assert!(
        body.starts_with(&format!("peer={CLIENT_IP}:")),
        "body: {body}"
    );
    assert_rulesets_empty(&lab);
    let st = lab.stats();
    assert!(st["counters"]["dnat"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(
        st["counters"]["dnat_reply"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    // The fast path delivered (redirect_peer in, FIB + redirect out).
    assert!(st["counters"]["redirect"].as_u64().unwrap_or(0) > 0, "{st}");
    // Conntrack shows the flow in both directions.
    let ct = lab.netd_ok(&["conntrack", "ls"]);
    assert!(
        ct.contains("dnat-reply") && ct.contains(&format!("{HOST_IP}:8080")),
        "{ct}"
    );
}

/// The README's example, literally: busybox httpd published on 8080, curl from outside.
#[test]
fn http_get_from_the_client_returns_the_containers_page() {
    let lab = Lab::new();
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from a netd container\n").unwrap();
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "--",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        www.to_str().unwrap(),
    ]);
    let url = format!("http://{HOST_IP}:8080/");
    let mut body = String::new();
    // httpd needs a moment to bind.
    for _ in 0..50 {
        let o = lab.exec_in(&lab.client, &["curl", "-s", "-m", "3", &url]);
        body = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(body, "hello from a netd container\n");
    assert_rulesets_empty(&lab);
}

#[test]
fn published_udp_port_and_port_ranges() {
    let lab = Lab::new();
    lab.run_server("dns", &["5353:53/udp"], &["serve-udp", "53"]);
    lab.run_server("rng", &["9000-9002:7000-7002"], &["serve-tcp", "7001"]);
    let got = lab
        .from_client(&["udp", &published(5353), "hello"])
        .expect("udp answers");
    assert!(
        got.contains(&format!("peer={CLIENT_IP}:")) && got.contains("hello"),
        "{got}"
    );
    // 9001 -> 7001, where the server listens; 9000 -> 7000 has no listener.
    let body = lab
        .from_client(&["tcp", &published(9001)])
        .expect("range member answers");
    assert!(body.starts_with("peer="), "{body}");
    assert!(lab.from_client(&["tcp", &published(9000)]).is_err());
    let ports = lab.netd_ok(&["port", "rng"]);
    assert_eq!(ports.lines().count(), 3, "{ports}");
    assert!(ports.contains("7001/tcp -> 0.0.0.0:9001"), "{ports}");
    assert_rulesets_empty(&lab);
}

#[test]
fn slow_path_without_redirects_is_also_correct() {
    let lab = Lab::with_args(&["--no-fast-path"]);
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    let body = lab
        .from_client(&["tcp", &published(8080)])
        .expect("published port answers");
    assert!(body.starts_with(&format!("peer={CLIENT_IP}:")), "{body}");
    let st = lab.stats();
    assert_eq!(st["counters"]["redirect"].as_u64(), Some(0), "{st}");
    assert_rulesets_empty(&lab);
}

#[test]
fn rm_removes_the_port_the_veth_the_namespace_and_the_map_entries() {
    let lab = Lab::new();
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    let veth = lab.inspect("web")["HostVeths"][0]
        .as_str()
        .unwrap()
        .to_string();
    lab.from_client(&["tcp", &published(8080)])
        .expect("answers before rm");
    assert!(lab.host_links().contains(&veth));
    assert_eq!(lab.container_namespaces().len(), 1);

    // Docker's rule: a running container needs -f.
    let o = lab.netd(&["rm", "web"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is running"));

    lab.netd_ok(&["rm", "-f", "web"]);
    assert!(
        lab.from_client(&["tcp", &published(8080)]).is_err(),
        "port still answers after rm"
    );
    assert!(!lab.host_links().contains(&veth), "veth {veth} left behind");
    assert!(
        lab.container_namespaces().is_empty(),
        "namespace left behind"
    );
    assert!(
        lab.endpoint_pins().is_empty(),
        "endpoint link pin left: {:?}",
        lab.endpoint_pins()
    );
    let st = lab.stats();
    assert_eq!(st["port_map_entries"], 0, "{st}");
    assert_eq!(st["endpoint_entries"], 0, "{st}");
    assert_eq!(st["conntrack_entries"], 0, "{st}");
    assert_eq!(lab.netd_ok(&["ps", "-a", "-q"]).trim(), "");
}

/// Each bad input: non-zero exit, one line on stderr naming the problem, nothing changed.
#[test]
fn bad_input_is_one_clear_line_and_changes_nothing() {
    let lab = Lab::new();
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    // Everything of `ps` but the "Up N seconds" column, which moves with time.
    let state = |lab: &Lab| {
        let mut v: serde_json::Value =
            serde_json::from_str(&lab.netd_ok(&["ps", "-a", "--format", "json"])).unwrap();
        for c in v.as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("Status");
        }
        v
    };
    let before = state(&lab);
    let links_before = lab.host_links();
    let tester = netd_tests::tester_bin();
    let t = tester.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["frobnicate"], "unrecognized subcommand"),
        (
            vec!["run", "--bogus", "--", t],
            "unexpected argument '--bogus'",
        ),
        (
            vec!["run", "-d", "-p", "1.2.3.4.5::80", "--", t],
            "not an IPv4 address",
        ),
        (
            vec!["run", "-d", "--expose", "0", "-P", "--", t],
            "port 0 is out of range",
        ),
        (
            vec!["conntrack", "flush", "--proto", "bogus"],
            "unknown protocol",
        ),
        (
            vec!["run", "-d", "-p", "x:80", "--", t],
            "\"x\" is not a port number",
        ),
        (
            vec!["run", "-d", "-p", "0:80", "--", t],
            "port 0 is out of range",
        ),
        (
            vec!["run", "-d", "-p", "70000:80", "--", t],
            "port 70000 is out of range",
        ),
        (
            vec!["run", "-d", "-p", "8080:80/dccp", "--", t],
            "unknown protocol",
        ),
        (
            vec!["run", "-d", "-p", "8080:80", "--", t, "serve-tcp", "81"],
            "already published by container web",
        ),
        (
            vec!["run", "-d", "--name", "web", "--", t],
            "already in use",
        ),
        (
            vec!["run", "-d", "--name", "bad/name", "--", t],
            "invalid container name",
        ),
        (vec!["run", "-d", "--rm"], "--rm needs a command"),
        (
            vec!["run", "-d", "--network", "nosuch", "--", t],
            "network nosuch not found",
        ),
        (
            vec!["run", "-d", "--ip", "172.17.0.50", "--", t],
            "networks created with --subnet",
        ),
        (
            vec!["run", "-d", "--network", "host", "-p", "81:80", "--", t],
            "port publishing needs a bridge network",
        ),
        (
            vec!["run", "-d", "--network", "container:nosuch", "--", t],
            "No such container: nosuch",
        ),
        (
            vec!["run", "-d", "--", "/nonexistent/binary"],
            "No such file",
        ),
        (vec!["rm", "-f", "nosuch"], "No such container: nosuch"),
        (vec!["port", "nosuch"], "No such container: nosuch"),
    ];
    for (args, want) in cases {
        let o = lab.netd(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "netd {args:?} succeeded");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "netd {args:?}: not one line:\n{err}"
        );
        assert!(
            err.contains(want),
            "netd {args:?}: {err:?} does not say {want:?}"
        );
    }
    assert_eq!(state(&lab), before, "state changed");
    assert_eq!(lab.host_links(), links_before, "links changed");
    assert_eq!(lab.container_namespaces().len(), 1);
    // The original mapping still works.
    lab.from_client(&["tcp", &published(8080)])
        .expect("still answers");
}

#[test]
fn cli_names_the_socket_when_no_daemon_runs() {
    let o = std::process::Command::new(netd_tests::netd_bin())
        .args(["-H", "/nonexistent/netd.sock", "ps"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/netd.sock") && err.contains("daemon"),
        "{err}"
    );
}

/// The endpoint program of the one container, `before` and `after` a restart: one tc
/// filter on its veth (in the agent's block), at the same priority and with the same
/// name both times (no pin: a filter needs none to outlast the agent), holding the new
/// agent's program after, not the old one's.
fn assert_swapped_in_place(before: &[TcProgram], after: &[TcProgram]) {
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(after.len(), 1, "{after:?}");
    let (b, a) = (&before[0], &after[0]);
    assert!(b.name.starts_with("endpoint_egress@"), "{b:?}");
    assert_eq!((&a.link, a.pref, &a.name), (&b.link, b.pref, &b.name));
    assert_ne!(a.id, b.id, "the new agent's program is not in the filter");
}

/// netd's endpoint programs sit in tc blocks of its own; a filter someone else put in
/// one is never run over: the next container is refused with one line naming it, and
/// nothing of it is left. Once the filter is gone, containers start again.
#[test]
fn a_foreign_filter_in_netds_tc_block_stops_a_new_container_with_one_line() {
    let lab = Lab::new();
    lab.netd_ok(&["run", "-d", "--name", "one", "--", "sleep", "600"]);
    let progs = lab.endpoint_programs();
    let block = progs[0].block.expect("the veth is bound to a shared block");
    let tc = |args: &[&str]| {
        let o = std::process::Command::new("tc")
            .args(["-n", lab.host.as_str()])
            .args(args)
            .output()
            .expect("tc");
        assert!(o.status.success(), "tc {args:?}: {o:?}");
    };
    let block = block.to_string();
    tc(&[
        "filter",
        "add",
        "block",
        &block,
        "prio",
        "7",
        "handle",
        "1",
        "bpf",
        "bytecode",
        "1,6 0 0 0",
    ]);
    let o = lab.netd(&["run", "-d", "--name", "two", "--", "sleep", "600"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "tc block {block} holds a filter netd did not put there"
        )),
        "{err}"
    );
    let ps = lab.netd_ok(&["ps", "-a"]);
    assert!(!ps.contains("two"), "{ps}");
    assert_eq!(lab.container_namespaces().len(), 1);
    tc(&["filter", "del", "block", &block, "prio", "7"]);
    lab.netd_ok(&["run", "-d", "--name", "two", "--", "sleep", "600"]);
    assert_eq!(lab.endpoint_programs().len(), 2);
}

#[test]
fn datapath_keeps_forwarding_through_an_agent_crash_and_restart() {
    let mut lab = Lab::new();
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    lab.from_client(&["tcp", &published(8080)])
        .expect("answers");
    let before = lab.endpoint_programs();
    lab.stop_daemon(libc::SIGKILL);
    // No agent at all: the pinned programs and maps still NAT.
    let body = lab
        .from_client(&["tcp", &published(8080)])
        .expect("answers with the agent dead");
    assert!(body.starts_with(&format!("peer={CLIENT_IP}:")), "{body}");
    lab.start_daemon().expect("restart");
    let ps = lab.netd_ok(&["ps"]);
    assert!(
        ps.contains("web") && ps.contains(" Up "),
        "container not adopted:\n{ps}"
    );
    lab.from_client(&["tcp", &published(8080)])
        .expect("answers after restart");
    assert_swapped_in_place(&before, &lab.endpoint_programs());
    // And it can still remove what the previous agent made.
    lab.netd_ok(&["rm", "-f", "web"]);
    assert!(lab.from_client(&["tcp", &published(8080)]).is_err());
    assert!(lab.container_namespaces().is_empty());
}

#[test]
fn sigterm_keeps_the_datapath_forwarding_and_the_next_agent_adopts_it() {
    let mut lab = Lab::new();
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    lab.from_client(&["tcp", &published(8080)])
        .expect("answers");
    let before = lab.endpoint_programs();
    let st = lab.stop_daemon(libc::SIGTERM).expect("daemon status");
    assert!(st.success(), "daemon exit: {st}");
    assert!(!lab.socket().exists(), "socket file left behind");
    assert!(
        lab.daemon_log().contains("the datapath keeps forwarding"),
        "{}",
        lab.daemon_log()
    );
    // No agent: the pinned programs still publish the port.
    let body = lab
        .from_client(&["tcp", &published(8080)])
        .expect("answers with the agent stopped");
    assert!(body.starts_with(&format!("peer={CLIENT_IP}:")), "{body}");
    assert_eq!(
        lab.endpoint_programs(),
        before,
        "the endpoint's filter stays"
    );
    lab.start_daemon().expect("restart");
    assert!(lab.netd_ok(&["ps"]).contains("web"));
    lab.from_client(&["tcp", &published(8080)])
        .expect("answers after restart");
    assert_swapped_in_place(&before, &lab.endpoint_programs());
    assert_rulesets_empty(&lab);
}

#[test]
fn cleanup_removes_what_the_instance_made_and_is_refused_while_its_daemon_runs() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.77.0.0/24", "appnet"]);
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    lab.netd_ok(&["network", "connect", "appnet", "web"]);
    let links_before = lab.host_links();
    assert!(links_before.len() > 2, "{links_before:?}");
    // While the daemon runs: refused, nothing changed.
    let o = lab.netd_cleanup().expect("cleanup runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "cleanup ran beside a live daemon");
    assert!(
        err.contains("another netd daemon (pid ") && err.lines().count() == 1,
        "{err}"
    );
    lab.from_client(&["tcp", &published(8080)])
        .expect("still answers");
    assert_eq!(lab.host_links(), links_before);

    lab.stop_daemon(libc::SIGTERM);
    let o = lab.netd_cleanup().expect("cleanup runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.starts_with("removed 1 namespaces, "), "{out}");
    assert!(lab.from_client(&["tcp", &published(8080)]).is_err());
    assert!(lab.container_namespaces().is_empty());
    assert!(
        !lab.bpf_dir.exists(),
        "pins left under {}",
        lab.bpf_dir.display()
    );
    let mut left = lab.host_links();
    left.sort();
    assert_eq!(left, ["lo", "up0"], "links left in the host namespace");
    let state: Vec<String> = std::fs::read_dir(lab.dir.join("state"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("state."))
                .collect()
        })
        .unwrap_or_default();
    assert!(state.is_empty(), "state left: {state:?}");
    assert_rulesets_empty(&lab);
    // And the next start begins from nothing.
    lab.start_daemon().expect("start after cleanup");
    assert_eq!(lab.netd_ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn run_without_detach_prints_output_and_returns_the_exit_code() {
    let lab = Lab::new();
    let o = lab.netd(&[
        "run",
        "--name",
        "once",
        "--",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("eth0") && out.contains("inet 172."), "{out}");
    let ps = lab.netd_ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (3)"), "{ps}");
}

/// `netd stats | head -1` and friends: the CLI ends quietly when its reader goes away
/// (it used to panic with "failed printing to stdout: Broken pipe").
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let lab = Lab::new();
    lab.run_server("web", &["20000-20299:20000-20299"], &["serve-tcp", "80"]);
    let netd = netd_tests::netd_bin();
    let err_file = lab.dir.join("pipe.err");
    for args in ["stats", "ps", "network ls", "port web"] {
        for reader in ["true", "head -c 1 >/dev/null"] {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{} -H {} {args} 2>{} | {reader}",
                    netd.display(),
                    lab.socket().display(),
                    err_file.display()
                ))
                .output()
                .expect("sh");
            assert!(o.status.success(), "{o:?}");
            let err = std::fs::read_to_string(&err_file).unwrap_or_default();
            assert!(err.is_empty(), "netd {args} | {reader}: {err}");
        }
    }
}

/// A detached container's process starts as a fresh program would: no signal blocked or
/// ignored (the daemon blocks them all around the start and Rust ignores SIGPIPE), a
/// process group of its own, /dev/null as its input, its output in its log, no fd of
/// the daemon's.
#[test]
fn a_detached_process_starts_with_default_signals_in_a_group_of_its_own() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "sig",
        "--",
        "sh",
        "-c",
        "grep -E '^Sig(Blk|Ign)' /proc/self/status; ps -o pid=,pgid= -p $$; \
         readlink /proc/self/fd/0; echo fds: $(ls /proc/$$/fd); echo to-stderr >&2; \
         sleep 30",
    ]);
    let log = log_containing(&lab, "sig", "to-stderr");
    assert!(log.contains("SigBlk:\t0000000000000000"), "{log}");
    assert!(log.contains("SigIgn:\t0000000000000000"), "{log}");
    assert!(log.contains("/dev/null"), "{log}");
    // Nothing of the daemon's but the three streams (3 is the shell's own pipe for
    // `$(..)`; anything the daemon passed on would come on top).
    assert!(log.contains("fds: 0 1 2 3\n"), "{log}");
    let ids: Vec<&str> = log
        .lines()
        .find(|l| l.split_whitespace().count() == 2 && !l.contains(':'))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert!(ids.len() == 2 && ids[0] == ids[1], "pid and pgid: {log}");
}

/// A process on a terminal (started by posix_spawn, which passes on every fd the daemon
/// holds without O_CLOEXEC) gets nothing of the daemon's either: not another
/// container's terminal.
#[test]
fn a_terminal_process_gets_no_other_containers_terminal() {
    let lab = Lab::new();
    lab.netd_ok(&["run", "-d", "-t", "--name", "first", "--", "sleep", "30"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "second",
        "--",
        "sh",
        "-c",
        "echo fds: $(ls /proc/self/fd); sleep 30",
    ]);
    let log = log_containing(&lab, "second", "fds:");
    assert!(log.contains("fds: 0 1 2 3\r\n"), "{log:?}");
}

/// Container `name`'s log once it holds `needle` (or as it is after 5 seconds).
fn log_containing(lab: &Lab, name: &str, needle: &str) -> String {
    let mut log = String::new();
    for _ in 0..100 {
        log = lab.netd_ok(&["logs", name]);
        if log.contains(needle) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    log
}
