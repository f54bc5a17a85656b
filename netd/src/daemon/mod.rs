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
mod containers;
mod endpoints;
pub mod events;
mod networks;
mod observe;
mod overlay;
mod owned;
mod processes;
mod reconcile;
mod rundir;
mod trace;
pub mod txn;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context};
use log::{info, warn};
use tokio::sync::Mutex;

pub use args::DaemonArgs;
pub use containers::ContainerExtras;
pub use endpoints::{
    parse_mac, DockerEndpoint, DockerJoin, DockerNetwork, Endpoint, EndpointKey, EndpointRequest,
    GcRequest, Route,
};
pub use observe::{ConntrackRow, FlowFilter, PortStats, Stats};
pub use rundir::{enter_netns, group_id};
pub use trace::{TraceItem, TraceLine, TraceReader};

use crate::{
    cluster::{self, Cluster},
    datapath::{self, config_flags, Datapath, Settings, XdpMode},
    dns,
    error::NetdError,
    netlink::Netlink,
    store::{State, Store},
    sysctl,
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
}

impl Inner {
    /// Names follow the state: the DNS table, servers and files, and the eBPF exceptions
    /// of `--link`s. Failures are logged (the network itself is already in place).
    fn sync_names(&mut self) {
        self.dns.sync(&self.state);
        if let Err(e) = self.dp.sync_links(&dns::links::rules(&self.state)) {
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

    /// Finds the uplink, loads and attaches the datapath, creates the built-in
    /// networks, reconciles, and starts the conntrack collector.
    pub async fn start(args: DaemonArgs) -> anyhow::Result<Arc<Daemon>> {
        if args.veth_prefix.len() > 5 || args.bridge_prefix.len() > 5 {
            return Err(anyhow!(
                "--veth-prefix and --bridge-prefix must be at most 5 characters"
            ));
        }
        args.check()?;
        rundir::prepare_run_dir(&args)?;
        sysctl::set("net.ipv4.ip_forward", "1")?;
        let nl = Netlink::current()?;
        let uplink = match &args.uplink {
            Some(u) => nl
                .link_by_name(u)
                .await?
                .ok_or_else(|| anyhow!("uplink {u} does not exist"))?,
            None => {
                let idx = nl.default_route_oif().await?.ok_or_else(|| {
                    anyhow!("no default route in this namespace: pass --uplink IFACE")
                })?;
                nl.link_by_index(idx)
                    .await?
                    .ok_or_else(|| anyhow!("default route's interface {idx} vanished"))?
            }
        };
        let uplink_ip = nl
            .ipv4_addrs()
            .await?
            .into_iter()
            .find(|(i, _)| *i == uplink.index)
            .map(|(_, n)| n.ip())
            .ok_or_else(|| anyhow!("uplink {} has no IPv4 address", uplink.name))?;
        info!(
            "uplink {} (ifindex {}, {uplink_ip})",
            uplink.name, uplink.index
        );
        let uplink_ip6 = uplink_ipv6(&nl, uplink.index).await?;
        match uplink_ip6 {
            Some(ip6) => info!("uplink {} IPv6 {ip6}: the NAT66 source", uplink.name),
            None => warn!(
                "uplink {} has no global or unique-local IPv6 address: NAT66 cannot masquerade, IPv6 from containers of NAT66 networks stays on the host",
                uplink.name
            ),
        }

        let (store, mut state) = Store::open(&args.state_dir)?;
        let owned = Owned::new(&args.state_dir)?;
        if state.instance_id.is_empty() {
            state.instance_id = random_id();
        }
        networks::ensure_builtin(&mut state, &nl, &owned, &args).await?;
        store.commit(&state)?;

        let (lo, hi) = args.snat_port_range;
        sysctl::set("net.ipv4.ip_local_reserved_ports", &format!("{lo}-{hi}"))?;
        let mut dp = Datapath::load(&args.bpf_dir, args.ct_entries())?;
        // Virtual devices (veth, bridge, ...) have a link kind; physical NICs not.
        let native_xdp = match args.xdp_mode.as_str() {
            "native" => true,
            "auto" => uplink.kind.is_none(),
            _ => false,
        };
        let guard_in_tc = args.xdp_mode == "tc" || (args.xdp_mode == "auto" && !native_xdp);
        let mut flags = 0;
        if !args.no_fast_path {
            flags |= config_flags::FAST_PATH;
        }
        if guard_in_tc {
            flags |= config_flags::GUARD_IN_TC;
        }
        dp.configure(&Settings {
            uplink_ifindex: uplink.index,
            uplink_ip,
            flags,
            snat_ports: args.snat_port_range,
        })?;
        dp.set_uplink_ip6(uplink_ip6)?;
        dp.attach_uplink(&uplink.name, native_xdp.then_some(XdpMode::Driver))?;
        info!(
            "uplink guard: {}",
            if native_xdp {
                "XDP (native)"
            } else if guard_in_tc {
                "in uplink_ingress (TC)"
            } else {
                "off"
            }
        );
        let cgroup = match args.cgroup.as_deref() {
            Some("none") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => args::cgroup2_root(),
        };
        match cgroup {
            Some(cg) => {
                dp.attach_cgroup(&cg)?;
                info!(
                    "host access to published ports via socket programs on {}",
                    cg.display()
                );
            }
            None => warn!("no cgroup2 mount: 127.0.0.1:PORT access from the host is off"),
        }
        // After configure, which wrote the config entry whole: the switch only flips
        // its own bit in it.
        let trace = trace::Trace::start(&args.bpf_dir, args.debug_datapath)
            .context("starting the datapath trace")?;
        let gc_table = dp.conntrack_handle()?;
        info!(
            "conntrack: {} flows ({} entries)",
            gc_table.capacity() / 2,
            gc_table.capacity()
        );

        let cluster = match &args.cluster_store {
            Some(url) => Some(
                join_cluster(
                    &nl,
                    url,
                    args.cluster_advertise.as_deref(),
                    uplink_ip,
                    &state.instance_id,
                )
                .await?,
            ),
            None => None,
        };

        let vxlan = match &cluster {
            Some(_) => {
                let name = overlay::ensure_vxlan(&nl, &owned, &args.bridge_prefix).await?;
                dp.attach_vxlan(&name)?;
                Some(name)
            }
            None => None,
        };
        let cluster = cluster.map(Arc::new);

        let daemon = Arc::new(Daemon {
            inner: Mutex::new(Inner {
                state,
                store,
                dp,
                nl,
                uplink: uplink.name,
                owned,
                vxlan,
                cluster: cluster.clone(),
                dns: dns::Service::new(),
            }),
            args,
            trace,
            cluster,
            events: events::Hub::default(),
        });
        daemon.reconcile().await?;
        daemon.spawn_overlay_mirror();
        daemon.spawn_overlay_endpoints().await;
        let timeouts = datapath::Timeouts {
            udp: Duration::from_secs(daemon.args.ct_udp_timeout),
            ..Default::default()
        };
        let every = Duration::from_secs(daemon.args.ct_gc_interval.max(1));
        datapath::spawn_gc(gc_table, every, timeouts)
            .context("starting the conntrack collector")?;
        Ok(daemon)
    }

    /// SIGTERM: detach every program this agent attached. Containers, networks and the
    /// pinned maps stay, so a restarted agent picks them up.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
        let g = self.inner.lock().await;
        g.dp.detach_all()?;
        let _ = std::fs::remove_file(self.socket_path());
        Ok(())
    }
}

/// The uplink's first global or unique-local IPv6 address (the kernel lists the most
/// recently added first; `ip -6 addr` shows the same order), or None.
async fn uplink_ipv6(nl: &Netlink, index: u32) -> anyhow::Result<Option<std::net::Ipv6Addr>> {
    Ok(nl
        .ipv6_addrs_of_links()
        .await?
        .into_iter()
        .find(|(i, ip)| *i == index && datapath::is_local6_candidate(ip))
        .map(|(_, ip)| ip))
}

/// Checks the cluster flags, resolves the advertised address in this namespace and
/// starts registering; etcd itself may still be unreachable (the registration retries).
async fn join_cluster(
    nl: &Netlink,
    url: &str,
    advertise: Option<&str>,
    uplink_ip: std::net::Ipv4Addr,
    id: &str,
) -> anyhow::Result<Cluster> {
    let endpoints = cluster::parse_store(url)?;
    let addr = match advertise.map(cluster::parse_advertise).transpose()? {
        None => uplink_ip,
        Some(cluster::Advertise::Addr(ip)) => ip,
        Some(cluster::Advertise::Iface(name)) => {
            let bad = |why: &str| {
                anyhow!(cluster::ClusterError::BadAdvertise(
                    name.clone(),
                    why.into()
                ))
                .context("--cluster-advertise")
            };
            let link = nl
                .link_by_name(&name)
                .await?
                .ok_or_else(|| bad("no such interface"))?;
            nl.ipv4_addrs()
                .await?
                .into_iter()
                .find(|(i, _)| *i == link.index)
                .map(|(_, n)| n.ip())
                .ok_or_else(|| bad("the interface has no IPv4 address"))?
        }
    };
    let node = cluster::Node {
        id: id.to_string(),
        addr,
    };
    info!("cluster store {url}, advertising {addr}");
    Ok(Cluster::start(endpoints, node).await?)
}
