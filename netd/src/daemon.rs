//! `netd daemon`: owns the kernel state and serves the API.
//!
//! Every change is committed to the store first, then applied to the kernel; at start
//! (and after a crash) `reconcile` makes the kernel match the store and removes what netd
//! made that the store no longer wants.
use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context};
use ipnetwork::Ipv4Network;
use log::{info, warn};
use netd_common::{
    ct_kind, ct_tcp, Backend, Endpoint, EP_F_ICC, EP_F_INTERNAL, EP_F_MASQUERADE,
    SUBNET_F_PROTECTED,
};
use nix::sys::signal::Signal;
use tokio::sync::Mutex;

use crate::{
    datapath::Datapath,
    error::{NetdError, Result},
    ipam,
    model::{
        self, Attachment, ConnectRequest, Container, ContainerState, NetMode, Network, NetworkSpec,
        RunRequest,
    },
    netlink::Netlink,
    netns, ports, process,
    store::{State, Store},
};

#[derive(Clone, Debug, clap::Args)]
pub struct DaemonArgs {
    /// Work inside this named network namespace (/run/netns/NAME), entered before any
    /// thread starts.
    #[arg(long)]
    pub netns: Option<String>,
    /// The uplink interface (default: the interface of the default route).
    #[arg(long)]
    pub uplink: Option<String>,
    #[arg(long, default_value = "/var/lib/netd")]
    pub state_dir: PathBuf,
    /// Where the API socket and container logs live.
    #[arg(long, default_value = "/run/netd")]
    pub run_dir: PathBuf,
    /// bpffs directory for this instance's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/netd")]
    pub bpf_dir: PathBuf,
    /// Name of the default network's bridge.
    #[arg(long, default_value = "netd0")]
    pub bridge_name: String,
    /// Prefix of container namespace names under /run/netns.
    #[arg(long, default_value = "netd-")]
    pub netns_prefix: String,
    /// Prefix of the bridges of networks created without a bridge name (at most 5).
    #[arg(long, default_value = "ndbr-")]
    pub bridge_prefix: String,
    /// Inter-container communication on the default `bridge` network (--icc=false
    /// isolates its containers from each other, as Docker's daemon option does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub icc: bool,
    /// Prefix of host-side veth names (at most 5 characters).
    #[arg(long, default_value = "ndv")]
    pub veth_prefix: String,
    /// Hand every packet back to the stack instead of redirecting (for comparison).
    #[arg(long)]
    pub no_fast_path: bool,
    /// Masquerade keeps a container's own source port when no flow and no host socket
    /// uses the resulting tuple (as the kernel's MASQUERADE does); otherwise, and for
    /// ICMP echo ids and ports below 1024, it picks from this range, MIN-MAX. netd
    /// reserves the range in the host namespace (ip_local_reserved_ports), so host
    /// sockets never take these ports.
    #[arg(long, default_value = "61000-65535", value_parser = parse_port_range)]
    pub snat_port_range: (u16, u16),
    /// Seconds between conntrack garbage collections.
    #[arg(long, default_value_t = 10)]
    pub ct_gc_interval: u64,
    /// Idle timeout of one-way UDP flows, seconds.
    #[arg(long, default_value_t = 30)]
    pub ct_udp_timeout: u64,
    /// Where the uplink guard runs: native (XDP in the driver, before any skb exists),
    /// tc (in uplink_ingress), off, or auto: native on a physical uplink, tc on a
    /// virtual one (a veth in native XDP mode gives up GRO batching: 4x less
    /// throughput measured; generic XDP is not offered, it broke the TC program behind
    /// it on this kernel).
    #[arg(long, default_value = "auto", value_parser = ["auto", "native", "tc", "off"])]
    pub xdp_mode: String,
    /// cgroup v2 directory for the socket programs that give host processes access to
    /// published ports on 127.0.0.1 and host addresses (they act only on sockets of this
    /// namespace). Default: the root of the cgroup2 mount; `none` disables them.
    #[arg(long)]
    pub cgroup: Option<String>,
}

/// The first cgroup2 mount point, if any.
fn cgroup2_root() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not MIN-MAX"))?;
    let a: u16 = a.parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || b < a {
        return Err(format!(
            "{s:?} is not a port range MIN-MAX with 1 <= MIN <= MAX"
        ));
    }
    Ok((a, b))
}

pub struct Daemon {
    args: DaemonArgs,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    store: Store,
    dp: Datapath,
    nl: Netlink,
    uplink: String,
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

fn sysctl(key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("setting {key}={value}"))
}

fn not_found_net(name: &str) -> NetdError {
    NetdError::NotFound(format!("network {name} not found"))
}

fn not_found_container(name: &str) -> NetdError {
    NetdError::NotFound(format!("no such container: {name}"))
}

/// Test-only fault injection: with NETD_FAULT=<point> the daemon dies (like kill -9)
/// when it reaches that point, so tests can check what a restart makes of it.
fn fault(point: &str) {
    if std::env::var("NETD_FAULT").is_ok_and(|p| p == point) {
        warn!("NETD_FAULT={point}: aborting");
        std::process::abort();
    }
}

impl Daemon {
    pub fn socket_path(&self) -> PathBuf {
        self.args.run_dir.join("netd.sock")
    }

