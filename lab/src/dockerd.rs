//! A real dockerd (Debian's docker.io 20.10) in a lab's host namespace, as
//! ../shared/PEERS.md shows, for the e2e tests of netd's Docker plugin and the bench's
//! dockerd peers.
//!
//! `ip netns exec` gives it a private mount namespace where the cgroup v1 hierarchies
//! are mounted again; a process of its own holds that namespace, so a restarted dockerd
//! finds the sandboxes' namespace mounts of the one before (live restore needs them).
//! It gets its own data, exec and socket directories, a pidfile and a cgroup parent
//! named after the lab, and everything of it is removed when it stops: its processes
//! (found by its cgroups), the cgroup directories Docker leaves behind, its directory.
//! Images come from a local tar (`docker import`), never a registry.
use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{cmd::checked, sweep, Error, Lab, Result};

mod image;

pub use image::{build_image, Image};

/// How long a starting dockerd may take to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping dockerd may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cgroup mounts of its mount namespace may take.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// The cgroup v1 hierarchies dockerd 20.10 needs.
const CGROUPS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// Debian's CLI of the same version as the daemon (a newer one may be first on PATH).
fn cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// The cgroup parent of the dockerd of a lab called `lab_name`: it names the
/// directories dockerd makes in each hierarchy, so that its stop (or the sweep of a
/// later run) can find and remove them.
pub fn cgroup_parent(lab_name: &str) -> String {
    format!("{lab_name}-docker")
}

/// One dockerd in a lab's host namespace, stopped and cleaned up on drop.
pub struct Dockerd {
    /// LAB_DIR/docker: data, exec root, pidfile, socket and log.
    dir: PathBuf,
    host: String,
    cgroup_parent: String,
    /// dockerd's own flags after those every dockerd of the lab gets.
    args: Vec<String>,
    child: Option<Child>,
    /// The process that holds the mount namespace with the cgroup mounts.
    holder: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd in `lab`'s host namespace with its own directories under the
    /// lab's, the bridge on 172.29.0.1/24, the vfs storage driver and `args` (e.g.
    /// `--userland-proxy=false`), and waits until it answers on its socket.
    pub fn start(lab: &Lab, args: &[&str]) -> Result<Dockerd> {
        let dir = lab.dir.join("docker");
        std::fs::create_dir_all(&dir).map_err(|e| Error::path("creating", &dir, e))?;
        let mut dk = Dockerd {
            dir,
            host: lab.host.clone(),
            cgroup_parent: cgroup_parent(&lab.name),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            holder: None,
        };
        dk.spawn()?;
        Ok(dk)
    }

