//! A runtime that never sends CNI DEL: containerd 1.6's `ctr run -d --cni` sets up the
//! network from ctr itself and, detached, never tears it down. containerd runs in the
//! lab's host namespace with its own root, state and socket; ctr runs in a private
//! mount namespace where the lab's own conflist and plugin directory stand at the paths
//! go-cni reads (/etc/cni/net.d, /opt/cni/bin), so the machine's are never read or
//! written. The container's root is a directory of busybox-static (`--rootfs`): no
//! image, no registry.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{Lab, CLIENT_IP, HOST_IP};

use super::cni_bin;

/// containerd with the lab's own directories; stopped, its containers and cgroups
/// removed, when dropped.
struct Containerd {
    dir: PathBuf,
    /// The containerd namespace (and cgroup parent) of this lab.
    ns: String,
    daemon: Child,
}

impl Containerd {
    fn start(lab: &Lab) -> Containerd {
        let dir = lab.dir.join("containerd");
        std::fs::create_dir_all(&dir).expect("containerd dir");
        let d = |s: &str| dir.join(s).display().to_string();
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
             # The CRI plugin would read the machine's CNI configuration.\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n",
            d("root"),
            d("state"),
            d("containerd.sock"),
            d("ttrpc.sock"),
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.host))
            .args(["containerd", "--config", &d("config.toml")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting containerd (cargo xtask test installs it)");
        let c = Containerd {
            dir,
            ns: format!("{}-ctr", lab.name),
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd: {}", c.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr_cmd(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", &self.ns]);
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd().args(args).output().expect("ctr")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ctr run -d --cni` in a private mount namespace where go-cni's default paths
    /// hold the lab's conflist and plugin.
    fn run_cni(&self, conflist: &str, args: &[&str]) {
        let (conf, bin) = (self.dir.join("net.d"), self.dir.join("cni-bin"));
        for d in [&conf, &bin] {
            std::fs::create_dir_all(d).expect("cni dirs");
        }
        std::fs::write(conf.join("10-netd.conflist"), conflist).expect("conflist");
        let plugin = bin.join("netd-cni");
        if !plugin.exists() {
            std::os::unix::fs::symlink(cni_bin(), &plugin).expect("plugin link");
        }
        // unshare -m makes every mount private: nothing below leaves this process.
        // A tmpfs over /opt (the machine may have no /opt/cni), then the binds.
        let script = format!(
            "set -e; mount --bind {conf} /etc/cni/net.d; \
             mount -t tmpfs none /opt; mkdir -p /opt/cni/bin; \
             mount --bind {bin} /opt/cni/bin; \
             exec ctr --address {sock} --namespace {ns} run -d --cni \
             --fifo-dir {dir}/fifo --runc-root {dir}/runc {}",
            args.join(" "),
            dir = self.dir.display(),
            conf = conf.display(),
            bin = bin.display(),
            sock = self.dir.join("containerd.sock").display(),
            ns = self.ns,
        );
        let o = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .output()
            .expect("unshare");
        assert!(
            o.status.success(),
            "ctr run --cni: {}{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
    }

    /// Removes the cgroups made under this lab's parent in each v1 hierarchy.
    fn remove_cgroups(&self) {
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in rd.flatten() {
            let parent = h.path().join(&self.ns);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
                let _ = std::fs::remove_dir(&parent);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self.ok_list(&["task", "ls", "-q"]) {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
            let _ = self.ctr(&["task", "rm", "-f", &id]);
        }
        for id in self.ok_list(&["container", "ls", "-q"]) {
            let _ = self.ctr(&["container", "rm", &id]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        self.remove_cgroups();
        // The shims' socket directory is containerd 1.6's own, fixed; gone if empty.
        for d in ["/run/containerd/s", "/run/containerd"] {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Containerd {
    fn ok_list(&self, args: &[&str]) -> Vec<String> {
        let o = self.ctr(args);
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

/// A root of busybox-static and its applets.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static (cargo xtask test installs it)");
    std::fs::copy(busybox, bin.join("busybox")).expect("copying busybox");
    for applet in ["sh", "sleep", "nc", "httpd"] {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    root
}

#[test]
fn a_ctr_container_that_never_sends_del_is_released_within_a_minute() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.88.12.0/24", "ctrnet"]);
    let ctrd = Containerd::start(&lab);
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "netdnet",
        "plugins": [{"type": "netd-cni", "network": "ctrnet", "socket": lab.socket()}]
    });
    let root = rootfs(&ctrd.dir);
    let cgroup = format!("/{}/web", ctrd.ns);
    ctrd.run_cni(
        &conflist.to_string(),
        &[
            "--cgroup",
            &cgroup,
            // A flag: the root directory is the first argument.
            "--rootfs",
            &root.display().to_string(),
            "web",
            "/bin/sleep",
            "600",
        ],
    );
    // ctr names the container to CNI by namespace and id.
    let cid = format!("{}-web", ctrd.ns);
    let record = format!("cni-{cid}-eth0");
    let ps = lab.netd_ok(&["ps"]);
    assert!(ps.contains(&record), "{ps}");
    let links_with = lab.host_links();
    // The attachment works: out through the masquerade.
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let seen = ctrd.ok(&[
        "task",
        "exec",
        "--exec-id",
        "nc",
        "web",
        "/bin/nc",
        "-w",
        "3",
        CLIENT_IP,
        "7000",
    ]);
    assert!(seen.starts_with(&format!("peer={HOST_IP}:")), "{seen}");

    // The runtime goes without a DEL.
    ctrd.ok(&["task", "kill", "-s", "SIGKILL", "web"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctrd.ctr(&["task", "rm", "web"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "ctr task rm: {}", ctrd.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    ctrd.ok(&["container", "rm", "web"]);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    while lab.netd_ok(&["ps", "-a"]).contains(&record) {
        assert!(
            Instant::now() < deadline,
            "not released after a minute:\n{}",
            lab.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("released {} ms after ctr task rm", t0.elapsed().as_millis());
    let log = lab.daemon_log();
    assert!(
        log.contains(&format!(
            "CNI endpoint {cid} eth0: no process or mount holds its namespace"
        )),
        "{log}"
    );
    // Its host veth went with it.
    let links = lab.host_links();
    assert_eq!(links.len(), links_with.len() - 1, "{links:?}");
}
