//! Real dockerd (Debian's docker.io 20.10) as a peer, with and without its userland
//! proxy, run inside the lab's host namespace as shared/PEERS.md shows: `ip netns exec`
//! gives it a private mount namespace, where the cgroup v1 hierarchies are mounted again,
//! and it gets its own data, exec and socket directories and its own cgroup parent, so
//! nothing of it is shared with the machine or with another run. `dockerd-netd` is the
//! same dockerd with its container on a network of netd's Docker plugin driver, so
//! Docker's own port publishing is replaced by netd's eBPF datapath.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use netd_lab::{
    cmd::{ip, run},
    Lab,
};

use super::{
    fillers, flush_kernel_conntrack, published_ports, servers_script, timed, Datapath, Dp, Env,
    Memory, CTR_NET, FILLER_BASE,
};
use crate::rss::rss_of;

/// Debian's CLI of the same version as the daemon (a newer one may be first on PATH).
fn cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// The image's name in every dockerd of the bench.
pub const IMAGE: &str = "local/netd-bench";
/// The Docker network on netd's driver (`dockerd-netd`).
const NETD_NET: &str = "netdnet";
/// The tester's path inside the image.
pub const TESTER: &str = "/bin/netd-tester";

/// Cgroup hierarchies dockerd needs (v1), and where each is mounted on the machine.
const CGROUPS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// The cgroup parent of one dockerd: it names the directories dockerd makes in each
/// hierarchy, so that the bench (or the sweep of a later run) can find and remove them.
fn cgroup_parent(prefix: &str) -> String {
    format!("{prefix}-docker")
}

/// dockerd (with or without its userland proxy) as the bench's peer.
pub struct DockerPeer {
    dp: Dp,
    env: Env,
    ctr: String,
    dockerd: Option<Dockerd>,
}

impl DockerPeer {
    pub fn new(dp: Dp, env: &Env) -> DockerPeer {
        DockerPeer {
            dp,
            env: env.clone(),
            ctr: String::new(),
            dockerd: None,
        }
    }

    fn dockerd(&self) -> Result<&Dockerd> {
        self.dockerd
            .as_ref()
            .ok_or_else(|| anyhow!("dockerd is not running"))
    }
}

impl Datapath for DockerPeer {
    fn dp(&self) -> Dp {
        self.dp
    }

    fn container_ns(&self) -> &str {
        &self.ctr
    }

