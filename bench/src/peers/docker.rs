//! Real dockerd (Debian's docker.io 20.10) as a peer, with and without its userland
//! proxy: the lab's dockerd ([`netd_lab::dockerd`]), run inside the lab's host
//! namespace as shared/PEERS.md shows, with its own directories and cgroup parent, so
//! nothing of it is shared with the machine or with another run. `dockerd-netd` is the
//! same dockerd with its container on a network of netd's Docker plugin driver, so
//! Docker's own port publishing is replaced by netd's eBPF datapath.
use std::{os::unix::fs::MetadataExt, path::Path, time::Duration};

use anyhow::{anyhow, Context, Result};
use netd_lab::{
    cmd::{ip, which},
    dockerd::{build_image, Dockerd, Image},
    Lab,
};

use super::{
    fillers, flush_kernel_conntrack, published_ports, servers_script, timed, Datapath, Dp, Env,
    Memory, CTR_NET, FILLER_BASE,
};
use crate::rss::rss_of;

/// The image's name in every dockerd of the bench.
pub const IMAGE: &str = "local/netd-bench";
/// The Docker network on netd's driver (`dockerd-netd`).
const NETD_NET: &str = "netdnet";
/// The tester's path inside the image.
pub const TESTER: &str = "/bin/netd-tester";

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
        if self.dp == Dp::DockerdNetd {
            // netd first: dockerd finds the driver by its socket when the network is
            // created. The lab's name makes the plugin's name (and socket) unique.
            lab.extra_daemon_args = vec!["--docker-plugin".into(), lab.name.clone()];
            lab.start_daemon()?;
        }
        let dk = start_dockerd(lab, self.dp == Dp::Dockerd, &self.env)?;
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
        let took = timed(|| {
            dk.docker(&refs)?;
            Ok(())
        })?;
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
            dk.docker(&args)?;
            Ok(())
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
            .map(|_| dockerd_memory(&lab.host))
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
        timed(|| {
            dk.docker(&["rm", "-f", "srv"])?;
            Ok(())
        })
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

/// Starts the lab's dockerd in `lab` (with or without its userland proxy; Docker's
/// own iptables rules on) and imports the bench's image as [`IMAGE`].
pub fn start_dockerd(lab: &Lab, userland_proxy: bool, env: &Env) -> Result<Dockerd> {
    let image = build_bench_image(&env.shared, &env.tester)?;
    let proxy = format!("--userland-proxy={userland_proxy}");
    let dk = Dockerd::start(lab, &[&proxy])?;
    dk.import(&image, IMAGE)?;
    Ok(dk)
}

/// The image's tar: busybox, the tester and iperf3 with the shared libraries they
/// link. Built once per run, in `dir`.
fn build_bench_image(dir: &Path, tester: &Path) -> Result<std::path::PathBuf> {
    let iperf = which("iperf3").context("iperf3 is needed for the dockerd image")?;
    let image = Image {
        bins: &[("netd-tester", tester), ("iperf3", &iperf)],
        files: &[],
    };
    Ok(build_image(dir, &image)?)
}

/// Resident memory of the agent (dockerd, containerd and the containers' shims) and of
/// the userland proxies, in bytes: every such process in the namespace `host`.
fn dockerd_memory(host: &str) -> (u64, u64) {
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
