//! Several lab hosts on one underlay, with etcd as their cluster store: the overlay
//! tests' topology.
//!
//! Each node is a whole [`Lab`] (its host namespace, its own uplink and "outside world"
//! client), plus a second interface `und0` plugged into a bridge in a "switch"
//! namespace; etcd runs in a namespace of its own on the same switch. The daemons
//! advertise `und0` (`--cluster-advertise und0`), so VXLAN between nodes crosses the
//! switch while each node's outside traffic leaves by its own uplink.
use std::{
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use crate::{
    cmd::{in_ns_output, ip, spawn_in_ns},
    netns, sweep, Error, Lab, Result, TEST_TAG,
};

/// The node's interface on the underlay switch.
pub const UNDERLAY_IF: &str = "und0";
/// The underlay subnet: etcd at .2, node i at .(10 + i).
const UNDERLAY: &str = "10.198.0";
const ETCD_PORT: u16 = 2379;

pub struct Cluster {
    pub name: String,
    pub switch: String,
    pub etcd_ns: String,
    pub nodes: Vec<Lab>,
    etcd: Option<Child>,
    etcd_dir: PathBuf,
}

impl Cluster {
    /// The switch and etcd, and `n` nodes whose daemons run with
    /// `--cluster-store etcd://ETCD --cluster-advertise und0` plus `daemon_args`.
    /// Panics on failure (for tests).
    pub fn new(n: usize, daemon_args: &[&str]) -> Cluster {
        Self::create(n, daemon_args).unwrap_or_else(|e| panic!("building the cluster: {e}"))
    }

    fn create(n: usize, daemon_args: &[&str]) -> Result<Cluster> {
        sweep::sweep_once(TEST_TAG);
        let name = sweep::unique_name(TEST_TAG, None);
        let mut c = Cluster {
            switch: format!("{name}-sw"),
            etcd_ns: format!("{name}-etcd"),
            etcd_dir: std::env::temp_dir().join(format!("{name}-etcd")),
            name,
            nodes: Vec::new(),
            etcd: None,
        };
        // Whatever fails from here on is undone by Drop.
        netns::create(&c.switch)?;
        ip(&["-n", &c.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &c.switch, "link", "set", "br0", "up"])?;
        netns::create(&c.etcd_ns)?;
        let _ = std::fs::remove_dir_all(&c.etcd_dir);
        c.plug(&c.etcd_ns.clone(), "eth0", "e", &c.etcd_ip())?;
        c.start_etcd()?;
        let store = format!("etcd://{}:{ETCD_PORT}", c.etcd_ip());
        for i in 0..n {
            let mut lab = Lab::without_daemon();
            c.plug(
                &lab.host.clone(),
                UNDERLAY_IF,
                &format!("n{i}"),
                &Self::node_ip(i),
            )?;
            lab.extra_daemon_args = [
                "--cluster-store",
                &store,
                "--cluster-advertise",
                UNDERLAY_IF,
            ]
            .iter()
            .chain(daemon_args)
            .map(|s| s.to_string())
            .collect();
            c.nodes.push(lab);
            c.nodes[i].start_daemon()?;
        }
        Ok(c)
    }

    pub fn etcd_ip(&self) -> String {
        format!("{UNDERLAY}.2")
    }

    /// Node `i`'s underlay address.
    pub fn node_ip(i: usize) -> String {
        format!("{UNDERLAY}.{}", 10 + i)
    }

    /// A veth from namespace `ns` (named `ifname`, with `addr`/24) to the switch.
    fn plug(&self, ns: &str, ifname: &str, port: &str, addr: &str) -> Result<()> {
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &self.switch,
        ])?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            port,
            "master",
            "br0",
            "up",
        ])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            ifname,
        ])?;
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Stops etcd (SIGKILL: a crash, its data dir kept).
    pub fn stop_etcd(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd (again, on the same data) and waits until it is healthy.
    pub fn start_etcd(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.etcd_dir)
            .map_err(|e| Error::path("creating", &self.etcd_dir, e))?;
        let client = format!("http://{}:{ETCD_PORT}", self.etcd_ip());
        let data = self.etcd_dir.join("data");
        let data = data.to_string_lossy();
        let child = spawn_in_ns(
            &self.etcd_ns,
            None,
            &[
                "etcd",
                "--data-dir",
                &data,
                "--name",
                "e",
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                "http://127.0.0.1:23800",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:23800",
                "--initial-cluster",
                "e=http://127.0.0.1:23800",
                "--log-level",
                "warn",
            ],
        )?;
        self.etcd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.etcdctl(&["endpoint", "health"]).is_err() {
            if Instant::now() > deadline {
                return Err(Error::Daemon("etcd did not become healthy in 20s".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Runs etcdctl (v3 API) against the cluster's etcd; its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let ep = format!("--endpoints=http://{}:{ETCD_PORT}", self.etcd_ip());
        let mut full = vec!["env", "ETCDCTL_API=3", "etcdctl", &ep];
        full.extend_from_slice(args);
        let o = in_ns_output(&self.etcd_ns, &full)?;
        crate::cmd::checked(&format!("etcdctl {}", args.join(" ")), o)
    }

    /// The keys under `prefix` in etcd.
    pub fn etcd_keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", "--keys-only", prefix])
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The nodes first (their daemons leave the cluster while etcd still answers).
        self.nodes.clear();
        self.stop_etcd();
        for ns in [&self.etcd_ns, &self.switch] {
            if netns::exists(ns) {
                if let Err(e) = netns::delete(ns) {
                    eprintln!("cluster {}: {e}", self.name);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.etcd_dir);
    }
}
