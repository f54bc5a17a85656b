//! End-to-end: `netd daemon --config-file` (dockerd's daemon.json style): a file starts
//! the daemon with its settings, SIGHUP applies a new log level and names what waits
//! for the next start, and a bad file is refused by key before anything is touched.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use netd_tests::Lab;

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_config_file_starts_the_daemon_with_its_settings_and_sighup_reloads_the_log_level() {
    let mut lab = Lab::without_daemon();
    let file = lab.dir.join("my-daemon.json");
    std::fs::write(
        &file,
        r#"{"icc": false, "log-level": "warn", "metrics-addr": "127.0.0.1:9325"}"#,
    )
    .unwrap();
    lab.extra_daemon_args = vec!["--config-file".into(), file.display().to_string()];
    lab.start_daemon().expect("the daemon starts from the file");

    // icc=false from the file: two containers of the default bridge are kept apart.
    lab.run_server("a", &[], &["serve-tcp", "80"]);
    lab.netd_ok(&["run", "-d", "--name", "b", "--", "sleep", "600"]);
    let a = lab.inspect("a")["NetworkSettings"]["IPAddress"]
        .as_str()
        .expect("a's address")
        .to_string();
    assert!(lab
        .from_container("b", &["tcp", &format!("{a}:80")])
        .is_err());
    assert!(lab.stats()["counters"]["drop_icc"].as_u64().unwrap_or(0) > 0);
    // metrics-addr from the file.
    let m = lab.exec_in(
        &lab.host,
        &[
            "curl",
            "-sf",
            "--max-time",
            "5",
            "http://127.0.0.1:9325/metrics",
        ],
    );
    assert!(String::from_utf8_lossy(&m.stdout).contains("netd_datapath_drops_total"));
    // log-level warn: the start's info lines were not written.
    assert!(
        !lab.daemon_log().contains("listening on"),
        "{}",
        lab.daemon_log()
    );

    // SIGHUP: the new log level applies, a changed icc waits for the next start.
    std::fs::write(
        &file,
        r#"{"icc": true, "log-level": "info", "metrics-addr": "127.0.0.1:9325"}"#,
    )
    .unwrap();
    let pid = lab.daemon_pid().expect("daemon pid");
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    eventually("the reload is logged", || {
        let log = lab.daemon_log();
        log.contains("log level INFO") && log.contains("icc changed")
    });
    assert!(
        lab.daemon_pid().is_some_and(|p| p == pid),
        "SIGHUP must not end it"
    );
    // A broken file on SIGHUP changes nothing and says why.
    std::fs::write(&file, r#"{"log-level": "loud"}"#).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    eventually("the refusal is logged", || {
        lab.daemon_log().contains("the running configuration stays")
    });
}

/// `netd daemon --validate`: checks and exits, never starts (safe on the test machine).
fn validate(dir: &Path, json: &str, flags: &[&str]) -> (bool, String) {
    let file = dir.join("daemon.json");
    std::fs::write(&file, json).unwrap();
    let o = Command::new(netd_tests::netd_bin())
        .args(["daemon", "--validate", "--config-file"])
        .arg(&file)
        .args(flags)
        .output()
        .expect("running netd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn a_bad_file_is_refused_by_key_with_one_line() {
    let dir = std::env::temp_dir().join(format!("netd-daemon-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (good, out) = validate(&dir, r#"{"icc": false, "ct-max": 70000}"#, &["--ipv6"]);
    assert!(good && out.trim() == "configuration OK", "{out}");
    for (json, flags, want) in [
        (r#"{"iptables": false}"#, &[][..], "don't match any configuration option: iptables"),
        (r#"{"icc": "no"}"#, &[][..], "icc must be true or false"),
        (r#"{"ct-max": 12}"#, &[][..], "ct-max: "),
        (
            r#"{"icc": false}"#,
            &["--icc=true"][..],
            "specified both as a flag and in the configuration file: icc: (from flag: true, from file: false)",
        ),
        (r#"{"icc": false"#, &[][..], "not valid JSON"),
    ] {
        let (good, out) = validate(&dir, json, flags);
        assert!(!good, "{json} {flags:?} was accepted");
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
        assert!(out.starts_with("Error: ") && out.contains(want), "{json}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
