//! `cargo xtask bench --overlay`: container to container across two nodes, three ways,
//! in one cluster lab (netd_lab::cluster: an underlay switch, etcd, two node
//! namespaces each running a netd daemon with --cluster-store):
//!
//! - netd: an overlay network; eBPF picks the remote node and VNI from a map and
//!   tunnels through the node's metadata-mode VXLAN device.
//! - kernel-vxlan: the kernel's VXLAN bridge as Docker's overlay driver and Flannel set
//!   it up: a bridge and a VXLAN device (VNI 42) per node, a static FDB entry per remote
//!   container MAC and a permanent neighbour entry per remote container address.
//! - underlay: the two node namespaces talking over the switch directly (the floor).
//!
//! Each round measures every way in turn (interleaved): TCP_RR and TCP_CRR with the
//! tester, one-stream throughput with iperf3; the client on CPU 0, servers on CPU 1.
//! The table shows medians over the rounds.
use std::{path::Path, time::Duration};

use anyhow::{anyhow, Context, Result};
use netd_lab::{
    cluster::{Cluster, UNDERLAY_IF},
    cmd::{in_ns, ip},
    Lab,
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    dp::{P_CRR, P_IPERF, P_RR},
    measure::{iperf, reuse_time_wait, tester_load},
};

/// netd's overlay and the kernel setup's container subnet.
const NETD_SUBNET: &str = "10.63.0.0/24";
const KERNEL_NET: &str = "10.64.0";
/// The kernel setup's VXLAN port: netd's device holds 4789 in the same namespaces.
const KERNEL_VXLAN_PORT: &str = "4790";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Way {
    Netd,
    KernelVxlan,
    Underlay,
}

impl Way {
    const ALL: [Way; 3] = [Way::Netd, Way::KernelVxlan, Way::Underlay];
    fn name(self) -> &'static str {
        match self {
            Way::Netd => "netd overlay",
            Way::KernelVxlan => "kernel vxlan+fdb",
            Way::Underlay => "underlay",
        }
    }
}

/// One way's figures of one round.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Round {
    pub rr_rate: f64,
    pub rr_p50_us: f64,
    pub rr_p99_us: f64,
    pub crr_rate: f64,
    /// Connections that failed in the run (the client's ports exhausted, a timeout).
    pub crr_errors: f64,
    pub tput_gbps: f64,
}

#[derive(Debug, Serialize)]
pub struct Figures {
    pub way: Way,
    pub rounds: Vec<Round>,
}

/// Where a way's client runs and what it connects to.
struct Path2 {
    client_ns: String,
    server_ip: String,
}

fn servers(tester: &Path) -> String {
    let t = tester.display();
    format!("{t} serve-echo {P_RR} & {t} serve-crr {P_CRR} & exec iperf3 -s -p {P_IPERF}")
}

fn netd_way(c: &Cluster, tester: &Path) -> Result<Path2> {
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    n0.cli(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        NETD_SUBNET,
        "bov",
    ])?;
    wait(10, "node 1 sees the overlay", || {
        n1.cli(&["network", "inspect", "bov"]).is_ok()
    })?;
    let script = servers(tester);
    n1.cli(&[
        "run",
        "-d",
        "--network",
        "bov",
        "--name",
        "srv",
        "--",
        "taskset",
        "-c",
        "1",
        "sh",
        "-c",
        &script,
    ])?;
    // The client's record reaches node 1 through etcd; retried on an address race.
    wait(10, "the client container starts", || {
        n0.cli(&[
            "run",
            "-d",
            "--network",
            "bov",
            "--name",
            "cli",
            "--",
            "sleep",
            "1000000",
        ])
        .is_ok()
    })?;
    let v: Value = serde_json::from_str(&n1.cli(&["inspect", "srv"])?)?;
    let server_ip = v[0]["NetworkSettings"]["Networks"]["bov"]["IPAddress"]
        .as_str()
        .ok_or_else(|| anyhow!("srv has no address"))?
        .to_string();
    Ok(Path2 {
        client_ns: format!("{}cli", n0.container_prefix()),
        server_ip,
    })
}

