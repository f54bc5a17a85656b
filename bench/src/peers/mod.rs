//! The datapaths the bench compares, one file each, behind one trait: netd (eBPF),
//! Docker's iptables rules (nft and legacy backends), the same rules in nftables, plain
//! routing (the limit), and the real peers run by their own tools: dockerd with and
//! without its userland proxy, netavark, CNI bridge+portmap.
use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use netd_lab::{cmd::ip, Lab};

use crate::cell::Cell;

mod cni;
pub mod docker;
pub mod ip6tables;
mod iptables;
mod netavark;
mod netd;
mod nftables;
mod plain;

pub use crate::dp::*;

/// Sets up datapath `dp` in `lab` (bridges, namespaces: what comes before any
/// port is published).
pub fn open(dp: Dp, lab: &mut Lab, env: &Env) -> Result<Box<dyn Datapath>> {
    Ok(match dp {
        Dp::Netd => Box::new(netd::Netd::new(env)),
        Dp::IptablesNft | Dp::IptablesLegacy => Box::new(iptables::Iptables::new(dp, lab, env)?),
        Dp::Nftables => Box::new(nftables::Nftables::new(lab, env)?),
        Dp::Dockerd | Dp::DockerdNoProxy | Dp::DockerdNetd => {
            Box::new(docker::DockerPeer::new(dp, env))
        }
        Dp::Netavark => Box::new(netavark::Netavark::new(lab, env)?),
        Dp::Cni => Box::new(cni::Cni::new(lab, env)?),
        Dp::Plain => Box::new(plain::Plain::new(lab, env)?),
    })
}

/// What every datapath of a run shares.
#[derive(Clone, Debug)]
pub struct Env {
    pub tester: PathBuf,
    /// Files all labs of the run share (dockerd's image).
    pub shared: PathBuf,
}

/// Resident memory, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// The agent: netd, or dockerd + containerd + shims.
    pub agent: u64,
    /// netd's BPF maps (memlock).
    pub maps: u64,
    /// dockerd's userland proxies.
    pub proxies: u64,
}

/// One datapath in its lab: the steps of the bench, each written once per peer.
pub trait Datapath {
    fn dp(&self) -> Dp;

    /// Publishes N ports (N-1 fillers, then the service ports, see
    /// [`published_ports`]) and starts the servers in the container, pinned to CPU 1.
    /// Returns the time publishing took.
    fn publish(&mut self, lab: &mut Lab, n: usize) -> Result<Duration>;

    /// The container's namespace (its servers, and its masqueraded client).
    fn container_ns(&self) -> &str;

    /// Where the client sends: the published address, or the container (plain).
    fn target(&self) -> &str {
        HOST_IP
    }

    /// Time to publish one more port with N published (zero where that means nothing,
    /// see [`Dp::has_one_more`]).
    fn one_more(&mut self, lab: &mut Lab) -> Result<Duration>;

    /// Empties the connection tracking table, before connection-rate runs.
    fn flush_conntrack(&self, lab: &Lab);

    fn memory(&self, _lab: &Lab) -> Memory {
        Memory::default()
    }

    /// Figures only this datapath has, taken after the traffic rounds and the memory,
    /// before the removal.
    fn extra_figures(&mut self, _lab: &mut Lab, _cell: &mut Cell) -> Result<()> {
        Ok(())
    }

    /// Time to remove everything published (zero where nothing is, see
    /// [`Dp::publishes`]).
    fn remove(&mut self, lab: &mut Lab) -> Result<Duration>;

    /// Stops what the datapath runs that the lab's teardown does not (dockerd).
    fn teardown(&mut self, _lab: &mut Lab) {}
}

/// The ports every datapath publishes, in order: N-1 fillers, then the service ports,
/// so that a linear rule chain walks all N rules before it matches the measured ones.
pub fn published_ports(fillers: u16) -> Vec<(u16, &'static str)> {
    let mut ports: Vec<(u16, &str)> = (1..=fillers).map(|i| (FILLER_BASE + i, "tcp")).collect();
    ports.extend([
        (P_RR, "tcp"),
        (P_CRR, "tcp"),
        (P_IPERF, "tcp"),
        (P_UDP, "udp"),
    ]);
    ports
}

/// N ports are N-1 fillers and the measured ones.
pub fn fillers(n: usize) -> u16 {
    n.saturating_sub(1) as u16
}

/// The servers of the container, as one shell command (the tester at `tester`).
pub fn servers_script(tester: &str) -> String {
    let t = tester;
    format!(
        "{t} serve-echo {P_RR} & {t} serve-crr {P_CRR} & {t} serve-udp {P_UDP} & exec iperf3 -s -p {P_IPERF}"
    )
}

/// Starts the servers in `ns` on CPU 1, for the lab's lifetime.
pub fn start_servers(lab: &mut Lab, ns: &str, env: &Env) -> Result<()> {
    let servers = servers_script(&env.tester.display().to_string());
    lab.spawn_in(ns, Some(1), &["sh", "-c", &servers])?;
    Ok(())
}

/// The hand-made bridge of PEERS.md (for the rule sets and plain routing): `br0` in
/// the host namespace with CTR_NET.1, a container namespace `NAME-c` behind a veth
/// with CTR_NET.2 and its default route. Returns the container's namespace.
pub fn hand_made_bridge(lab: &mut Lab) -> Result<String> {
    let ctr = lab.add_namespace("c")?;
    let host = lab.host.clone();
    let gw = format!("{CTR_NET}.1");
    ip(&["-n", &host, "link", "add", "br0", "type", "bridge"])?;
    ip(&[
        "-n",
        &host,
        "addr",
        "add",
        &format!("{gw}/24"),
        "dev",
        "br0",
    ])?;
    ip(&["-n", &host, "link", "set", "br0", "up"])?;
    ip(&[
        "-n", &host, "link", "add", "vc1", "type", "veth", "peer", "name", "eth0", "netns", &ctr,
    ])?;
    ip(&["-n", &host, "link", "set", "vc1", "master", "br0", "up"])?;
    let addr = format!("{CTR_NET}.2/24");
    ip(&["-n", &ctr, "addr", "add", &addr, "dev", "eth0"])?;
    ip(&["-n", &ctr, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ctr, "route", "add", "default", "via", &gw])?;
    Ok(ctr)
}

/// The kernel's conntrack table of the host namespace (every datapath but netd's).
pub fn flush_kernel_conntrack(lab: &Lab) {
    let _ = netd_lab::cmd::in_ns(&lab.host, Some(0), &["conntrack", "-F"]);
}

/// Elapsed time of `f`.
pub fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let t0 = std::time::Instant::now();
    f()?;
    Ok(t0.elapsed())
}
