//! `netd daemon`: owns the kernel state and serves the API.
//!
//! Every change is committed to the store first, then applied to the kernel (see
//! `txn`); at start (and after a crash) `reconcile` makes the kernel match the store and
//! removes what this instance made that the store no longer wants (see `owned`).
//!
//! - `args`: the daemon's flags.
//! - `networks`: network create/remove/prune/connect/disconnect, the built-in networks.
//! - `containers`: run/start/stop/rm of netd's own sandboxes.
//! - `endpoints`: namespaces of container runtimes (CNI) attached through the same seam.
//! - `processes`: the processes netd runs in sandboxes, and their exits.
//! - `reconcile`: kernel := store, at start; the maps from the store.
//! - `observe`: stats and conntrack for the API.
//! - `overlay`: overlay networks through the cluster store, mirrored here.
//! - `rundir`: the namespace the daemon enters, its run directory's ownership.
mod args;
mod cleanup;
pub mod config_file;
mod containers;
mod endpoints;
pub mod events;
mod exec;
mod lifecycle;
mod networks;
mod observe;
mod orphans;
mod overlay;
mod owned;
mod processes;
mod reconcile;
mod reload;
mod replace;
mod run_plan;
mod rundir;
mod start;
pub mod stdio;
mod trace;
pub mod txn;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use log::warn;
use tokio::sync::Mutex;

pub use args::DaemonArgs;
pub use cleanup::{cleanup, Removed};
pub use endpoints::{
    parse_mac, DockerEndpoint, DockerJoin, DockerNetwork, Endpoint, EndpointKey, EndpointRequest,
    GcRequest, Route,
};
pub use exec::{ExecConfig, ExecInfo, ExecStarted};
pub use lifecycle::{ContainerExtras, WaitCondition, Waiter};
pub use observe::{Census, ConntrackRow, FlowFilter, PortStats, Stats};
pub use reload::Reloader;
pub use replace::take_over;
pub use rundir::{enter_netns, group_id};
pub use start::{check_compatible, preflight, InstanceLock};
pub use trace::{TraceItem, TraceLine, TraceReader};

use crate::{
    cluster::Cluster,
    datapath::{self, Datapath},
    dns,
    error::NetdError,
    netlink::Netlink,
    store::{State, Store},
};
use owned::Owned;

pub struct Daemon {
    args: DaemonArgs,
    inner: Mutex<Inner>,
    /// The datapath trace (outside the lock: readers come and go without it).
    trace: trace::Trace,
    /// The cluster store, with --cluster-store (its own tasks; outside the lock).
    cluster: Option<Arc<Cluster>>,
    /// Docker's event stream (outside the lock: readers never wait for operations).
    events: events::Hub,
    /// The streams of containers run with -i or -t, by container id (outside the
    /// lock: attached clients come and go without it).
    hubs: std::sync::Mutex<std::collections::HashMap<String, Arc<stdio::Hub>>>,
    /// Execs, by id (in memory, as dockerd keeps them).
    execs: exec::Execs,
}

/// Everything behind the daemon's lock: the intended state and the kernel handles.
struct Inner {
    state: State,
    store: Store,
    dp: Datapath,
    nl: Netlink,
    uplink: String,
    owned: Owned,
    /// The node's VXLAN device (with --cluster-store): kept by reconcile.
    vxlan: Option<String>,
    /// The cluster store (with --cluster-store), for overlay endpoints' records.
    cluster: Option<Arc<Cluster>>,
    /// Embedded DNS servers and the resolv.conf/hosts files, fed by `sync` after every
    /// change of containers or attachments.
    dns: dns::Service,
}

impl txn::Transactional for Inner {
    fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }
    fn commit(&mut self) -> anyhow::Result<()> {
        self.store.commit(&self.state)
    }
    fn savepoint(&mut self) -> crate::store::Savepoint {
        self.store.savepoint(&self.state)
    }
}