    /// Starts dockerd, then `docker run -p` with the N ports as a user would write them
    /// (a range of fillers, then the service ports), the servers being the container's
    /// own command, pinned with --cpuset-cpus. Returns the time `docker run` took.
    fn publish(&mut self, lab: &mut Lab, n: usize) -> Result<Duration> {
        let image = build_image(&self.env.shared, &self.env.tester)?;
        if self.dp == Dp::DockerdNetd {
            // netd first: dockerd finds the driver by its socket when the network is
            // created. The lab's name makes the plugin's name (and socket) unique.
            lab.extra_daemon_args = vec!["--docker-plugin".into(), lab.name.clone()];
            lab.start_daemon()?;
        }
        let dk = Dockerd::start(
            &lab.host,
            &lab.dir,
            &lab.name,
            self.dp == Dp::Dockerd,
            &image,
        )?;
        let dk = self.dockerd.insert(dk);
        let mut args: Vec<String> = ["run", "-d", "--name", "srv", "--cpuset-cpus", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.dp == Dp::DockerdNetd {
            let subnet = format!("{CTR_NET}.0/24");
            dk.docker(&[
                "network", "create", "-d", &lab.name, "--subnet", &subnet, NETD_NET,
            ])?;
            args.extend(["--network".into(), NETD_NET.into()]);
        }
        let fillers = fillers(n);
        if fillers > 0 {
            let (a, b) = (FILLER_BASE + 1, FILLER_BASE + fillers);
            args.push("-p".into());
            args.push(format!("{a}-{b}:{a}-{b}"));
        }
        for (p, proto) in published_ports(0) {
            args.push("-p".into());
            args.push(format!("{p}:{p}/{proto}"));
        }
        args.extend([
            IMAGE.to_string(),
            "sh".into(),
            "-c".into(),
            servers_script(TESTER),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let took = timed(|| dk.docker(&refs).map(drop))?;
        // dockerd made the container's namespace; give it a name the lab deletes.
        let pid = dk.container_pid("srv")?;
        self.ctr = format!("{}-c", lab.name);
        ip(&["netns", "attach", &self.ctr, &pid.to_string()])?;
        lab.adopt_namespace(&self.ctr);
        Ok(took)
    }

    /// As for netd: a container with one published port (Docker has no way to add a
    /// port to a running container).
    fn one_more(&mut self, _lab: &mut Lab) -> Result<Duration> {
        let dk = self.dockerd()?;
        let took = timed(|| {
            let mut args = vec!["run", "-d", "--name", "extra", "-p", "31000:80"];
            if self.dp == Dp::DockerdNetd {
                args.extend(["--network", NETD_NET]);
            }
            args.extend([IMAGE, "sleep", "600"]);
            dk.docker(&args).map(drop)
        })?;
        dk.docker(&["rm", "-f", "extra"])?;
        Ok(took)
    }

    fn flush_conntrack(&self, lab: &Lab) {
        flush_kernel_conntrack(lab);
        if self.dp == Dp::DockerdNetd {
            let _ = lab.cli(&["conntrack", "flush"]);
        }
    }

    fn memory(&self, lab: &Lab) -> Memory {
        let (mut agent, proxies) = self
            .dockerd
            .as_ref()
            .map(|dk| dk.memory(&lab.host))
            .unwrap_or_default();
        if let Some(pid) = lab.daemon_pid() {
            agent += rss_of(Path::new(&format!("/proc/{pid}")));
        }
        Memory {
            agent,
            maps: 0,
            proxies,
        }
    }

    fn remove(&mut self, _lab: &mut Lab) -> Result<Duration> {
        let dk = self.dockerd()?;
        timed(|| dk.docker(&["rm", "-f", "srv"]).map(drop))
    }

    fn teardown(&mut self, _lab: &mut Lab) {
        if let Some(mut dk) = self.dockerd.take() {
            let _ = dk.docker(&["rm", "-f", "srv", "extra"]);
            if self.dp == Dp::DockerdNetd {
                let _ = dk.docker(&["network", "rm", NETD_NET]);
            }
            dk.stop();
        }
    }
}

/// A root file system tar with busybox (as PEERS.md), the tester and iperf3 with the
/// shared libraries they link, imported into each dockerd as [`IMAGE`]. Built once.
pub fn build_image(dir: &Path, tester: &Path) -> Result<PathBuf> {
    let tar = dir.join("image.tar");
    if tar.exists() {
        return Ok(tar);
    }
    let root = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "tmp", "www", "etc"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let busybox = which("busybox").context("busybox-static is needed for the dockerd image")?;
    std::fs::copy(&busybox, root.join("bin/busybox"))?;
    let list = run(&busybox.display().to_string(), &["--list"])?;
    for applet in list.split_whitespace().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let iperf = which("iperf3").context("iperf3 is needed for the dockerd image")?;
    std::fs::copy(tester, root.join("bin/netd-tester"))?;
    std::fs::copy(&iperf, root.join("bin/iperf3"))?;
    let ldd = run(
        "ldd",
        &[&tester.display().to_string(), &iperf.display().to_string()],
    )?;
    for lib in ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/') && w.contains(".so"))
    {
        let dst = root.join(lib.trim_start_matches('/'));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Copies what a symlink points at, under the name the loader asks for.
        std::fs::copy(lib, &dst).with_context(|| format!("copying {lib}"))?;
    }
    run(
        "tar",
        &[
            "-C",
            &root.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ],
    )?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(tar)
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

/// One dockerd in a lab's host namespace.
pub struct Dockerd {
    dir: PathBuf,
    cgroup_parent: String,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd in namespace `host` and waits until it answers; imports `image`.
    pub fn start(
        host: &str,
        dir: &Path,
        prefix: &str,
        userland_proxy: bool,
        image: &Path,
    ) -> Result<Dockerd> {
        let d = dir.join("docker");
        std::fs::create_dir_all(&d)?;
        let cgroup_parent = cgroup_parent(prefix);
        let mut script = String::from("set -e; mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup; ");
        for c in CGROUPS {
            script += &format!(
                "mkdir -p /sys/fs/cgroup/{c}; mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}; "
            );
        }
        script += "mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; ";
        script += &format!(
            "exec dockerd --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid \
             -H unix://{d}/docker.sock --storage-driver vfs --bip 172.29.0.1/24 \
             --cgroup-parent {cgroup_parent} --userland-proxy={userland_proxy}",
            d = d.display()
        );
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", host, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let mut dk = Dockerd {
            dir: d,
            cgroup_parent,
            child: Some(child),
        };
        let t0 = Instant::now();
        loop {
            if dk
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .is_ok()
            {
                break;
            }
            let exited = dk
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || t0.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(dk.dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                bail!("dockerd did not start: {}", tail.join(" | "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        dk.docker(&[
            "import",
            "-c",
            "CMD [\"/bin/sh\"]",
            &image.display().to_string(),
            IMAGE,
        ])?;
        Ok(dk)
    }

    /// The CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let sock = format!("unix://{}", self.dir.join("docker.sock").display());
        let mut full = vec!["-H", &sock];
        full.extend_from_slice(args);
        Ok(run(cli(), &full)?)
    }

    /// The main process of container `name`.
    pub fn container_pid(&self, name: &str) -> Result<u32> {
        let out = self.docker(&["inspect", "-f", "{{.State.Pid}}", name])?;
        out.trim()
            .parse()
            .with_context(|| format!("docker inspect gave pid {out:?}"))
    }

    /// Resident memory of the agent (dockerd, containerd and the containers' shims) and
    /// of the userland proxies, in bytes: every such process in the namespace `host`.
    pub fn memory(&self, host: &str) -> (u64, u64) {
        let Ok(want) = std::fs::metadata(format!("/run/netns/{host}")).map(|m| m.ino()) else {
            return (0, 0);
        };
        let (mut agent, mut proxies) = (0, 0);
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return (0, 0);
        };
        for e in rd.flatten() {
            let p = e.path();
            if std::fs::metadata(p.join("ns/net")).map(|m| m.ino()).ok() != Some(want) {
                continue;
            }
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            let rss = rss_of(&p);
            match comm.trim() {
                "docker-proxy" => proxies += rss,
                c if c == "dockerd" || c.starts_with("containerd") => agent += rss,
                _ => {}
            }
        }
        (agent, proxies)
    }

    /// Stops dockerd, then whatever of its is still running (found by its cgroups), and
    /// removes its cgroup directories and files.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_cgroups(&self.cgroup_parent);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills every process left in the cgroups named `parent` (in every hierarchy), then
/// removes those directories, deepest first. Docker leaves them behind otherwise.
pub fn remove_cgroups(parent: &str) {
    let mut dirs = Vec::new();
    find_dirs(Path::new("/sys/fs/cgroup"), parent, 0, &mut dirs);
    for d in &dirs {
        let mut all = Vec::new();
        collect(d, &mut all);
        for sub in &all {
            if let Ok(procs) = std::fs::read_to_string(sub.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
    }
    for d in &dirs {
        let mut all = Vec::new();
        collect(d, &mut all);
        // Deepest first: a cgroup directory goes only when it has no children.
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for sub in all {
            for _ in 0..20 {
                if std::fs::remove_dir(&sub).is_ok() || !sub.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Directories named `name` in the cgroup tree (a hierarchy may be mounted at a
/// sub-cgroup of the machine's, so look a few levels down).
fn find_dirs(dir: &Path, name: &str, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_str() == Some(name) {
            out.push(p);
        } else if depth < 4 {
            find_dirs(&p, name, depth + 1, out);
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect(&e.path(), out);
            }
        }
    }
}

/// Cgroup parents of dockerds of runs of `tag` whose process is gone.
pub fn stale_cgroup_parents(tag: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup/pids") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.ends_with("-docker") && netd_lab::sweep::is_stale(tag, n))
        .collect()
}