/// The kernel's VXLAN bridge on node `i` with a container namespace `kc`, and the
/// static entries for the other node's container.
fn kernel_node(node: &mut Lab, i: usize, other: usize) -> Result<String> {
    let h = node.host.clone();
    let mac = |k: usize| format!("02:64:00:00:00:{:02x}", 2 + k);
    let addr = |k: usize| format!("{KERNEL_NET}.{}", 2 + k);
    let run = |args: &[&str]| ip(args).map(|_| ());
    run(&["-n", &h, "link", "add", "kbr", "type", "bridge"])?;
    run(&[
        "-n",
        &h,
        "link",
        "add",
        "kvx",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        KERNEL_VXLAN_PORT,
        "local",
        &Cluster::node_ip(i),
        "dev",
        UNDERLAY_IF,
        "nolearning",
    ])?;
    run(&["-n", &h, "link", "set", "kvx", "master", "kbr", "up"])?;
    run(&["-n", &h, "link", "set", "kbr", "up"])?;
    let ns = node.add_namespace("kc")?;
    run(&[
        "-n", &h, "link", "add", "kve", "mtu", "1450", "type", "veth", "peer", "name", "eth0",
        "netns", &ns,
    ])?;
    run(&["-n", &h, "link", "set", "kve", "master", "kbr", "up"])?;
    run(&[
        "-n",
        &ns,
        "link",
        "set",
        "eth0",
        "address",
        &mac(i),
        "mtu",
        "1450",
    ])?;
    run(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{}/24", addr(i)),
        "dev",
        "eth0",
    ])?;
    run(&["-n", &ns, "link", "set", "eth0", "up"])?;
    run(&["-n", &ns, "link", "set", "lo", "up"])?;
    // Flannel's and Docker's overlay's way: the remote MAC behind the remote VTEP, the
    // remote address at that MAC, both written by the agent.
    in_ns(
        &h,
        None,
        &[
            "bridge",
            "fdb",
            "append",
            &mac(other),
            "dev",
            "kvx",
            "dst",
            &Cluster::node_ip(other),
        ],
    )?;
    run(&[
        "-n",
        &ns,
        "neigh",
        "add",
        &addr(other),
        "lladdr",
        &mac(other),
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    Ok(ns)
}

fn kernel_way(c: &mut Cluster, tester: &Path) -> Result<Path2> {
    let client_ns = kernel_node(&mut c.nodes[0], 0, 1)?;
    let server_ns = kernel_node(&mut c.nodes[1], 1, 0)?;
    c.nodes[1].spawn_in(&server_ns, Some(1), &["sh", "-c", &servers(tester)])?;
    Ok(Path2 {
        client_ns,
        server_ip: format!("{KERNEL_NET}.3"),
    })
}

fn underlay_way(c: &mut Cluster, tester: &Path) -> Result<Path2> {
    let server_ns = c.nodes[1].host.clone();
    c.nodes[1].spawn_in(&server_ns, Some(1), &["sh", "-c", &servers(tester)])?;
    Ok(Path2 {
        client_ns: c.nodes[0].host.clone(),
        server_ip: Cluster::node_ip(1),
    })
}

fn wait(secs: u64, what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        if std::time::Instant::now() > deadline {
            return Err(anyhow!("timed out: {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn round(p: &Path2, tester: &Path, secs: f64) -> Result<Round> {
    let at = |port: u16| format!("{}:{port}", p.server_ip);
    let rr = tester_load(&p.client_ns, tester, "rr", &at(P_RR), secs)?;
    let crr = tester_load(&p.client_ns, tester, "crr", &at(P_CRR), secs)?;
    let tput_gbps = iperf(&p.client_ns, &p.server_ip, 1, secs)?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Round {
        rr_rate: f(&rr, "rate"),
        rr_p50_us: f(&rr, "p50_us"),
        rr_p99_us: f(&rr, "p99_us"),
        crr_rate: f(&crr, "rate"),
        crr_errors: f(&crr, "errors"),
        tput_gbps,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Every way, `rounds` times interleaved, `secs` per load run.
pub fn measure(tester: &Path, rounds: usize, secs: f64) -> Result<Vec<Figures>> {
    let mut c = Cluster::new(2, &[]);
    let paths = [
        netd_way(&c, tester).context("netd's overlay")?,
        kernel_way(&mut c, tester).context("the kernel's VXLAN bridge")?,
        underlay_way(&mut c, tester).context("the underlay")?,
    ];
    for p in &paths {
        reuse_time_wait(&p.client_ns)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut out: Vec<Figures> = Way::ALL
        .iter()
        .map(|&way| Figures {
            way,
            rounds: Vec::new(),
        })
        .collect();
    for r in 0..rounds {
        for (i, p) in paths.iter().enumerate() {
            let fig = round(p, tester, secs)
                .with_context(|| format!("{} round {}", Way::ALL[i].name(), r + 1))?;
            out[i].rounds.push(fig);
        }
    }
    Ok(out)
}

/// Medians over the rounds; conn/s also as each round's figure, so that a round that
/// measured something else than the datapath shows.
pub fn report(all: &[Figures]) -> String {
    let mut s = format!(
        "{:<22}{:>10}{:>9}{:>9}{:>10} {:<24}{:>8}{:>10}\n",
        "container->container",
        "rr/s",
        "p50 us",
        "p99 us",
        "conn/s",
        "(each round)",
        "errors",
        "Gbit/s"
    );
    for f in all {
        let m = |g: fn(&Round) -> f64| median(f.rounds.iter().map(g).collect());
        let each: Vec<String> = f
            .rounds
            .iter()
            .map(|r| format!("{:.0}", r.crr_rate))
            .collect();
        let errors: f64 = f.rounds.iter().map(|r| r.crr_errors).sum();
        s += &format!(
            "{:<22}{:>10.0}{:>9.0}{:>9.0}{:>10.0} {:<24}{:>8.0}{:>10.2}\n",
            f.way.name(),
            m(|r| r.rr_rate),
            m(|r| r.rr_p50_us),
            m(|r| r.rr_p99_us),
            m(|r| r.crr_rate),
            format!("({})", each.join(", ")),
            errors,
            m(|r| r.tput_gbps),
        );
    }
    s
}