    pub async fn start(args: DaemonArgs) -> anyhow::Result<Arc<Daemon>> {
        if args.veth_prefix.len() > 5 || args.bridge_prefix.len() > 5 {
            return Err(anyhow!(
                "--veth-prefix and --bridge-prefix must be at most 5 characters"
            ));
        }
        std::fs::create_dir_all(&args.run_dir)
            .with_context(|| format!("creating {}", args.run_dir.display()))?;
        std::fs::create_dir_all(args.run_dir.join("logs"))?;
        sysctl("net.ipv4.ip_forward", "1")?;
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

        let (store, mut state) = Store::open(&args.state_dir)?;
        ensure_builtin_networks(&mut state, &nl, &args).await?;
        store.commit(&state)?;

        let (lo, hi) = args.snat_port_range;
        sysctl("net.ipv4.ip_local_reserved_ports", &format!("{lo}-{hi}"))?;
        let mut dp = Datapath::load(&args.bpf_dir)?;
        // Virtual devices (veth, bridge, ...) have a link kind; physical NICs not.
        let native_xdp = match args.xdp_mode.as_str() {
            "native" => true,
            "auto" => uplink.kind.is_none(),
            _ => false,
        };
        let guard_in_tc = args.xdp_mode == "tc" || (args.xdp_mode == "auto" && !native_xdp);
        let mut flags = 0;
        if !args.no_fast_path {
            flags |= netd_common::CONFIG_F_FAST_PATH;
        }
        if guard_in_tc {
            flags |= netd_common::CONFIG_F_GUARD_IN_TC;
        }
        dp.set_config_flags(uplink.index, uplink_ip, flags, args.snat_port_range)?;
        let xdp = native_xdp.then_some(aya::programs::XdpMode::Driver);
        dp.attach_uplink(&uplink.name, xdp)?;
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
            None => cgroup2_root(),
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

        let daemon = Arc::new(Daemon {
            args,
            inner: Mutex::new(Inner {
                state,
                store,
                dp,
                nl,
                uplink: uplink.name,
            }),
        });
        daemon.reconcile().await?;
        daemon.clone().spawn_conntrack_gc();
        Ok(daemon)
    }

