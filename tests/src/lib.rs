//! End-to-end lab for netd: a "host" namespace running its own netd daemon and a
//! "client" namespace on the far end of the uplink, standing for the outside world.
//!
//! Every name carries a prefix with the test process's pid, so parallel runs never
//! collide and a later run can tell (by the pid being dead) what an earlier, crashed run
//! left behind and sweep it. Nothing is ever created in the root namespace except the
//! named namespace files themselves and the instance's bpffs directory.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    sync::Once,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};

/// Prefix of everything the test harness creates.
pub const PREFIX: &str = "ndt";
pub const HOST_IP: &str = "10.199.0.1";
pub const CLIENT_IP: &str = "10.199.0.2";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The built binaries: from the environment (xtask sets them) or next to the test binary.
fn bin(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target dir")
}

pub fn netd_bin() -> PathBuf {
    bin("netd", "NETD_BIN")
}

pub fn tester_bin() -> PathBuf {
    bin("netd-tester", "NETD_TESTER")
}

pub fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))
}

fn ok(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let o = sh(cmd, args)?;
    if !o.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    ok("ip", args)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills every process inside namespace `ns` (all of them were started by the lab).
fn kill_ns_pids(ns: &str) {
    if let Ok(o) = sh("ip", &["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            if let Ok(p) = pid.parse::<i32>() {
                // SAFETY: plain kill(2) on a pid found inside our own namespace.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
}

fn namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes what earlier runs of the harness left behind: namespaces and bpffs dirs of
/// our prefix whose creating process is dead.
pub fn sweep_stale() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            return false;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        matches!(pid, Some(p) if !pid_alive(p))
    };
    for ns in namespaces() {
        if stale(&ns) {
            kill_ns_pids(&ns);
            let _ = sh("ip", &["netns", "del", &ns]);
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_str() {
                if stale(n) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    // The resolv.conf/hosts netd writes for container namespaces (iproute2's convention).
    if let Ok(rd) = std::fs::read_dir("/etc/netns") {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(stale) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Some(root) = cgroup2_root() {
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(stale) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}

/// The first cgroup2 mount point.
pub fn cgroup2_root() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
}

pub struct Lab {
    pub name: String,
    pub host: String,
    pub client: String,
    pub dir: PathBuf,
    pub bpf_dir: PathBuf,
    /// The lab's own cgroup: the daemon's socket programs are attached here, so only
    /// processes the test puts in it get host access to published ports.
    pub cgroup: PathBuf,
    pub extra_daemon_args: Vec<String>,
    /// NETD_FAULT for the next daemon start (test-only crash points).
    pub fault: Option<String>,
    daemon: Option<Child>,
    /// Background processes the test started (servers in the client namespace).
    background: Vec<Child>,
}

impl Lab {
    /// A lab with a running daemon.
    #[expect(
        clippy::new_without_default,
        reason = "a Lab creates namespaces and starts a daemon: not a default value"
    )]
    pub fn new() -> Lab {
        Self::with_args(&[])
    }

    pub fn with_args(daemon_args: &[&str]) -> Lab {
        let mut lab = Self::without_daemon();
        lab.extra_daemon_args = daemon_args.iter().map(|s| s.to_string()).collect();
        lab.start_daemon().expect("starting netd daemon");
        lab
    }

    /// Namespaces and uplink only.
    pub fn without_daemon() -> Lab {
        SWEEP.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        let lab = Lab {
            host: format!("{name}-host"),
            client: format!("{name}-client"),
            bpf_dir: PathBuf::from("/sys/fs/bpf").join(&name),
            cgroup: cgroup2_root().expect("a cgroup2 mount").join(&name),
            name,
            dir,
            extra_daemon_args: Vec::new(),
            fault: None,
            daemon: None,
            background: Vec::new(),
        };
        lab.build_namespaces().expect("building lab namespaces");
        std::fs::create_dir_all(&lab.cgroup).expect("creating the lab's cgroup");
        lab
    }

    fn build_namespaces(&self) -> anyhow::Result<()> {
        let (h, c) = (self.host.as_str(), self.client.as_str());
        for ns in [h, c] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Both ends are created inside the lab's namespaces: nothing appears in the root one.
        ip(&[
            "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "cl0", "netns", c,
        ])?;
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            "up0",
        ])?;
        ip(&["-n", h, "link", "set", "up0", "up"])?;
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "cl0",
        ])?;
        ip(&["-n", c, "link", "set", "cl0", "up"])?;
        ip(&["-n", h, "route", "add", "default", "via", CLIENT_IP])?;
        Ok(())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/netd.sock")
    }

    pub fn container_prefix(&self) -> String {
        format!("{}-c-", self.name)
    }

    pub fn start_daemon(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        let mut cmd = Command::new(netd_bin());
        cmd.args(["daemon", "--netns", &self.host])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .arg("--bpf-dir")
            .arg(&self.bpf_dir)
            .args(["--netns-prefix", &self.container_prefix()])
            .arg("--cgroup")
            .arg(&self.cgroup)
            .args(&self.extra_daemon_args)
            .env_remove("NETD_FAULT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(f) = &self.fault {
            cmd.env("NETD_FAULT", f);
        }
        let child = cmd.spawn().context("spawning netd daemon")?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.netd(&["ps"]).status.success() {
                return Ok(());
            }
            if let Some(c) = self.daemon.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!("daemon exited with {st}: {}", self.daemon_log());
                }
            }
            if Instant::now() > deadline {
                bail!("daemon did not answer within 20s: {}", self.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// Waits for the daemon to die by itself (a fault point) and returns its status.
    pub fn wait_daemon_death(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.daemon.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Stops the daemon with `signal` and returns its exit status.
    pub fn stop_daemon(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        let mut child = self.daemon.take()?;
        // SAFETY: kill(2) on the daemon this lab started.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Runs the netd CLI against this lab's daemon.
    pub fn netd(&self, args: &[&str]) -> Output {
        Command::new(netd_bin())
            .arg("-H")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("running netd")
    }

    /// Runs the netd CLI and fails the test if it fails; returns stdout.
    pub fn netd_ok(&self, args: &[&str]) -> String {
        let o = self.netd(args);
        assert!(
            o.status.success(),
            "netd {} failed: {}\n--- daemon log ---\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs a command inside namespace `ns`.
    pub fn exec_in(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// The tester in the client namespace: `tcp ADDR` or `udp ADDR MSG`.
    pub fn from_client(&self, args: &[&str]) -> Result<String, String> {
        let tester = tester_bin();
        let mut full = vec![tester.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let o = self.exec_in(&self.client, &full);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
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

    /// Waits until the tester server `server` (serve-tcp|serve-udp PORT) listens in `ns`.
    pub fn wait_listening(&self, ns: &str, server: &[&str]) {
        let port = server.last().copied().unwrap_or("0");
        let proto = if server[0] == "serve-udp" {
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
        self.background.push(child);
        let client = self.client.clone();
        self.wait_listening(&client, server);
    }

    /// The tester run by a process of namespace `ns` placed in the lab's cgroup, where
    /// the daemon's socket programs apply.
    pub fn from_lab_cgroup(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec ip netns exec {ns} {} {}",
            self.cgroup.display(),
            tester_bin().display(),
            args.join(" ")
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    /// Keeps `child` to kill at teardown.
    pub fn adopt_background(&mut self, child: Child) {
        self.background.push(child);
    }

    /// The tester inside container `name` (through `netd exec`).
    pub fn from_container(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let tester = tester_bin();
        let mut full = vec!["exec", name, tester.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let o = self.netd(&full);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
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

    /// Links in the host namespace, by name.
    pub fn host_links(&self) -> Vec<String> {
        ip(&["-n", &self.host, "-o", "link", "show"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Container namespaces of this lab that still exist.
    pub fn container_namespaces(&self) -> Vec<String> {
        let p = self.container_prefix();
        namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&p))
            .collect()
    }

    /// Pinned endpoint links of this instance.
    pub fn endpoint_pins(&self) -> Vec<String> {
        std::fs::read_dir(self.bpf_dir.join("links"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .filter(|n| n.starts_with("ep-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        for mut c in self.background.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.daemon.is_some() {
            let ps = self.netd(&["ps", "-a", "-q"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ps.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.netd(&args);
            }
            self.stop_daemon(libc::SIGTERM);
        }
        let mut errors = Vec::new();
        for ns in self.container_namespaces() {
            kill_ns_pids(&ns);
            if let Err(e) = sh("ip", &["netns", "del", &ns]) {
                errors.push(e.to_string());
            }
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&ns));
        }
        for ns in [&self.host, &self.client] {
            kill_ns_pids(ns);
            if let Err(e) = ip(&["netns", "del", ns]) {
                errors.push(e.to_string());
            }
        }
        if self.cgroup.exists() {
            if let Err(e) = std::fs::remove_dir(&self.cgroup) {
                errors.push(format!("{}: {e}", self.cgroup.display()));
            }
        }
        if self.bpf_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.bpf_dir) {
                errors.push(format!("{}: {e}", self.bpf_dir.display()));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(errors.join("; ")))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("lab {} teardown: {e:#}", self.name);
        }
    }
}