impl Inner {
    /// Names follow the state: the DNS table, servers and files, and the eBPF exceptions
    /// of `--link`s. Failures are logged (the network itself is already in place).
    fn sync_names(&mut self) {
        self.dns.sync(&self.state);
        // Without links, no walk over every container for their rules.
        let rules = match self.dns.any_links() {
            true => dns::links::rules(&self.state),
            false => Vec::new(),
        };
        if let Err(e) = self.dp.sync_links(&rules) {
            warn!("writing the --link exceptions: {e:#}");
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    if getrandom(&mut b).is_err() {
        // Fall back to time and pid: ids need to be unique, not secret.
        let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
        for (i, c) in seed.bytes().enumerate() {
            b[i % 32] ^= c;
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn not_found_net(name: &str) -> NetdError {
    NetdError::NotFound(format!("network {name} not found"))
}

fn not_found_container(name: &str) -> NetdError {
    NetdError::NotFound(format!("No such container: {name}"))
}

impl Daemon {
    pub fn socket_path(&self) -> PathBuf {
        self.args.run_dir.join("netd.sock")
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.args.state_dir
    }

    pub async fn instance_id(&self) -> String {
        self.inner.lock().await.state.instance_id.clone()
    }

    pub fn cluster_store(&self) -> Option<&str> {
        self.args.cluster_store.as_deref()
    }

    pub fn cluster_advertise(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.node().addr.to_string())
    }

    /// The underlay addresses of the cluster's live nodes, as the watch sees them.
    pub async fn cluster_nodes(&self) -> Vec<String> {
        match &self.cluster {
            Some(c) => {
                let peers = c.peers();
                let p = peers.read().unwrap_or_else(|e| e.into_inner());
                p.values().map(|n| n.addr.to_string()).collect()
            }
            None => Vec::new(),
        }
    }

    /// The streams of container `id` (made on first use).
    pub fn hub(&self, id: &str) -> Arc<stdio::Hub> {
        let mut h = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        h.entry(id.to_string())
            .or_insert_with(stdio::Hub::new)
            .clone()
    }

    /// Forgets container `id`'s streams and execs (it is gone).
    fn forget_streams(&self, id: &str) {
        self.hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.execs.forget_container(id);
    }

    /// A reader of the event stream: the history and the live feed.
    pub fn subscribe_events(&self) -> events::Subscription {
        self.events.subscribe()
    }

    pub fn events_listeners(&self) -> usize {
        self.events.listeners()
    }

    /// A container event with Docker's attributes (name, image, labels) and `extra`.
    fn emit_container(&self, c: &crate::model::Container, action: &str, extra: &[(&str, String)]) {
        let mut e = events::Event::new("container", action, &c.id)
            .with("name", c.name.clone())
            .with("image", "netd");
        for (k, v) in c.labels.iter() {
            e = e.with(k, v.clone());
        }
        for (k, v) in extra {
            e = e.with(k, v.clone());
        }
        self.events.emit(e);
    }

    /// A network event (Docker's attributes: the network's name and driver, and the
    /// container of a connect or disconnect).
    fn emit_network(&self, n: &crate::model::Network, action: &str, container: Option<&str>) {
        let mut e = events::Event::new("network", action, &n.id)
            .with("name", n.name.clone())
            .with("type", n.driver.clone());
        e.scope = n.scope();
        if let Some(c) = container {
            e = e.with("container", c);
        }
        self.events.emit(e);
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.args.run_dir.join("logs").join(format!("{id}.log"))
    }

    /// SIGTERM, SIGINT: the agent goes, everything it made stays. Programs, links and
    /// maps stay pinned and keep forwarding, containers and networks stay, and this
    /// node keeps its cluster lease (it ages out after `LEASE_TTL` if no agent comes
    /// back), so established flows and new connections survive a restart or an
    /// upgrade. Removing the datapath is `netd daemon --cleanup`.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.socket_path());
        Ok(())
    }
}

/// The uplink's first global or unique-local IPv6 address (the kernel lists the most
/// recently added first; `ip -6 addr` shows the same order), or None.
pub(super) async fn uplink_ipv6(
    nl: &Netlink,
    index: u32,
) -> anyhow::Result<Option<std::net::Ipv6Addr>> {
    Ok(nl
        .ipv6_addrs_of_links()
        .await?
        .into_iter()
        .find(|(i, ip)| *i == index && datapath::is_local6_candidate(ip))
        .map(|(_, ip)| ip))
}
