//! Traffic and inspection helpers of the e2e tests: the tester from the client, from a
//! container or from the lab's cgroup; servers; the daemon's JSON; the host rulesets.
//! They panic where a test would fail anyway, with the daemon's log attached.
use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{bins::tester_bin, cmd, Lab};

fn result(o: Output) -> Result<String, String> {
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

impl Lab {
    /// Runs a command inside namespace `ns`.
    pub fn exec_in(&self, ns: &str, args: &[&str]) -> Output {
        cmd::in_ns_output(ns, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The tester in the client namespace: `tcp ADDR` or `udp ADDR MSG`.
    pub fn from_client(&self, args: &[&str]) -> Result<String, String> {
        let tester = tester_bin();
        let mut full = vec![tester.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        result(self.exec_in(&self.client, &full))
    }

    /// `netd run -d` of a tester server; returns the container's IP.
    pub fn run_server(&self, name: &str, publish: &[&str], server: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name];
        for p in publish {
            args.extend_from_slice(&["-p", p]);
        }
        args.push("--");
        let tester = tester_bin();
        args.push(tester.to_str().expect("utf-8 path"));
        args.extend_from_slice(server);
        self.netd_ok(&args);
        let v = self.inspect(name);
        let ip = v["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
            .as_str()
            .expect("container IP")
            .to_string();
        let ns = format!("{}{name}", self.container_prefix());
        self.wait_listening(&ns, server);
        ip
    }

    /// Waits (up to 5 s) until the tester server `server` (serve-tcp|serve-udp PORT)
    /// listens in `ns`.
    pub fn wait_listening(&self, ns: &str, server: &[&str]) {
        let port = server.last().copied().unwrap_or("0");
        let proto = if server.first().is_some_and(|s| s.starts_with("serve-udp")) {
            "-uln"
        } else {
            "-tln"
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let o = self.exec_in(ns, &["ss", "-H", proto, "sport", "=", &format!(":{port}")]);
            if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a tester server in the client namespace (the outside world); it is
    /// killed at teardown.
    pub fn serve_in_client(&mut self, server: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.client])
            .arg(tester_bin())
            .args(server)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a server in the client namespace");
        self.adopt_background(child);
        let client = self.client.clone();
        self.wait_listening(&client, server);
    }

    /// The tester run by a process of namespace `ns` placed in the lab's cgroup, where
    /// the daemon's socket programs apply.
    pub fn from_lab_cgroup(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let cgroup = self.cgroup.as_ref().expect("a lab with a cgroup");
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec ip netns exec {ns} {} {}",
            cgroup.display(),
            tester_bin().display(),
            args.join(" ")
        );
        result(
            Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("sh"),
        )
    }

    /// The tester inside container `name` (through `netd exec`).
    pub fn from_container(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let tester = tester_bin();
        let mut full = vec!["exec", name, tester.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        result(self.netd(&full))
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.netd_ok(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v[0].clone()
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.netd_ok(&["stats", "--format", "json"])).expect("stats JSON")
    }

    /// The host namespace's iptables and nftables rulesets, which must stay empty.
    pub fn host_rulesets(&self) -> (String, String) {
        let ipt = self.exec_in(&self.host, &["iptables-save"]);
        let rules: String = String::from_utf8_lossy(&ipt.stdout)
            .lines()
            // Rules, and user-defined chains (their policy column is "-").
            .filter(|l| l.starts_with("-A") || (l.starts_with(':') && l.contains(" - ")))
            .collect::<Vec<_>>()
            .join("\n");
        let nft = self.exec_in(&self.host, &["nft", "list", "ruleset"]);
        (
            rules,
            String::from_utf8_lossy(&nft.stdout).trim().to_string(),
        )
    }

    /// Runs the stock docker CLI against this lab's daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .output()
            .expect("running docker (the CLI)")
    }
}
