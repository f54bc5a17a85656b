//! The e2e tests' harness is the workspace's one lab crate (lab/, `netd-lab`); this
//! crate keeps the tests' traffic tool (src/bin/netd-tester.rs) and the tests.
pub use netd_lab::{
    cgroup::cgroup2_root, leaks::TcProgram, netd_bin, tester_bin, Lab, CLIENT_IP, CLIENT_IP6,
    HOST_IP, HOST_IP6, TEST_TAG as PREFIX,
};

/// The stdout of a command that must have succeeded (else the test fails with `what`
/// and all it printed).
pub fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `out` as JSON (else the test fails, showing it).
pub fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// What `dig` said: the status (NOERROR, NXDOMAIN, ...), the answers' data, all of it.
pub struct Dig {
    pub status: String,
    pub answers: Vec<String>,
    pub raw: String,
}

/// `dig @127.0.0.11 ARGS` from inside namespace `ns` (a container's).
pub fn dig(lab: &Lab, ns: &str, args: &[&str]) -> Dig {
    let mut full = vec!["dig", "@127.0.0.11", "+tries=1", "+time=5"];
    full.extend_from_slice(args);
    let o = lab.exec_in(ns, &full);
    let raw = String::from_utf8_lossy(&o.stdout).into_owned();
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_string();
    let answers = raw
        .split(";; ANSWER SECTION:\n")
        .nth(1)
        .map(|s| {
            s.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().last().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Dig {
        status,
        answers,
        raw,
    }
}

/// dnsmasq in the client namespace (the outside world's DNS server) on the client's
/// address, with `extra` arguments (its answers, its log); stopped at teardown.
pub fn dnsmasq_in_client(lab: &mut Lab, extra: &[String]) {
    use std::process::{Command, Stdio};
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--listen-address={CLIENT_IP}"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting dnsmasq in the client namespace");
    lab.adopt_background(child);
    let client = lab.client.clone();
    lab.wait_listening(&client, &["serve-udp", "53"]);
}

/// `curl` against the lab daemon's socket: (status, body as JSON, or as a string when
/// it is not JSON).
pub fn http(lab: &Lab, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let sock = lab.socket();
    let mut args = vec![
        "-s".to_string(),
        "--unix-socket".into(),
        sock.display().to_string(),
        "-X".into(),
        method.into(),
        "-w".into(),
        "\n%{http_code}".into(),
        format!("http://netd{path}"),
    ];
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "-d".into(),
            b.into(),
        ]);
    }
    let o = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').expect("status line");
    let v = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into()));
    (code.trim().parse().expect("status"), v)
}

/// docker-py against the lab daemon: runs `script` (Python, with `c`, a
/// docker.DockerClient on the lab's socket, and `json` imported) with Debian's
/// interpreter, where `cargo xtask test` installs python3-docker; returns its stdout.
pub fn docker_py(lab: &Lab, script: &str) -> String {
    let full = format!(
        "import docker, json\nc = docker.DockerClient(base_url='unix://{}', version='auto')\n{script}",
        lab.socket().display()
    );
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &full])
        .output()
        .expect("python3");
    ok(&o, "docker-py (needs python3-docker)")
}
