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
    netns, sweep,
    tls::TlsFiles,
    Error, Lab, Result, TEST_TAG,
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
    /// With TLS: etcd serves https:// and asks every client for a certificate.
    pub tls: Option<TlsFiles>,
}

impl Cluster {
    /// The switch and etcd, and `n` nodes whose daemons run with
    /// `--cluster-store etcd://ETCD --cluster-advertise und0` plus `daemon_args`.
    /// Panics on failure (for tests).
    pub fn new(n: usize, daemon_args: &[&str]) -> Cluster {
        Self::create(n, daemon_args, false).unwrap_or_else(|e| panic!("building the cluster: {e}"))
    }

    /// The same with etcd behind TLS with client-certificate authentication; the
    /// daemons get `--cluster-store etcds://ETCD` and the client certificate through
    /// Docker's `--cluster-store-opt kv.*` keys.
    pub fn new_tls(n: usize, daemon_args: &[&str]) -> Cluster {
        Self::create(n, daemon_args, true).unwrap_or_else(|e| panic!("building the cluster: {e}"))
    }

    fn create(n: usize, daemon_args: &[&str], tls: bool) -> Result<Cluster> {
        sweep::sweep_once(TEST_TAG);
        let name = sweep::unique_name(TEST_TAG, None);
        let mut c = Cluster {
            switch: format!("{name}-sw"),
            etcd_ns: format!("{name}-etcd"),
            etcd_dir: std::env::temp_dir().join(format!("{name}-etcd")),
            name,
            nodes: Vec::new(),
            etcd: None,
            tls: None,
        };
        // Whatever fails from here on is undone by Drop.
        netns::create(&c.switch)?;
        ip(&["-n", &c.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &c.switch, "link", "set", "br0", "up"])?;
        netns::create(&c.etcd_ns)?;
        let _ = std::fs::remove_dir_all(&c.etcd_dir);
        if tls {
            c.tls = Some(TlsFiles::create(&c.etcd_dir.join("tls"), &c.etcd_ip())?);
        }
        c.plug(&c.etcd_ns.clone(), "eth0", "e", &c.etcd_ip())?;
        c.start_etcd()?;
        for _ in 0..n {
            let store = c.store_args();
            c.add_node(&store, daemon_args)?;
        }
        Ok(c)
    }

    /// The flags that reach the store: `--cluster-store` (and with TLS the CA and the
    /// client certificate).
    pub fn store_args(&self) -> Vec<String> {
        let mut v = vec!["--cluster-store".to_string(), self.store_url()];
        if let Some(t) = &self.tls {
            for (k, p) in [
                ("kv.cacertfile", t.ca()),
                ("kv.certfile", t.client_cert()),
                ("kv.keyfile", t.client_key()),
            ] {
                v.push("--cluster-store-opt".into());
                v.push(format!("{k}={}", p.display()));
            }
        }
        v
    }

    /// etcd's URL as the daemons name it.
    pub fn store_url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}:{ETCD_PORT}", self.etcd_ip())
    }

    /// Adds a node on the switch whose daemon starts with `store_args` (see
    /// `store_args`), `--cluster-advertise und0` and `daemon_args`. The node stays in
    /// `nodes` (and is removed with the cluster) even when its daemon does not start.
    pub fn add_node(&mut self, store_args: &[String], daemon_args: &[&str]) -> Result<()> {
        let i = self.nodes.len();
        let mut lab = Lab::without_daemon();
        self.plug(
            &lab.host.clone(),
            UNDERLAY_IF,
            &format!("n{i}"),
            &Self::node_ip(i),
        )?;
        lab.extra_daemon_args = store_args
            .iter()
            .map(String::as_str)
            .chain(["--cluster-advertise", UNDERLAY_IF])
            .chain(daemon_args.iter().copied())
            .map(str::to_string)
            .collect();
        self.nodes.push(lab);
        self.nodes[i].start_daemon()
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
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{ETCD_PORT}", self.etcd_ip());
        let data = self.etcd_dir.join("data");
        let data = data.to_string_lossy();
        let tls: Vec<String> = match &self.tls {
            Some(t) => vec![
                format!("--cert-file={}", t.server_cert().display()),
                format!("--key-file={}", t.server_key().display()),
                format!("--trusted-ca-file={}", t.ca().display()),
                "--client-cert-auth".into(),
            ],
            None => Vec::new(),
        };
        let mut argv = vec!["etcd"];
        argv.extend(tls.iter().map(String::as_str));
        let child = spawn_in_ns(
            &self.etcd_ns,
            None,
            &[
                &argv[..],
                &[
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
                ][..],
            ]
            .concat(),
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
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let ep = format!("--endpoints={scheme}://{}:{ETCD_PORT}", self.etcd_ip());
        let tls: Vec<String> = match &self.tls {
            Some(t) => vec![
                format!("--cacert={}", t.ca().display()),
                format!("--cert={}", t.client_cert().display()),
                format!("--key={}", t.client_key().display()),
            ],
            None => Vec::new(),
        };
        let mut full = vec!["env", "ETCDCTL_API=3", "etcdctl", &ep];
        full.extend(tls.iter().map(String::as_str));
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
