//! `netd daemon`: owns the kernel state and serves the API.
//!
//! Every change is committed to the store first, then applied to the kernel; at start
//! (and after a crash) `reconcile` makes the kernel match the store and removes what netd
//! made that the store no longer wants.
use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context};
use ipnetwork::Ipv4Network;
use log::{info, warn};
use netd_common::{ct_kind, ct_tcp, Backend, Endpoint, EP_F_MASQUERADE};
use nix::sys::signal::Signal;
use tokio::sync::Mutex;

use crate::{
    datapath::Datapath,
    error::{NetdError, Result},
    model::{self, Container, ContainerState, Network, RunRequest},
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
    /// Prefix of host-side veth names (at most 5 characters).
    #[arg(long, default_value = "ndv")]
    pub veth_prefix: String,
    /// Hand every packet back to the stack instead of redirecting (for comparison).
    #[arg(long)]
    pub no_fast_path: bool,
    /// Source ports (and ICMP echo ids) masquerade picks from, MIN-MAX. netd reserves
    /// them in the host namespace (ip_local_reserved_ports) so host sockets never
    /// collide with masqueraded flows.
    #[arg(long, default_value = "61000-65535", value_parser = parse_port_range)]
    pub snat_port_range: (u16, u16),
    /// Seconds between conntrack garbage collections.
    #[arg(long, default_value_t = 10)]
    pub ct_gc_interval: u64,
    /// Idle timeout of one-way UDP flows, seconds.
    #[arg(long, default_value_t = 30)]
    pub ct_udp_timeout: u64,
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

impl Daemon {
    pub fn socket_path(&self) -> PathBuf {
        self.args.run_dir.join("netd.sock")
    }

    pub async fn start(args: DaemonArgs) -> anyhow::Result<Arc<Daemon>> {
        if args.veth_prefix.len() > 5 {
            return Err(anyhow!("--veth-prefix must be at most 5 characters"));
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
        if state.network("bridge").is_none() {
            let routes = nl.route_destinations().await?;
            let subnet = model::pick_subnet(&routes)
                .ok_or_else(|| anyhow!("no free subnet for the default network"))?;
            let gateway = subnet
                .nth(1)
                .ok_or_else(|| anyhow!("subnet {subnet} too small"))?;
            state.next_net_id = state.next_net_id.max(1);
            state.networks.push(Network {
                id: random_id(),
                name: "bridge".into(),
                net_id: state.next_net_id,
                bridge: args.bridge_name.clone(),
                subnet,
                gateway,
                builtin: true,
            });
            state.next_net_id += 1;
            store.commit(&state)?;
            info!("default network bridge: {subnet} via {gateway}");
        }

        let (lo, hi) = args.snat_port_range;
        sysctl("net.ipv4.ip_local_reserved_ports", &format!("{lo}-{hi}"))?;
        let mut dp = Datapath::load(&args.bpf_dir)?;
        dp.set_config(
            uplink.index,
            uplink_ip,
            !args.no_fast_path,
            args.snat_port_range,
        )?;
        dp.attach_uplink(&uplink.name)?;
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

    /// Makes the kernel match the store: networks' bridges, containers' veths and
    /// programs, every map, and removes netd-made leftovers the store does not know.
    pub async fn reconcile(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        for net in inner.state.networks.clone() {
            ensure_bridge(&inner.nl, &net).await?;
        }
        // Containers whose namespace is gone cannot be brought back: drop them.
        let before = inner.state.containers.len();
        inner.state.containers.retain(|c| {
            let keep = netns::exists(&c.netns);
            if !keep {
                warn!(
                    "container {} lost its namespace {}: dropping it",
                    c.name, c.netns
                );
            }
            keep
        });
        if inner.state.containers.len() != before {
            inner.store.commit(&inner.state)?;
        }
        let mut adopt = Vec::new();
        for c in inner.state.containers.clone() {
            let net = inner
                .state
                .network(&c.network)
                .cloned()
                .ok_or_else(|| anyhow!("container {} on unknown network", c.name))?;
            if inner.nl.link_by_name(&c.veth).await?.is_none() {
                warn!("container {}: recreating its veth {}", c.name, c.veth);
                plumb(&inner.nl, &c, &net).await?;
            }
            inner.dp.attach_endpoint(&c.veth)?;
            if c.state == ContainerState::Running {
                match c.pid {
                    Some(pid) if process::alive(pid, c.pid_start) => {
                        adopt.push((c.id.clone(), pid, c.pid_start))
                    }
                    _ => {
                        if let Some(m) = inner.state.container_mut(&c.id) {
                            m.state = ContainerState::Exited;
                        }
                    }
                }
            }
        }
        inner.store.commit(&inner.state)?;
        self.sync_maps(inner).await?;
        remove_leftovers(inner, &self.args).await;
        drop(g);
        for (id, pid, start) in adopt {
            self.watch_adopted(id, pid, start);
        }
        Ok(())
    }

    /// Rewrites the port, endpoint and local-address maps from the store.
    async fn sync_maps(&self, inner: &mut Inner) -> anyhow::Result<()> {
        let mut ports = Vec::new();
        let mut eps = Vec::new();
        for c in &inner.state.containers {
            let Some(net) = inner.state.network(&c.network) else {
                continue;
            };
            let Some(link) = inner.nl.link_by_name(&c.veth).await? else {
                continue;
            };
            let gw_mac = inner
                .nl
                .link_by_name(&net.bridge)
                .await?
                .and_then(|l| l.mac)
                .unwrap_or_default();
            for m in &c.ports {
                ports.push((
                    m.clone(),
                    Backend {
                        ip: u32::from(c.ip).to_be(),
                        port: m.container_port.to_be(),
                        _pad: 0,
                    },
                ));
            }
            eps.push((
                c.ip,
                Endpoint {
                    ifindex: link.index,
                    net_id: net.net_id,
                    gw_ip: u32::from(net.gateway).to_be(),
                    flags: EP_F_MASQUERADE,
                    mac: c.mac,
                    gw_mac,
                },
            ));
        }
        inner.dp.sync_ports(&ports)?;
        inner.dp.sync_endpoints(&eps)?;
        let subnets: Vec<(Ipv4Network, u32)> = inner
            .state
            .networks
            .iter()
            .map(|n| (n.subnet, n.net_id))
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

    pub async fn run(self: &Arc<Self>, mut req: RunRequest) -> Result<Container> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let name = match &req.name {
            Some(n) => {
                model::validate_name(n)?;
                n.clone()
            }
            None => format!("netd_{}", &random_id()[..8]),
        };
        if inner.state.container(&name).is_some_and(|c| c.name == name) {
            return Err(NetdError::Conflict(format!(
                "container name {name:?} is already in use: remove it or pick another name"
            )));
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
        let net = inner
            .state
            .network("bridge")
            .cloned()
            .ok_or_else(|| NetdError::NotFound("network bridge not found".into()))?;
        let ip = allocate_ip(&inner.state, &net)?;
        let id = random_id();
        let c = Container {
            id: id.clone(),
            name: name.clone(),
            netns: format!("{}{}", self.args.netns_prefix, name),
            network: net.id.clone(),
            ip,
            mac: model::mac_for_ip(ip),
            veth: format!(
                "{}{}",
                self.args.veth_prefix,
                &id[..15 - self.args.veth_prefix.len()]
            ),
            ports: req.ports.clone(),
            cmd: req.cmd.clone(),
            state: ContainerState::Created,
            pid: None,
            pid_start: None,
            exit_code: None,
            created: now(),
        };
        if netns::exists(&c.netns) {
            return Err(NetdError::Conflict(format!(
                "network namespace {} already exists (not made by this netd?): remove it first",
                c.netns
            )));
        }
        // Commit first: a crash from here on is cleaned up or completed by reconcile.
        inner.state.containers.push(c.clone());
        inner.store.commit(&inner.state)?;

        let made = async {
            netns::create(&c.netns)?;
            plumb(&inner.nl, &c, &net).await?;
            inner.dp.attach_endpoint(&c.veth)?;
            self.sync_maps(inner).await?;
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
        if !c.cmd.is_empty() {
            let log = self.log_path(&c.id);
            match process::spawn_in_netns(&c.netns, &c.cmd, &log) {
                Ok((pid, child)) => {
                    c.pid = Some(pid);
                    c.pid_start = process::start_time(pid);
                    c.state = ContainerState::Running;
                    self.watch_child(c.id.clone(), child);
                }
                Err(e) => {
                    teardown(inner, &c).await;
                    inner.state.containers.retain(|x| x.id != c.id);
                    inner.store.commit(&inner.state)?;
                    return Err(NetdError::InvalidArgument(format!(
                        "starting {:?} in container {name}: {e:#}",
                        c.cmd.join(" ")
                    )));
                }
            }
        } else {
            c.state = ContainerState::Running;
        }
        if let Some(m) = inner.state.container_mut(&c.id) {
            *m = c.clone();
        }
        inner.store.commit(&inner.state)?;
        info!(
            "container {} ({}) on {} at {}",
            c.name,
            &c.id[..12],
            net.name,
            c.ip
        );
        Ok(c)
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

    async fn mark_exited(&self, id: &str, code: i32) {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        if let Some(c) = inner.state.container_mut(id) {
            if c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.exit_code = Some(code);
                c.pid = None;
                if let Err(e) = inner.store.commit(&inner.state) {
                    warn!("recording exit of {id}: {e:#}");
                }
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
            .ok_or_else(|| NetdError::NotFound(format!("no such container: {name}")))?;
        let running = c.pid.is_some_and(|p| process::alive(p, c.pid_start));
        if running && !force {
            return Err(NetdError::Conflict(format!(
                "container {} is running: stop it first or use rm -f",
                c.name
            )));
        }
        inner.state.containers.retain(|x| x.id != c.id);
        inner.store.commit(&inner.state)?;
        teardown(inner, &c).await;
        let _ = std::fs::remove_file(self.log_path(&c.id));
        self.sync_maps(inner).await?;
        info!("removed container {}", c.name);
        Ok(c.id)
    }

    pub async fn containers(&self) -> Vec<Container> {
        let g = self.inner.lock().await;
        g.state.containers.clone()
    }

    pub async fn container(&self, name: &str) -> Result<Container> {
        let g = self.inner.lock().await;
        g.state
            .container(name)
            .cloned()
            .ok_or_else(|| NetdError::NotFound(format!("no such container: {name}")))
    }

    pub async fn networks(&self) -> Vec<Network> {
        self.inner.lock().await.state.networks.clone()
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

fn allocate_ip(state: &State, net: &Network) -> Result<Ipv4Addr> {
    let used: HashSet<Ipv4Addr> = state
        .containers
        .iter()
        .filter(|c| c.network == net.id)
        .map(|c| c.ip)
        .collect();
    net.subnet
        .iter()
        .skip(1)
        .take(net.subnet.size().saturating_sub(2) as usize)
        .find(|ip| *ip != net.gateway && !used.contains(ip))
        .ok_or_else(|| {
            NetdError::Conflict(format!("network {} has no free address left", net.name))
        })
}

async fn ensure_bridge(nl: &Netlink, net: &Network) -> anyhow::Result<()> {
    let link = match nl.link_by_name(&net.bridge).await? {
        Some(l) => l,
        None => nl.create_bridge(&net.bridge).await?,
    };
    let gw = Ipv4Network::new(net.gateway, net.subnet.prefix())?;
    nl.add_addr(link.index, gw).await?;
    nl.set_up(link.index).await?;
    // Replies of published services leave the endpoint program with a host address as
    // their source; when they take the stack's path (no fast path), the bridge must
    // accept a local source address.
    sysctl(&format!("net.ipv4.conf.{}.accept_local", net.bridge), "1")?;
    sysctl(&format!("net.ipv4.conf.{}.rp_filter", net.bridge), "0")?;
    Ok(())
}

/// Creates the container's veth (eth0 born inside its namespace) and configures both ends.
async fn plumb(nl: &Netlink, c: &Container, net: &Network) -> anyhow::Result<()> {
    let bridge = nl
        .link_by_name(&net.bridge)
        .await?
        .ok_or_else(|| anyhow!("bridge {} missing", net.bridge))?;
    let ns_file = netns::open(&c.netns)?;
    let host = nl.create_veth(&c.veth, "eth0", &ns_file, c.mac).await?;
    nl.set_master(host.index, bridge.index).await?;
    nl.set_up(host.index).await?;
    let inside = Netlink::in_netns(&c.netns)?;
    if let Some(lo) = inside.link_by_name("lo").await? {
        inside.set_up(lo.index).await?;
    }
    let eth0 = inside
        .link_by_name("eth0")
        .await?
        .ok_or_else(|| anyhow!("eth0 missing in {}", c.netns))?;
    inside
        .add_addr(eth0.index, Ipv4Network::new(c.ip, net.subnet.prefix())?)
        .await?;
    inside.set_up(eth0.index).await?;
    inside.add_default_route(net.gateway).await?;
    Ok(())
}

/// Removes everything of `c` from the kernel. Errors are logged and teardown goes on, so
/// one missing piece never leaves the others behind.
async fn teardown(inner: &mut Inner, c: &Container) {
    if let Some(pid) = c.pid {
        if process::alive(pid, c.pid_start) {
            process::kill(pid, Signal::SIGKILL);
        }
    }
    kill_netns_processes(&c.netns);
    for m in &c.ports {
        inner.dp.remove_port(m);
    }
    let n = inner.dp.flush_conntrack_of(c.ip);
    if n > 0 {
        info!("container {}: dropped {n} conntrack entries", c.name);
    }
    if let Err(e) = inner.dp.detach_endpoint(&c.veth) {
        warn!("detaching {}: {e:#}", c.veth);
    }
    match inner.nl.link_by_name(&c.veth).await {
        Ok(Some(l)) => {
            if let Err(e) = inner.nl.del_link(l.index).await {
                warn!("{e:#}");
            }
        }
        Ok(None) => {}
        Err(e) => warn!("looking up {}: {e:#}", c.veth),
    }
    if let Err(e) = netns::delete(&c.netns) {
        warn!("{e:#}");
    }
}

/// Kills every process whose network namespace is `name` (what the container started,
/// its children included).
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

/// Removes netd-made objects that the store does not want: endpoint links, veths with
/// our prefix, namespaces with our prefix.
async fn remove_leftovers(inner: &mut Inner, args: &DaemonArgs) {
    let veths: HashSet<String> = inner
        .state
        .containers
        .iter()
        .map(|c| c.veth.clone())
        .collect();
    for v in inner.dp.stale_endpoint_links(&veths) {
        let _ = inner.dp.detach_endpoint(&v);
    }
    if let Ok(links) = inner.nl.links().await {
        for l in links {
            if l.name.starts_with(&args.veth_prefix) && !veths.contains(&l.name) {
                warn!("removing stale veth {}", l.name);
                let _ = inner.nl.del_link(l.index).await;
            }
        }
    }
    let wanted: HashSet<String> = inner
        .state
        .containers
        .iter()
        .map(|c| c.netns.clone())
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
    let app = crate::api::router(daemon.clone());
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
