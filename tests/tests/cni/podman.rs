//! A real runtime driving netd-cni: Podman 4 (Debian) with its CNI backend, everything
//! of its own under the lab's directory (storage, run root, CNI configuration, plugin
//! directory, containers.conf), run in the lab's host network namespace with nsenter
//! (not `ip netns exec`: its private mount namespace would hide the namespace Podman
//! bind-mounts under /run/netns from the daemon). The image is imported from a tar of a
//! busybox-static rootfs: no registry.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use netd_tests::{Lab, CLIENT_IP, HOST_IP};

use super::cni_bin;

const IMAGE: &str = "localhost/netd-busybox";
const PAGE: &str = "hello from a podman container on netd\n";

/// Podman with the lab's own state; removes its containers and cgroups when dropped.
struct Podman {
    host: String,
    dir: PathBuf,
    /// The cgroup parent of the containers and conmon (cgroupfs), per lab.
    cgroup_parent: String,
}

impl Podman {
    fn new(lab: &Lab, conflist: &str) -> Podman {
        let dir = lab.dir.join("podman");
        let bin = dir.join("cni-bin");
        let conf = dir.join("cni-conf");
        for d in [&bin, &conf] {
            std::fs::create_dir_all(d).expect("podman dirs");
        }
        std::os::unix::fs::symlink(cni_bin(), bin.join("netd-cni")).expect("plugin link");
        std::fs::write(conf.join("netdnet.conflist"), conflist).expect("conflist");
        // Its plugin directory is the test's own, so the plugin under test is the one
        // that runs; the machine's /etc/cni and /opt/cni/bin are never read.
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n\
                 [engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
                 # Debian's default, crun, refuses this machine kind's hybrid cgroups.\n\
                 runtime = \"runc\"\n\
                 [containers]\n# Podman's defaults exceed this machine's hard limits.\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n",
                bin.display(),
                conf.display()
            ),
        )
        .expect("containers.conf");
        let p = Podman {
            host: lab.host.clone(),
            dir,
            cgroup_parent: format!("{}-podman", lab.name),
        };
        p.import_image();
        p
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let d = |s: &str| self.dir.join(s).display().to_string();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("podman")
            .args(["--root", &d("root"), "--runroot", &d("runroot")])
            .args(["--tmpdir", &d("tmp"), "--storage-driver", "vfs"])
            .args([
                "--network-backend",
                "cni",
                "--cni-config-dir",
                &d("cni-conf"),
            ])
            .args(args)
            .env("CONTAINERS_CONF", d("containers.conf"))
            .output()
            .expect("running podman (is it installed? cargo xtask test installs it)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A rootfs of busybox-static and its applets, with a page to serve, as an image.
    fn import_image(&self) {
        let rootfs = self.dir.join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).expect("rootfs");
        std::fs::create_dir_all(rootfs.join("www")).expect("rootfs");
        std::fs::write(rootfs.join("www/index.html"), PAGE).expect("page");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static (cargo xtask test installs it)");
        std::fs::copy(busybox, bin.join("busybox")).expect("copying busybox");
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
            }
        }
        let tar = self.dir.join("image.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(st.success(), "tar of the rootfs");
        self.ok(&[
            "import",
            "-q",
            "-c",
            "CMD [\"/bin/sh\"]",
            tar.to_str().expect("utf-8"),
            IMAGE,
        ]);
    }

    fn remove_cgroups(&self) {
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in rd.flatten() {
            let parent = h.path().join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
                let _ = std::fs::remove_dir(&parent);
            }
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-a", "-f", "-t", "0"]);
        self.remove_cgroups();
    }
}

fn retry(what: &str, mut f: impl FnMut() -> Result<String, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(t) => return t,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn podman_runs_a_container_on_a_netd_network_through_netd_cni() {
    let mut lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.88.11.0/24", "cninet"]);
    // Podman 4.3 bundles libcni 1.1, which speaks CNI up to 1.0.0 (and ignores the
    // newer runtimes' `cniVersions`): docs/cni.md's conflist.
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "netdnet",
        "plugins": [{
            "type": "netd-cni",
            "network": "cninet",
            "socket": lab.socket(),
            "capabilities": {"portMappings": true, "aliases": true, "ips": true, "mac": true}
        }]
    });
    let podman = Podman::new(&lab, &conflist.to_string());
    let cgroup_parent = format!("/{}", podman.cgroup_parent);
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "netdnet",
        "--cgroup-parent",
        &cgroup_parent,
        "-p",
        "8083:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    // The container is a netd endpoint: `netd ps` shows it with its published port.
    let ps = lab.netd_ok(&["ps"]);
    assert!(ps.contains("cni-") && ps.contains("8083->80/tcp"), "{ps}");
    let ip = podman.ok(&[
        "inspect",
        "web",
        "--format",
        "{{.NetworkSettings.Networks.netdnet.IPAddress}}",
    ]);
    assert!(ip.trim().starts_with("10.88.11."), "podman's address: {ip}");

    // In from the outside through netd's eBPF DNAT.
    let url = format!("http://{HOST_IP}:8083/");
    let page = retry("the published port", || {
        let o = lab.exec_in(&lab.client, &["curl", "-s", "-m", "3", &url]);
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() {
            Ok(body)
        } else {
            Err(format!("{o:?}"))
        }
    });
    assert_eq!(page, PAGE);
    // Out through netd's masquerade: the outside sees the host's address.
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let seen = podman.ok(&["exec", "web", "nc", "-w", "3", CLIENT_IP, "7000"]);
    assert!(seen.starts_with(&format!("peer={HOST_IP}:")), "{seen}");

    // Podman's removal is a CNI DEL: the endpoint and its port go.
    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    let ps = lab.netd_ok(&["ps", "-a"]);
    assert!(!ps.contains("cni-"), "{ps}");
    let o = lab.exec_in(&lab.client, &["curl", "-s", "-m", "2", &url]);
    assert!(!o.status.success(), "the port still answers after rm");
}