    /// Expires idle flows, pairing each entry with its other direction.
    fn spawn_conntrack_gc(self: Arc<Self>) {
        let timeouts = crate::datapath::Timeouts {
            udp: Duration::from_secs(self.args.ct_udp_timeout),
            ..Default::default()
        };
        let every = Duration::from_secs(self.args.ct_gc_interval.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let mut g = self.inner.lock().await;
                let n =
                    g.dp.gc_conntrack(crate::datapath::monotonic_ns(), &timeouts);
                if n > 0 {
                    log::debug!("conntrack gc: {n} entries expired");
                }
            }
        });
    }

    /// Makes the kernel match the store: networks' bridges, containers' namespaces,
    /// veths and programs, every map; and removes netd-made leftovers the store does
    /// not know (after a crash between a commit and the kernel work, or before it).
    pub async fn reconcile(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        for net in inner.state.networks.clone() {
            if net.is_bridge() {
                ensure_bridge(&inner.nl, &net).await?;
            }
        }
        // Containers whose namespace is gone cannot be brought back: drop them, and the
        // ones that shared it.
        let before = inner.state.containers.len();
        let lost: HashSet<String> = inner
            .state
            .containers
            .iter()
            .filter(|c| c.netns.as_deref().is_some_and(|n| !netns::exists(n)))
            .map(|c| {
                warn!("container {} lost its namespace: dropping it", c.name);
                c.id.clone()
            })
            .collect();
        inner.state.containers.retain(|c| {
            !lost.contains(&c.id) && !matches!(&c.mode, NetMode::Container(t) if lost.contains(t))
        });
        if inner.state.containers.len() != before {
            inner.store.commit(&inner.state)?;
        }
        let mut adopt = Vec::new();
        for c in inner.state.containers.clone() {
            if c.owns_netns() {
                if let Some(ns) = &c.netns {
                    set_lo_up(ns).await?;
                }
            }
            for (i, a) in c.attachments.iter().enumerate() {
                let net = inner
                    .state
                    .network_by_id(&a.network)
                    .cloned()
                    .ok_or_else(|| anyhow!("container {} on unknown network", c.name))?;
                if inner.nl.link_by_name(&a.veth).await?.is_none() {
                    warn!(
                        "container {}: recreating its interface {}",
                        c.name, a.ifname
                    );
                    plumb(&inner.nl, &c, a, &net, i == 0).await?;
                }
                inner.dp.attach_endpoint(&a.veth)?;
            }
            if c.state == ContainerState::Running {
                match c.pid {
                    Some(pid) if process::alive(pid, c.pid_start) => {
                        adopt.push((c.id.clone(), pid, c.pid_start))
                    }
                    Some(_) => {
                        if let Some(m) = inner.state.container_mut(&c.id) {
                            m.state = ContainerState::Exited;
                            m.pid = None;
                        }
                    }
                    None => {}
                }
            }
        }
        inner.store.commit(&inner.state)?;
        sync_maps(inner).await?;
        remove_leftovers(inner, &self.args).await;
        drop(g);
        for (id, pid, start) in adopt {
            self.watch_adopted(id, pid, start);
        }
        Ok(())
    }

    // ---- networks ----

    pub async fn create_network(&self, spec: NetworkSpec) -> Result<Network> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let routes = inner.nl.route_destinations().await?;
        let links: HashSet<String> = inner
            .nl
            .links()
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect();
        let net = ipam::plan_network(
            &spec,
            &inner.state,
            &routes,
            &links,
            &self.args.bridge_prefix,
            random_id(),
            now(),
        )?;
        inner.state.next_net_id = net.net_id + 1;
        inner.state.networks.push(net.clone());
        inner.store.commit(&inner.state)?;
        fault("network-create-committed");
        if let Err(e) = ensure_bridge(&inner.nl, &net).await {
            inner.state.networks.retain(|n| n.id != net.id);
            inner.store.commit(&inner.state)?;
            if let Ok(Some(l)) = inner.nl.link_by_name(&net.bridge).await {
                let _ = inner.nl.del_link(l.index).await;
            }
            return Err(NetdError::Internal(format!(
                "creating network {}: {e:#}",
                net.name
            )));
        }
        sync_maps(inner).await?;
        info!(
            "network {} ({}) on {}",
            net.name,
            net.subnet.map(|s| s.to_string()).unwrap_or_default(),
            net.bridge
        );
        Ok(net)
    }

    pub async fn remove_network(&self, name: &str) -> Result<String> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let net = inner
            .state
            .network(name)
            .cloned()
            .ok_or_else(|| not_found_net(name))?;
        if net.builtin {
            return Err(NetdError::Conflict(format!(
                "{} is a pre-defined network and cannot be removed",
                net.name
            )));
        }
        let users: Vec<String> = inner
            .state
            .containers
            .iter()
            .filter(|c| c.attachments.iter().any(|a| a.network == net.id))
            .map(|c| c.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(NetdError::Conflict(format!(
                "error while removing network: network {} has active endpoints (containers: {})",
                net.name,
                users.join(", ")
            )));
        }
        inner.state.networks.retain(|n| n.id != net.id);
        inner.store.commit(&inner.state)?;
        fault("network-rm-committed");
        if let Some(l) = inner.nl.link_by_name(&net.bridge).await? {
            inner.nl.del_link(l.index).await?;
        }
        sync_maps(inner).await?;
        info!("removed network {}", net.name);
        Ok(net.id)
    }

    /// Removes every user network no container uses; returns their names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let unused: Vec<String> = {
            let g = self.inner.lock().await;
            g.state
                .networks
                .iter()
                .filter(|n| !n.builtin)
                .filter(|n| {
                    !g.state
                        .containers
                        .iter()
                        .any(|c| c.attachments.iter().any(|a| a.network == n.id))
                })
                .map(|n| n.name.clone())
                .collect()
        };
        let mut removed = Vec::new();
        for n in unused {
            self.remove_network(&n).await?;
            removed.push(n);
        }
        Ok(removed)
    }

    pub async fn networks(&self) -> (Vec<Network>, Vec<Container>) {
        let g = self.inner.lock().await;
        (g.state.networks.clone(), g.state.containers.clone())
    }

    pub async fn network(&self, name: &str) -> Result<(Network, Vec<Container>)> {
        let g = self.inner.lock().await;
        let net = g
            .state
            .network(name)
            .cloned()
            .ok_or_else(|| not_found_net(name))?;
        Ok((net, g.state.containers.clone()))
    }

    pub async fn connect(&self, name: &str, req: ConnectRequest) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let (net, c) = network_and_container(&inner.state, name, &req.container)?;
        if !net.is_bridge() {
            return Err(NetdError::InvalidArgument(format!(
                "container cannot be connected to the {} network: it is not a bridge network",
                net.name
            )));
        }
        if c.mode != NetMode::Bridge {
            return Err(NetdError::InvalidArgument(format!(
                "container {} uses network mode {}: it cannot be connected to other networks",
                c.name,
                model::mode_name(&c.mode, &inner.state.containers)
            )));
        }
        if c.attachments.iter().any(|a| a.network == net.id) {
            return Err(NetdError::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                c.name, net.name
            )));
        }
        let ip = ipam::allocate(&inner.state, &net, req.ip)?;
        let n = (0..)
            .find(|i| !c.attachments.iter().any(|a| a.ifname == format!("eth{i}")))
            .unwrap_or(0);
        let att = Attachment {
            network: net.id.clone(),
            ifname: format!("eth{n}"),
            ip,
            mac: model::mac_for_ip(ip),
            veth: veth_name(&self.args.veth_prefix, &c.id, n),
            aliases: req.aliases.clone(),
        };
        if let Some(m) = inner.state.container_mut(&c.id) {
            m.attachments.push(att.clone());
        }
        inner.store.commit(&inner.state)?;
        let first = c.attachments.is_empty();
        let made = async {
            plumb(&inner.nl, &c, &att, &net, first).await?;
            inner.dp.attach_endpoint(&att.veth)?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = made {
            teardown_attachment(inner, &c, &att).await;
            if let Some(m) = inner.state.container_mut(&c.id) {
                m.attachments.retain(|a| a.network != net.id);
            }
            inner.store.commit(&inner.state)?;
            return Err(NetdError::Internal(format!(
                "connecting {} to {}: {e:#}",
                c.name, net.name
            )));
        }
        sync_maps(inner).await?;
        info!(
            "connected {} to {} as {} ({ip})",
            c.name, net.name, att.ifname
        );
        Ok(())
    }

    pub async fn disconnect(&self, name: &str, container: &str) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let (net, c) = network_and_container(&inner.state, name, container)?;
        let Some(att) = c.attachments.iter().find(|a| a.network == net.id).cloned() else {
            return Err(NetdError::NotFound(format!(
                "container {} is not connected to network {}",
                c.name, net.name
            )));
        };
        if let Some(m) = inner.state.container_mut(&c.id) {
            m.attachments.retain(|a| a.network != net.id);
        }
        inner.store.commit(&inner.state)?;
        teardown_attachment(inner, &c, &att).await;
        sync_maps(inner).await?;
        info!("disconnected {} from {}", c.name, net.name);
        Ok(())
    }

    // ---- containers ----

    pub async fn run(self: &Arc<Self>, mut req: RunRequest) -> Result<Container> {
        let mut g = self.inner.lock().await;
        let mut phases = Phases::start();
        let inner = &mut *g;
        let name = match &req.name {
            Some(n) => {
                model::validate_name(n)?;
                n.clone()
            }
            None => format!("netd_{}", &random_id()[..8]),
        };
        if inner.state.containers.iter().any(|c| c.name == name) {
            return Err(NetdError::Conflict(format!(
                "container name {name:?} is already in use: remove it or pick another name"
            )));
        }
        let (mode, net) = resolve_mode(&inner.state, req.network.as_deref().unwrap_or("bridge"))?;
        if mode != NetMode::Bridge {
            if !req.ports.is_empty() {
                return Err(NetdError::InvalidArgument(format!(
                    "port publishing needs a bridge network, not network mode {}",
                    model::mode_name(&mode, &inner.state.containers)
                )));
            }
            if req.ip.is_some() || !req.aliases.is_empty() {
                return Err(NetdError::InvalidArgument(format!(
                    "--ip and --alias need a bridge network, not network mode {}",
                    model::mode_name(&mode, &inner.state.containers)
                )));
            }
        }
        if let Some(net) = &net {
            for m in req.ports.iter_mut() {
                if m.host_ip.is_unspecified() {
                    m.host_ip = net.host_binding_ipv4;
                }
            }
        }
        let host_sockets = ports::host_sockets();
        for (i, m) in req.ports.iter().enumerate() {
            if m.host_port == 0 {
                continue;
            }
            if let Some(b) = host_sockets.listening(m) {
                return Err(NetdError::Conflict(format!(
                    "host port {}:{}/{} is in use by a process in the host namespace (bound to {b})",
                    m.host_ip, m.host_port, m.proto
                )));
            }
            if req.ports[..i].iter().any(|o| o.collides_with(m)) {
                return Err(NetdError::InvalidArgument(format!(
                    "host port {}/{} is published twice in this request",
                    m.host_port, m.proto
                )));
            }
            for c in &inner.state.containers {
                if let Some(o) = c.ports.iter().find(|o| o.collides_with(m)) {
                    return Err(NetdError::Conflict(format!(
                        "host port {}:{}/{} is already published by container {} ({})",
                        o.host_ip, o.host_port, o.proto, c.name, o
                    )));
                }
            }
        }
        ports::assign_random(
            &mut req.ports,
            &inner.state,
            &host_sockets,
            self.args.snat_port_range,
        )?;
        let id = random_id();
        let attachments = match &net {
            Some(net) => {
                let ip = ipam::allocate(&inner.state, net, req.ip)?;
                vec![Attachment {
                    network: net.id.clone(),
                    ifname: "eth0".into(),
                    ip,
                    mac: model::mac_for_ip(ip),
                    veth: veth_name(&self.args.veth_prefix, &id, 0),
                    aliases: req.aliases.clone(),
                }]
            }
            None => Vec::new(),
        };
        let netns = match &mode {
            NetMode::Bridge | NetMode::None => Some(format!("{}{}", self.args.netns_prefix, name)),
            NetMode::Host => None,
            NetMode::Container(t) => inner
                .state
                .containers
                .iter()
                .find(|c| &c.id == t)
                .and_then(|c| c.netns.clone()),
        };
        if matches!(mode, NetMode::Bridge | NetMode::None) {
            if let Some(ns) = &netns {
                if netns::exists(ns) {
                    return Err(NetdError::Conflict(format!(
                        "network namespace {ns} already exists (not made by this netd?): remove it first"
                    )));
                }
            }
        }
        let c = Container {
            id,
            name: name.clone(),
            hostname: req.hostname.clone(),
            mode,
            netns,
            attachments,
            ports: req.ports.clone(),
            cmd: req.cmd.clone(),
            state: ContainerState::Created,
            pid: None,
            pid_start: None,
            exit_code: None,
            auto_remove: req.auto_remove,
            created: now(),
        };
        // Where the time of a `run` goes, logged at the end: publishing ports is one map
        // update each, and the rest is the sandbox (namespace, veth, program, process).
        phases.mark("checks");
        // Commit first: a crash from here on is cleaned up or completed by reconcile.
        inner.state.containers.push(c.clone());
        inner.store.commit(&inner.state)?;
        phases.mark("store");
        fault("run-committed");

        let made = async {
            if c.owns_netns() {
                if let Some(ns) = &c.netns {
                    netns::create(ns)?;
                    set_lo_up(ns).await?;
                }
            }
            phases.mark("netns");
            fault("run-netns-created");
            for (i, a) in c.attachments.iter().enumerate() {
                let net = inner
                    .state
                    .network_by_id(&a.network)
                    .cloned()
                    .ok_or_else(|| anyhow!("network vanished"))?;
                plumb(&inner.nl, &c, a, &net, i == 0).await?;
                phases.mark("veth");
                inner.dp.attach_endpoint(&a.veth)?;
                phases.mark("program");
            }
            let n = install_container(inner, &c).await?;
            phases.mark(&format!("ports/{n}"));
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = made {
            teardown(inner, &c).await;
            inner.state.containers.retain(|x| x.id != c.id);
            inner.store.commit(&inner.state)?;
            return Err(NetdError::Internal(format!(
                "creating container {name}: {e:#}"
            )));
        }
        let mut c = c;
        if req.start {
            if let Err(e) = self.start_process(inner, &mut c) {
                teardown(inner, &c).await;
                inner.state.containers.retain(|x| x.id != c.id);
                inner.store.commit(&inner.state)?;
                return Err(e);
            }
        }
        phases.mark("process");
        if let Some(m) = inner.state.container_mut(&c.id) {
            *m = c.clone();
        }
        inner.store.commit(&inner.state)?;
        phases.mark("store");
        info!(
            "container {} ({}) {}: created in {}",
            c.name,
            &c.id[..12],
            c.attachments
                .iter()
                .map(|a| a.ip.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            phases
        );
        Ok(c)
    }

    /// Starts the container's command (or, with none, marks the sandbox running).
    fn start_process(self: &Arc<Self>, _inner: &mut Inner, c: &mut Container) -> Result<()> {
        if c.cmd.is_empty() {
            c.state = ContainerState::Running;
            return Ok(());
        }
        let log = self.log_path(&c.id);
        match process::spawn_in_netns(c.netns.as_deref(), c.hostname.as_deref(), &c.cmd, &log) {
            Ok((pid, child)) => {
                c.pid = Some(pid);
                c.pid_start = process::start_time(pid);
                c.state = ContainerState::Running;
                c.exit_code = None;
                self.watch_child(c.id.clone(), child);
                Ok(())
            }
            Err(e) => Err(NetdError::InvalidArgument(format!(
                "starting {:?} in container {}: {e:#}",
                c.cmd.join(" "),
                c.name
            ))),
        }
    }

    pub async fn start_container(self: &Arc<Self>, name: &str) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let mut c = inner
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        if c.state == ContainerState::Running {
            return Ok(());
        }
        self.start_process(inner, &mut c)?;
        if let Some(m) = inner.state.container_mut(&c.id) {
            *m = c;
        }
        inner.store.commit(&inner.state)?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `timeout`, as `docker stop -t` does.
    pub async fn stop_container(&self, name: &str, timeout: Duration) -> Result<()> {
        let (id, pid, start) = {
            let g = self.inner.lock().await;
            let c = g
                .state
                .container(name)
                .ok_or_else(|| not_found_container(name))?;
            (c.id.clone(), c.pid, c.pid_start)
        };
        if let Some(pid) = pid {
            process::kill(pid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + timeout;
            while process::alive(pid, start) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if process::alive(pid, start) {
                process::kill(pid, Signal::SIGKILL);
            }
        }
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        if let Some(c) = inner.state.container_mut(&id) {
            if c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.pid = None;
            }
        }
        inner.store.commit(&inner.state)?;
        Ok(())
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.args.run_dir.join("logs").join(format!("{id}.log"))
    }

    fn watch_child(self: &Arc<Self>, id: String, mut child: tokio::process::Child) {
        let me = self.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(s) => s.code().unwrap_or(
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0),
                ),
                Err(_) => -1,
            };
            me.mark_exited(&id, code).await;
        });
    }

    /// A process started by an earlier agent is not our child: poll it.
    fn watch_adopted(self: &Arc<Self>, id: String, pid: u32, start: Option<u64>) {
        let me = self.clone();
        tokio::spawn(async move {
            while process::alive(pid, start) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            me.mark_exited(&id, -1).await;
        });
    }

    async fn mark_exited(self: &Arc<Self>, id: &str, code: i32) {
        let auto_remove = {
            let mut g = self.inner.lock().await;
            let inner = &mut *g;
            let Some(c) = inner.state.container_mut(id) else {
                return;
            };
            if c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.exit_code = Some(code);
                c.pid = None;
            }
            let auto = c.auto_remove;
            if let Err(e) = inner.store.commit(&inner.state) {
                warn!("recording exit of {id}: {e:#}");
            }
            auto
        };
        if auto_remove {
            if let Err(e) = self.remove(id, true).await {
                warn!("--rm of {id}: {e}");
            }
        }
    }

    pub async fn remove(&self, name: &str, force: bool) -> Result<String> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let c = inner
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        let running = c.pid.is_some_and(|p| process::alive(p, c.pid_start));
        if running && !force {
            return Err(NetdError::Conflict(format!(
                "container {} is running: stop it first or use rm -f",
                c.name
            )));
        }
        if let Some(user) = inner
            .state
            .containers
            .iter()
            .find(|o| o.mode == NetMode::Container(c.id.clone()))
        {
            return Err(NetdError::Conflict(format!(
                "container {} shares the network namespace of {} (--network container:{}): remove it first",
                user.name, c.name, c.name
            )));
        }
        inner.state.containers.retain(|x| x.id != c.id);
        inner.store.commit(&inner.state)?;
        fault("rm-committed");
        // Teardown removes the container's own ports and endpoints; nothing else in the
        // maps depends on it, so there is no full resync (which would cost O(all ports)).
        teardown(inner, &c).await;
        let _ = std::fs::remove_file(self.log_path(&c.id));
        info!("removed container {}", c.name);
        Ok(c.id)
    }

    pub async fn containers(&self) -> (Vec<Container>, Vec<Network>) {
        let g = self.inner.lock().await;
        (g.state.containers.clone(), g.state.networks.clone())
    }

    pub async fn container(&self, name: &str) -> Result<(Container, Vec<Network>, Vec<Container>)> {
        let g = self.inner.lock().await;
        let c = g
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        Ok((c, g.state.networks.clone(), g.state.containers.clone()))
    }

    pub async fn stats(&self) -> serde_json::Value {
        let g = self.inner.lock().await;
        let counters: serde_json::Map<String, serde_json::Value> =
            g.dp.stats()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
        let ports: Vec<serde_json::Value> = g
            .state
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().map(move |m| (c, m)))
            .map(|(c, m)| {
                let pc = g.dp.port_counters(m);
                serde_json::json!({"container": c.name, "mapping": m.to_string(),
                    "packets": pc.packets, "bytes": pc.bytes})
            })
            .collect();
        serde_json::json!({
            "uplink": g.uplink,
            "counters": counters,
            "ports": ports,
            "port_map_entries": g.dp.port_keys().len(),
            "endpoint_entries": g.dp.endpoint_ips().len(),
            "conntrack_entries": g.dp.conntrack().len(),
        })
    }

    pub async fn conntrack(&self) -> serde_json::Value {
        let g = self.inner.lock().await;
        let now = crate::datapath::monotonic_ns();
        let ep =
            |a: u32, p: u16| format!("{}:{}", Ipv4Addr::from(u32::from_be(a)), u16::from_be(p));
        let rows: Vec<serde_json::Value> = g
            .dp
            .conntrack()
            .into_iter()
            .map(|(k, v)| {
                let mut state = Vec::new();
                for (bit, name) in [
                    (ct_tcp::SYN, "syn"),
                    (ct_tcp::SYN_ACK, "syn-ack"),
                    (ct_tcp::ESTABLISHED, "established"),
                    (ct_tcp::FIN, "fin"),
                    (ct_tcp::RST, "rst"),
                ] {
                    if v.tcp_flags & bit != 0 {
                        state.push(name);
                    }
                }
                serde_json::json!({
                    "proto": match k.proto { 6 => "tcp", 17 => "udp", 1 => "icmp", _ => "other" },
                    "src": ep(k.saddr, k.sport),
                    "dst": ep(k.daddr, k.dport),
                    "kind": match v.kind {
                        ct_kind::DNAT => "dnat", ct_kind::DNAT_REPLY => "dnat-reply",
                        ct_kind::SNAT => "snat", ct_kind::SNAT_REPLY => "snat-reply", _ => "other" },
                    "to_src": ep(v.saddr, v.sport),
                    "to_dst": ep(v.daddr, v.dport),
                    "tcp": state.join(","),
                    "packets": v.packets,
                    "bytes": v.bytes,
                    "idle_s": now.saturating_sub(v.last_seen_ns) / 1_000_000_000,
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    /// Removes flows, all or those of one protocol; returns how many entries went.
    pub async fn flush_conntrack(&self, proto: Option<u8>) -> usize {
        let mut g = self.inner.lock().await;
        g.dp.flush_conntrack(|k, _| proto.is_none_or(|p| p == k.proto))
    }

    /// SIGTERM: detach every program this agent attached. Containers, networks and the
    /// pinned maps stay, so a restarted agent picks them up.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let g = self.inner.lock().await;
        g.dp.detach_all()?;
        let _ = std::fs::remove_file(self.socket_path());
        Ok(())
    }
}

/// The network and the container a connect/disconnect names, or the error naming
/// whichever does not exist.
fn network_and_container(
    state: &State,
    net: &str,
    container: &str,
) -> Result<(Network, Container)> {
    let n = state
        .network(net)
        .cloned()
        .ok_or_else(|| not_found_net(net))?;
    let c = state
        .container(container)
        .cloned()
        .ok_or_else(|| not_found_container(container))?;
    Ok((n, c))
}

/// The default `bridge` network and the built-in `host` and `none`, as in Docker.
async fn ensure_builtin_networks(
    state: &mut State,
    nl: &Netlink,
    args: &DaemonArgs,
) -> anyhow::Result<()> {
    if state.network("bridge").is_none() {
        let mut avoid = nl.route_destinations().await?;
        avoid.extend(state.networks.iter().filter_map(|n| n.subnet));
        let subnet = model::pick_subnet(&avoid)
            .ok_or_else(|| anyhow!("no free subnet for the default network"))?;
        let gateway = subnet
            .nth(1)
            .ok_or_else(|| anyhow!("subnet {subnet} too small"))?;
        let net_id = state.next_net_id.max(1);
        state.next_net_id = net_id + 1;
        state.networks.push(Network {
            id: random_id(),
            name: "bridge".into(),
            driver: model::DRIVER_BRIDGE.into(),
            net_id,
            bridge: args.bridge_name.clone(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range: None,
            aux_addresses: BTreeMap::new(),
            user_subnet: false,
            internal: false,
            icc: args.icc,
            masquerade: true,
            host_binding_ipv4: Ipv4Addr::UNSPECIFIED,
            mtu: None,
            labels: BTreeMap::new(),
            options: [(model::OPT_BRIDGE_NAME.to_string(), args.bridge_name.clone())].into(),
            builtin: true,
            created: now(),
        });
        info!("default network bridge: {subnet} via {gateway}");
    }
    // The daemon's --icc governs the default network, on every start.
    for n in state
        .networks
        .iter_mut()
        .filter(|n| n.name == "bridge" && n.builtin)
    {
        n.icc = args.icc;
        n.options
            .insert(model::OPT_ICC.into(), args.icc.to_string());
    }
    for (name, driver) in [("host", model::DRIVER_HOST), ("none", model::DRIVER_NULL)] {
        if state.network(name).is_none() {
            state.networks.push(Network {
                id: random_id(),
                name: name.into(),
                driver: driver.into(),
                net_id: 0,
                bridge: String::new(),
                subnet: None,
                gateway: None,
                ip_range: None,
                aux_addresses: BTreeMap::new(),
                user_subnet: false,
                internal: false,
                icc: true,
                masquerade: false,
                host_binding_ipv4: Ipv4Addr::UNSPECIFIED,
                mtu: None,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
                builtin: true,
                created: now(),
            });
        }
    }
    Ok(())
}

/// `--network VALUE` as a mode and, for bridge mode, the network.
fn resolve_mode(state: &State, value: &str) -> Result<(NetMode, Option<Network>)> {
    if let Some(target) = value.strip_prefix("container:") {
        let t = state
            .container(target)
            .ok_or_else(|| not_found_container(target))?;
        if t.netns.is_none() || t.mode == NetMode::Host {
            return Err(NetdError::InvalidArgument(format!(
                "container {} has no network namespace of its own to join",
                t.name
            )));
        }
        let id = match &t.mode {
            // Joining a joiner joins the namespace's owner.
            NetMode::Container(owner) => owner.clone(),
            _ => t.id.clone(),
        };
        return Ok((NetMode::Container(id), None));
    }
    let net = state
        .network(value)
        .cloned()
        .ok_or_else(|| not_found_net(value))?;
    Ok(match net.driver.as_str() {
        model::DRIVER_HOST => (NetMode::Host, None),
        model::DRIVER_NULL => (NetMode::None, None),
        _ => (NetMode::Bridge, Some(net)),
    })
}

/// Host-side veth name of interface `n` of container `id` (at most 15 characters).
/// Wall-clock time of the steps of one operation, for the log.
struct Phases {
    start: Instant,
    last: Instant,
    steps: Vec<(String, Duration)>,
}

impl Phases {
    fn start() -> Phases {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn mark(&mut self, step: &str) {
        let now = Instant::now();
        self.steps.push((step.to_string(), now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} us (", (self.last - self.start).as_micros())?;
        for (i, (step, d)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{step} {} us", d.as_micros())?;
        }
        write!(f, ")")
    }
}

fn veth_name(prefix: &str, id: &str, n: usize) -> String {
    let keep = 15 - prefix.len() - 2;
    format!("{prefix}{}{:02}", &id[..keep], n % 100)
}

/// Loopback up and IPv6 off in a container namespace: netd's isolation is IPv4, and
/// link-local IPv6 between containers would otherwise get around it.
async fn set_lo_up(ns: &str) -> anyhow::Result<()> {
    netns::run_in(ns, || {
        for key in ["all", "default", "lo"] {
            let p = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
            // /proc/sys/net is the writing thread's namespace: this one's.
            if std::path::Path::new(&p).exists() {
                std::fs::write(&p, "1").with_context(|| format!("writing {p}"))?;
            }
        }
        Ok(())
    })?;
    let inside = Netlink::in_netns(ns)?;
    if let Some(lo) = inside.link_by_name("lo").await? {
        inside.set_up(lo.index).await?;
    }
    Ok(())
}

/// Rewrites the port, endpoint, local-address and subnet maps from the store.
/// One container's map entries: its published ports (leading to its first attachment,
/// as in Docker) and an endpoint per attachment whose veth exists.
type PortEntries = Vec<(model::PortMapping, Backend)>;
type EndpointEntries = Vec<(Ipv4Addr, Endpoint)>;

async fn container_entries(
    inner: &Inner,
    c: &Container,
) -> anyhow::Result<(PortEntries, EndpointEntries)> {
    let mut ports = Vec::new();
    let mut eps = Vec::new();
    for (i, a) in c.attachments.iter().enumerate() {
        let Some(net) = inner.state.network_by_id(&a.network) else {
            continue;
        };
        let Some(link) = inner.nl.link_by_name(&a.veth).await? else {
            continue;
        };
        let gw_mac = inner
            .nl
            .link_by_name(&net.bridge)
            .await?
            .and_then(|l| l.mac)
            .unwrap_or_default();
        if i == 0 {
            for m in &c.ports {
                ports.push((
                    m.clone(),
                    Backend {
                        ip: u32::from(a.ip).to_be(),
                        port: m.container_port.to_be(),
                        _pad: 0,
                    },
                ));
            }
        }
        let mut flags = 0;
        if net.masquerade && !net.internal {
            flags |= EP_F_MASQUERADE;
        }
        if net.icc {
            flags |= EP_F_ICC;
        }
        if net.internal {
            flags |= EP_F_INTERNAL;
        }
        eps.push((
            a.ip,
            Endpoint {
                ifindex: link.index,
                net_id: net.net_id,
                gw_ip: net.gateway.map(|g| u32::from(g).to_be()).unwrap_or(0),
                flags,
                mac: a.mac,
                gw_mac,
            },
        ));
    }
    Ok((ports, eps))
}

/// Adds one new container's entries to the maps. `run` uses this rather than
/// `sync_maps`, so that publishing costs one map update per new port whatever the number
/// of ports already published (a full sync walks every entry). The endpoint goes in
/// before the ports that lead to it.
async fn install_container(inner: &mut Inner, c: &Container) -> anyhow::Result<usize> {
    let (ports, eps) = container_entries(inner, c).await?;
    for (ip, ep) in &eps {
        inner.dp.set_endpoint(*ip, *ep)?;
    }
    for (m, b) in &ports {
        inner.dp.set_port(m, *b)?;
    }
    Ok(ports.len())
}

/// Makes every map hold exactly what the store wants (start, reconcile, and changes
/// that touch networks or several containers).
async fn sync_maps(inner: &mut Inner) -> anyhow::Result<()> {
    let mut ports = Vec::new();
    let mut eps = Vec::new();
    for c in &inner.state.containers {
        let (p, e) = container_entries(inner, c).await?;
        ports.extend(p);
        eps.extend(e);
    }
    inner.dp.sync_ports(&ports)?;
    inner.dp.sync_endpoints(&eps)?;
    // Subnets of masquerading (NAT-protected) and internal networks are unreachable
    // from outside; those of networks without masquerade are routed.
    let subnets: Vec<(Ipv4Network, u32)> = inner
        .state
        .networks
        .iter()
        .filter_map(|n| {
            let protected = if n.masquerade || n.internal {
                SUBNET_F_PROTECTED
            } else {
                0
            };
            n.subnet.map(|s| (s, n.net_id | protected))
        })
        .collect();
    inner.dp.sync_subnets(&subnets)?;
    let addrs: Vec<Ipv4Addr> = inner
        .nl
        .ipv4_addrs()
        .await?
        .into_iter()
        .map(|(_, n)| n.ip())
        .collect();
    inner.dp.sync_local_addrs(&addrs)?;
    Ok(())
}

async fn ensure_bridge(nl: &Netlink, net: &Network) -> anyhow::Result<()> {
    let (Some(subnet), Some(gw)) = (net.subnet, net.gateway) else {
        return Ok(());
    };
    let link = match nl.link_by_name(&net.bridge).await? {
        Some(l) => l,
        None => nl.create_bridge(&net.bridge).await?,
    };
    if let Some(mtu) = net.mtu {
        nl.set_mtu(link.index, mtu).await?;
    }
    nl.add_addr(link.index, Ipv4Network::new(gw, subnet.prefix())?)
        .await?;
    nl.set_up(link.index).await?;
    // Replies of published services leave the endpoint program with a host address as
    // their source; when they take the stack's path (no fast path), the bridge must
    // accept a local source address.
    sysctl(&format!("net.ipv4.conf.{}.accept_local", net.bridge), "1")?;
    sysctl(&format!("net.ipv4.conf.{}.rp_filter", net.bridge), "0")?;
    Ok(())
}

/// Creates one attachment's veth (the container end born inside its namespace, named
/// `a.ifname`) and configures both ends. The first attachment of a non-internal network
/// carries the default route.
async fn plumb(
    nl: &Netlink,
    c: &Container,
    a: &Attachment,
    net: &Network,
    first: bool,
) -> anyhow::Result<()> {
    let (Some(subnet), Some(gw)) = (net.subnet, net.gateway) else {
        return Err(anyhow!("network {} has no subnet", net.name));
    };
    let ns = c
        .netns
        .as_deref()
        .ok_or_else(|| anyhow!("container {} has no namespace", c.name))?;
    let bridge = nl
        .link_by_name(&net.bridge)
        .await?
        .ok_or_else(|| anyhow!("bridge {} missing", net.bridge))?;
    let ns_file = netns::open(ns)?;
    let host = nl.create_veth(&a.veth, &a.ifname, &ns_file, a.mac).await?;
    if let Some(mtu) = net.mtu {
        nl.set_mtu(host.index, mtu).await?;
    }
    nl.set_master(host.index, bridge.index).await?;
    nl.set_up(host.index).await?;
    let inside = Netlink::in_netns(ns)?;
    let eth = inside
        .link_by_name(&a.ifname)
        .await?
        .ok_or_else(|| anyhow!("{} missing in {ns}", a.ifname))?;
    if let Some(mtu) = net.mtu {
        inside.set_mtu(eth.index, mtu).await?;
    }
    inside
        .add_addr(eth.index, Ipv4Network::new(a.ip, subnet.prefix())?)
        .await?;
    inside.set_up(eth.index).await?;
    if first && !net.internal {
        inside.add_default_route(gw).await?;
    }
    Ok(())
}

/// Removes one attachment from the kernel: its ports' and flows' state, its program,
/// its veth. Errors are logged and the rest goes on.
async fn teardown_attachment(inner: &mut Inner, c: &Container, a: &Attachment) {
    let n = inner.dp.flush_conntrack_of(a.ip);
    if n > 0 {
        info!(
            "container {}: dropped {n} conntrack entries of {}",
            c.name, a.ip
        );
    }
    inner.dp.remove_endpoint(a.ip);
    if let Err(e) = inner.dp.detach_endpoint(&a.veth) {
        warn!("detaching {}: {e:#}", a.veth);
    }
    match inner.nl.link_by_name(&a.veth).await {
        Ok(Some(l)) => {
            if let Err(e) = inner.nl.del_link(l.index).await {
                warn!("{e:#}");
            }
        }
        Ok(None) => {}
        Err(e) => warn!("looking up {}: {e:#}", a.veth),
    }
}

/// Removes everything of `c` from the kernel. Errors are logged and teardown goes on, so
/// one missing piece never leaves the others behind.
async fn teardown(inner: &mut Inner, c: &Container) {
    if let Some(pid) = c.pid {
        if process::alive(pid, c.pid_start) {
            process::kill(pid, Signal::SIGKILL);
        }
    }
    for m in &c.ports {
        inner.dp.remove_port(m);
    }
    for a in &c.attachments {
        teardown_attachment(inner, c, a).await;
    }
    if c.owns_netns() {
        if let Some(ns) = &c.netns {
            kill_netns_processes(ns);
            if let Err(e) = netns::delete(ns) {
                warn!("{e:#}");
            }
        }
    }
}

/// Kills every process whose network namespace is `name` (what the container started,
/// its children and `netd exec` sessions included).
fn kill_netns_processes(name: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(netns::path_of(name)) else {
        return;
    };
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            if m.ino() == target.ino() && m.dev() == target.dev() {
                process::kill(pid, Signal::SIGKILL);
            }
        }
    }
}

/// Removes netd-made objects that the store does not want: endpoint links, veths and
/// bridges with our prefixes, namespaces with our prefix.
async fn remove_leftovers(inner: &mut Inner, args: &DaemonArgs) {
    let veths: HashSet<String> = inner
        .state
        .containers
        .iter()
        .flat_map(|c| c.attachments.iter().map(|a| a.veth.clone()))
        .collect();
    for v in inner.dp.stale_endpoint_links(&veths) {
        let _ = inner.dp.detach_endpoint(&v);
    }
    let bridges: HashSet<String> = inner
        .state
        .networks
        .iter()
        .map(|n| n.bridge.clone())
        .collect();
    if let Ok(links) = inner.nl.links().await {
        for l in links {
            let stale_veth = l.name.starts_with(&args.veth_prefix) && !veths.contains(&l.name);
            let stale_bridge =
                l.name.starts_with(&args.bridge_prefix) && !bridges.contains(&l.name);
            if stale_veth || stale_bridge {
                warn!("removing stale link {}", l.name);
                let _ = inner.nl.del_link(l.index).await;
            }
        }
    }
    let wanted: HashSet<String> = inner
        .state
        .containers
        .iter()
        .filter_map(|c| c.netns.clone())
        .collect();
    if let Ok(rd) = std::fs::read_dir(netns::NETNS_RUN_DIR) {
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            if name.starts_with(&args.netns_prefix) && !wanted.contains(&name) {
                warn!("removing stale namespace {name}");
                kill_netns_processes(&name);
                let _ = netns::delete(&name);
            }
        }
    }
}

/// Enters `--netns` before the runtime exists, so every thread lives in it.
pub fn enter_netns(args: &DaemonArgs) -> anyhow::Result<()> {
    if let Some(ns) = &args.netns {
        let f = netns::open(ns)?;
        netns::enter(&f)?;
    }
    Ok(())
}

pub async fn serve(args: DaemonArgs) -> anyhow::Result<()> {
    let daemon = Daemon::start(args).await?;
    let sock = daemon.socket_path();
    let listener = bind_socket(&sock)?;
    info!("listening on {}", sock.display());
    let app = crate::api::service(daemon.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let server = axum::serve(listener, app);
    tokio::select! {
        r = server => r.context("API server")?,
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    daemon.shutdown().await?;
    info!("detached; bye");
    Ok(())
}

fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        // A live daemon answers on it; a dead one left a stale file.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(anyhow!(
                "another netd daemon is already listening on {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)?;
    }
    tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}