    /// The socket's address, as the CLI's `-H` takes it.
    pub fn host_address(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// The process that holds dockerd's mount namespace: `ip netns exec`'s private
    /// one, with the cgroup v1 hierarchies mounted again. Every dockerd of this
    /// instance enters it. Returns its pid.
    fn hold_mount_namespace(&mut self) -> Result<u32> {
        if let Some(h) = &self.holder {
            return Ok(h.id());
        }
        let ready = self.dir.join("mounts-ready");
        let mut script = String::from("set -e; mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup; ");
        for c in CGROUPS {
            script += &format!(
                "mkdir -p /sys/fs/cgroup/{c}; mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}; "
            );
        }
        script += "mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; ";
        script += &format!("touch {}; exec sleep 86400", ready.display());
        let mut holder = Command::new("ip")
            .args(["netns", "exec", &self.host, "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("starting dockerd's mount namespace holder", e))?;
        let t0 = Instant::now();
        while !ready.exists() {
            let exited = holder.try_wait().ok().flatten();
            if exited.is_some() || t0.elapsed() > MOUNT_TIMEOUT {
                let _ = holder.kill();
                let _ = holder.wait();
                return Err(Error::Dockerd(format!(
                    "did not start: the cgroup mounts in {} did not come up",
                    self.host
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = holder.id();
        self.holder = Some(holder);
        Ok(pid)
    }

    fn spawn(&mut self) -> Result<()> {
        let holder = self.hold_mount_namespace()?.to_string();
        let d = self.dir.display().to_string();
        let mut args: Vec<String> = ["-t", &holder, "-m", "-n", "dockerd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend([
            "--data-root".to_string(),
            format!("{d}/data"),
            "--exec-root".into(),
            format!("{d}/exec"),
            "--pidfile".into(),
            format!("{d}/dockerd.pid"),
            "-H".into(),
            self.host_address(),
            "--storage-driver".into(),
            "vfs".into(),
            "--bip".into(),
            "172.29.0.1/24".into(),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
        ]);
        args.extend(self.args.iter().cloned());
        let log_path = self.dir.join("dockerd.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::path("opening", &log_path, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::path("opening", &log_path, e))?;
        let child = Command::new("nsenter")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::io("starting dockerd", e))?;
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            let up = self
                .output(&["version", "--format", "{{.Server.Version}}"])
                .is_ok_and(|o| o.status.success());
            if up {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || t0.elapsed() > START_TIMEOUT {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(Error::Dockerd(format!(
                    "did not start in {}: {}",
                    self.host,
                    tail.join(" | ")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What dockerd wrote (every start of this instance, appended).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The CLI against this daemon; its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        Command::new(cli())
            .arg("-H")
            .arg(self.host_address())
            .args(args)
            .output()
            .map_err(|e| Error::io(format!("running {}", cli()), e))
    }

    /// The CLI against this daemon: its stdout, or an error with its stderr.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        checked(&format!("docker {}", args.join(" ")), self.output(args)?)
    }

    /// Imports a root file system tar (see [`build_image`]) as image `name`, with
    /// `/bin/sh` as its command.
    pub fn import(&self, tar: &Path, name: &str) -> Result<()> {
        let tar = tar.display().to_string();
        self.docker(&["import", "-c", "CMD [\"/bin/sh\"]", &tar, name])
            .map(drop)
    }

    /// The main process of container `name`.
    /// dockerd's own pid (from its pidfile), while it runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("dockerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn container_pid(&self, name: &str) -> Result<u32> {
        let out = self.docker(&["inspect", "-f", "{{.State.Pid}}", name])?;
        out.trim().parse().map_err(|_| Error::Command {
            cmd: format!("docker inspect {name}"),
            detail: format!("gave pid {out:?}"),
        })
    }

    /// Removes every container (`docker rm -f`), if dockerd is running.
    pub fn remove_containers(&self) {
        if self.child.is_none() {
            return;
        }
        let Ok(ids) = self.docker(&["ps", "-aq"]) else {
            return;
        };
        let mut args = vec!["rm", "-f"];
        args.extend(ids.split_whitespace());
        if args.len() > 2 {
            let _ = self.docker(&args);
        }
    }

    /// Stops dockerd alone (SIGTERM; with `--live-restore` its containers keep
    /// running), killing it if it takes too long.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this process started and has not
            // reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops dockerd and starts it again with the same flags, in the same mount
    /// namespace.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_daemon();
        self.spawn()
    }

    /// The cgroup directories dockerd made for itself and its containers.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        find_dirs(
            Path::new("/sys/fs/cgroup"),
            &self.cgroup_parent,
            0,
            &mut dirs,
        );
        dirs
    }

    /// Stops dockerd, then whatever of it is still running (found by its cgroups), and
    /// removes its cgroup directories and its directory.
    pub fn stop(&mut self) {
        self.stop_daemon();
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
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

/// Kills every process left in the cgroups named `parent` (in every hierarchy): only
/// processes of the dockerd that used that parent are there. Then removes those
/// directories, deepest first; Docker leaves them behind otherwise.
pub fn remove_cgroups(parent: &str) {
    let mut dirs = Vec::new();
    find_dirs(Path::new("/sys/fs/cgroup"), parent, 0, &mut dirs);
    for d in &dirs {
        let mut all = Vec::new();
        collect(d, &mut all);
        for sub in &all {
            if let Ok(procs) = std::fs::read_to_string(sub.join("cgroup.procs")) {
                for pid in procs
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: kill(2) of a process in a cgroup of this dockerd's own.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
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
            for _ in 0..40 {
                if std::fs::remove_dir(&sub).is_ok() || !sub.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
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
        .filter(|n| n.ends_with("-docker") && sweep::is_stale(tag, n))
        .collect()
}

/// Removes what dockerds of dead runs of `tag` left in the cgroup tree (their
/// containers live in cgroups of the run's name, not in its namespaces).
pub fn sweep_stale_cgroups(tag: &str) {
    for parent in stale_cgroup_parents(tag) {
        remove_cgroups(&parent);
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

/// `dir` and every directory below it.
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
