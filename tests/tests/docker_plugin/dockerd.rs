//! A real dockerd (Debian's docker.io 20.10) in a lab's host namespace, as
//! ../shared/PEERS.md shows: `ip netns exec` gives it a private mount namespace where
//! the cgroup v1 hierarchies are mounted again (held by a process of its own, so a
//! restarted dockerd finds its sandboxes again); it gets its own data, exec and socket
//! directories and its own cgroup parent, and everything of it is removed on drop.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{tester_bin, Lab};

/// Debian's CLI of the same version as the daemon (a newer one may be first on PATH).
fn cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

pub const IMAGE: &str = "local/busybox";

const CGROUPS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

pub struct Dockerd {
    dir: PathBuf,
    host: String,
    cgroup_parent: String,
    child: Option<Child>,
    holder: Option<Child>,
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        o.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A root file system with busybox (and its applets), netd-tester with the shared
/// libraries it links, and /www/index.html; as a tar to `docker import`.
fn build_image(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "tmp", "www", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = which("busybox").expect("busybox-static");
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let list = run(&busybox.display().to_string(), &["--list"]);
    for applet in list.split_whitespace().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let tester = tester_bin();
    std::fs::copy(&tester, root.join("bin/netd-tester")).unwrap();
    for lib in run("ldd", &[&tester.display().to_string()])
        .split_whitespace()
        .filter(|w| w.starts_with('/') && w.contains(".so"))
    {
        let dst = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dst).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from docker\n").unwrap();
    let tar = dir.join("image.tar");
    run(
        "tar",
        &[
            "-C",
            &root.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ],
    );
    let _ = std::fs::remove_dir_all(&root);
    tar
}

impl Dockerd {
    /// Starts dockerd in the lab's host namespace (no iptables rules of its own, no
    /// userland proxy, live restore on) and imports the image.
    pub fn start(lab: &Lab) -> Dockerd {
        let dir = lab.dir.join("docker");
        std::fs::create_dir_all(&dir).unwrap();
        let mut dk = Dockerd {
            dir,
            host: lab.host.clone(),
            cgroup_parent: format!("{}-docker", lab.name),
            child: None,
            holder: None,
        };
        dk.spawn();
        let image = build_image(&lab.dir);
        dk.docker_ok(&[
            "import",
            "-c",
            "CMD [\"/bin/sh\"]",
            &image.display().to_string(),
            IMAGE,
        ]);
        dk
    }

    /// A process that holds dockerd's mount namespace: `ip netns exec`'s private one,
    /// with the cgroup v1 hierarchies mounted again. Every dockerd of this test enters
    /// it, so a restarted dockerd still finds the sandboxes' namespace mounts of the
    /// one before (live restore needs them).
    fn hold_mount_namespace(&mut self) -> u32 {
        if let Some(h) = &self.holder {
            return h.id();
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
        let holder = Command::new("ip")
            .args(["netns", "exec", &self.host, "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the mount namespace holder");
        let pid = holder.id();
        self.holder = Some(holder);
        let t0 = Instant::now();
        while !ready.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the cgroup mounts for dockerd did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pid
    }

    fn spawn(&mut self) {
        let holder = self.hold_mount_namespace().to_string();
        let d = self.dir.display().to_string();
        let cgroup_parent = self.cgroup_parent.clone();
        let mut args: Vec<String> = ["-t", &holder, "-m", "-n", "dockerd"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(
            [
                "--data-root".to_string(),
                format!("{d}/data"),
                "--exec-root".into(),
                format!("{d}/exec"),
                "--pidfile".into(),
                format!("{d}/dockerd.pid"),
                "-H".into(),
                format!("unix://{d}/docker.sock"),
                "--storage-driver".into(),
                "vfs".into(),
                "--bip".into(),
                "172.29.0.1/24".into(),
                "--cgroup-parent".into(),
                cgroup_parent,
            ]
            .into_iter()
            .chain(
                [
                    "--iptables=false",
                    "--ip-masq=false",
                    "--userland-proxy=false",
                    "--live-restore",
                ]
                .map(String::from),
            ),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            assert!(
                !exited && t0.elapsed() < Duration::from_secs(30),
                "dockerd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        let sock = format!("unix://{}", self.dir.join("docker.sock").display());
        Command::new(cli())
            .arg("-H")
            .arg(&sock)
            .args(args)
            .output()
            .expect("running docker")
    }

    /// Runs the CLI and fails the test if it fails; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Stops dockerd (SIGTERM; with live restore its containers keep running).
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this process started and has not
            // reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop_daemon();
        self.spawn();
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
}

impl Drop for Dockerd {
    /// Removes every container, stops dockerd, kills what is left in its cgroups and
    /// removes them and its directories.
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            if args.len() > 2 {
                let _ = self.docker(&args);
            }
        }
        self.stop_daemon();
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        remove_cgroups(&self.cgroup_dirs());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

fn subdirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                subdirs(&e.path(), out);
            }
        }
    }
}

/// Kills what is left in the cgroups (only processes of this test's dockerd are in
/// them), then removes the directories, deepest first.
fn remove_cgroups(dirs: &[PathBuf]) {
    for d in dirs {
        let mut all = Vec::new();
        subdirs(d, &mut all);
        for sub in &all {
            if let Ok(procs) = std::fs::read_to_string(sub.join("cgroup.procs")) {
                for pid in procs
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: kill(2) of a process in this test's own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
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
