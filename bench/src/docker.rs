//! Real dockerd (Debian's docker.io 20.10) as a peer, with and without its userland
//! proxy, run inside the lab's host namespace as shared/PEERS.md shows: `ip netns exec`
//! gives it a private mount namespace, where the cgroup v1 hierarchies are mounted again,
//! and it gets its own data, exec and socket directories and its own cgroup parent, so
//! nothing of it is shared with the machine or with another run.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

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
/// The tester's path inside the image.
pub const TESTER: &str = "/bin/netd-tester";

/// Cgroup hierarchies dockerd needs (v1), and where each is mounted on the machine.
const CGROUPS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// The cgroup parent of one dockerd: it names the directories dockerd makes in each
/// hierarchy, so that the bench (or the sweep of a later run) can find and remove them.
pub fn cgroup_parent(prefix: &str) -> String {
    format!("{prefix}-docker")
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
    let list = crate::run(&busybox.display().to_string(), &["--list"])?;
    for applet in list.split_whitespace().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let iperf = which("iperf3").context("iperf3 is needed for the dockerd image")?;
    std::fs::copy(tester, root.join("bin/netd-tester"))?;
    std::fs::copy(&iperf, root.join("bin/iperf3"))?;
    let ldd = crate::run(
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
    crate::run(
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
        crate::run(cli(), &full)
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
            let rss = crate::rss_of(&p);
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

/// Cgroup parents of bench runs whose process is gone.
pub fn stale_cgroup_parents() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup/pids") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with("ndb-") && n.ends_with("-docker"))
        .filter(|n| {
            n.trim_start_matches("ndb-")
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        })
        .collect()
}
