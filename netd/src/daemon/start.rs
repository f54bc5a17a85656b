//! Start-up in the order that keeps a running datapath forwarding: refuse what cannot
//! work before touching anything, load the programs beside the ones attached, fill the
//! maps, then swap the new programs into the pinned links and reconcile.
use std::{
    fs::File,
    io::Write,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{anyhow, Context};
use log::{info, warn};
use tokio::sync::Mutex;

use super::{args, networks, overlay, rundir, trace, Daemon, DaemonArgs, Inner};
use crate::{
    cluster::{self, Cluster},
    datapath::{self, config_flags, Datapath, Settings, XdpMode},
    dns,
    netlink::{Link, Netlink},
    store::{State, Store},
    sysctl,
};

/// The instance's lock (`STATE_DIR/netd.lock`, flock): one agent per state at a time.
/// Held for the life of the daemon (or of `--cleanup`); the kernel drops it with the
/// process, however it ends.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    pub fn take(state_dir: &Path) -> anyhow::Result<InstanceLock> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state dir {}", state_dir.display()))?;
        let path = state_dir.join("netd.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(anyhow!(
                "another netd daemon (pid {}) uses {}: stop it first",
                holder.trim(),
                state_dir.display()
            ));
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(InstanceLock { _file: file })
    }
}

/// Whatever would make a start fail or harm the running datapath, checked before the
/// daemon changes anything: contradicting flags, another agent on this state, a state
/// file or pinned datapath of a newer release (a downgrade).
pub fn preflight(args: &DaemonArgs) -> anyhow::Result<InstanceLock> {
    check_compatible(args)?;
    InstanceLock::take(&args.state_dir)
}

/// The checks of `preflight` that need no lock: the flags, and that this release can
/// read the state and the pinned datapath it would take over.
pub fn check_compatible(args: &DaemonArgs) -> anyhow::Result<()> {
    args.check()?;
    if args.veth_prefix.len() > 5 || args.bridge_prefix.len() > 5 {
        return Err(anyhow!(
            "--veth-prefix and --bridge-prefix must be at most 5 characters"
        ));
    }
    Store::check(&args.state_dir)?;
    datapath::check_layout(&args.bpf_dir)?;
    Ok(())
}

/// The uplink: its link and addresses.
pub(super) struct Uplink {
    pub link: Link,
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
}

impl Uplink {
    async fn find(nl: &Netlink, args: &DaemonArgs) -> anyhow::Result<Uplink> {
        let link = match &args.uplink {
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
        let ip = nl
            .ipv4_addrs()
            .await?
            .into_iter()
            .find(|(i, _)| *i == link.index)
            .map(|(_, n)| n.ip())
            .ok_or_else(|| anyhow!("uplink {} has no IPv4 address", link.name))?;
        info!("uplink {} (ifindex {}, {ip})", link.name, link.index);
        let ip6 = super::uplink_ipv6(nl, link.index).await?;
        match ip6 {
            Some(ip6) => info!("uplink {} IPv6 {ip6}: the NAT66 source", link.name),
            None => warn!(
                "uplink {} has no global or unique-local IPv6 address: NAT66 cannot masquerade, IPv6 from containers of NAT66 networks stays on the host",
                link.name
            ),
        }
        Ok(Uplink { link, ip, ip6 })
    }

    /// Native XDP on physical NICs (no link kind); virtual devices get the guard in TC.
    fn xdp(&self, args: &DaemonArgs) -> (bool, bool) {
        let native = match args.xdp_mode.as_str() {
            "native" => true,
            "auto" => self.link.kind.is_none(),
            _ => false,
        };
        let in_tc = args.xdp_mode == "tc" || (args.xdp_mode == "auto" && !native);
        (native, in_tc)
    }
}

/// Loads the programs (beside whatever is attached: nothing is swapped yet) and writes
/// their configuration.
fn load_datapath(args: &DaemonArgs, up: &Uplink) -> anyhow::Result<Datapath> {
    let (lo, hi) = args.snat_port_range;
    sysctl::set("net.ipv4.ip_local_reserved_ports", &format!("{lo}-{hi}"))?;
    let mut dp = Datapath::load(&args.bpf_dir, args.ct_entries())?;
    let (_, guard_in_tc) = up.xdp(args);
    let mut flags = 0;
    if !args.no_fast_path {
        flags |= config_flags::FAST_PATH;
    }
    if guard_in_tc {
        flags |= config_flags::GUARD_IN_TC;
    }
    dp.configure(&Settings {
        uplink_ifindex: up.link.index,
        uplink_ip: up.ip,
        flags,
        snat_ports: args.snat_port_range,
    })?;
    dp.set_uplink_ip6(up.ip6)?;
    dp.set_default_sources(args.published_sources());
    Ok(dp)
}

/// The state, opened (migrated if an older release wrote it), with the built-in
/// networks this start's flags ask for, committed.
async fn open_state(
    args: &DaemonArgs,
    nl: &Netlink,
    owned: &super::Owned,
) -> anyhow::Result<(Store, State)> {
    let (store, mut state) = Store::open(&args.state_dir)?;
    if state.instance_id.is_empty() {
        state.instance_id = super::random_id();
    }
    networks::ensure_builtin(&mut state, nl, owned, args).await?;
    store.commit(&state)?;
    Ok((store, state))
}

impl Daemon {
    /// Finds the uplink, loads the datapath, creates the built-in networks, swaps the
    /// programs in, reconciles, and starts the conntrack collector.
    pub async fn start(args: DaemonArgs) -> anyhow::Result<Arc<Daemon>> {
        // A cluster store whose TLS does not work stops the start before anything is
        // touched.
        let store_opts = cluster::StoreOpts::parse(&args.cluster_store_opt)?;
        if let Some(url) = &args.cluster_store {
            cluster::check_store(url, &store_opts).await?;
        }
        rundir::prepare_run_dir(&args)?;
        sysctl::set("net.ipv4.ip_forward", "1")?;
        let nl = Netlink::current()?;
        let up = Uplink::find(&nl, &args).await?;
        let owned = super::Owned::new(&args.state_dir)?;
        let (store, state) = open_state(&args, &nl, &owned).await?;
        let mut dp = load_datapath(&args, &up)?;
        dp.set_instance(&state.instance_id);
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
            Some(url) => Some(Arc::new(
                join_cluster(
                    &nl,
                    url,
                    &store_opts,
                    args.cluster_advertise.as_deref(),
                    up.ip,
                    &state,
                )
                .await?,
            )),
            None => None,
        };
        let daemon = Arc::new(Daemon {
            inner: Mutex::new(Inner {
                state,
                store,
                dp,
                nl,
                uplink: up.link.name.clone(),
                owned,
                vxlan: None,
                cluster: cluster.clone(),
                dns: dns::Service::new(),
            }),
            args,
            trace,
            cluster,
            events: super::events::Hub::default(),
            hubs: Default::default(),
            execs: Default::default(),
        });
        daemon.attach(&up).await?;
        daemon.reconcile().await?;
        daemon.inner.lock().await.dp.finish_migration()?;
        daemon.spawn_overlay_mirror();
        daemon.spawn_overlay_endpoints().await;
        daemon.spawn_orphan_watch();
        let timeouts = datapath::Timeouts {
            udp: Duration::from_secs(daemon.args.ct_udp_timeout),
            ..Default::default()
        };
        let every = Duration::from_secs(daemon.args.ct_gc_interval.max(1));
        datapath::spawn_gc(gc_table, every, timeouts)
            .context("starting the conntrack collector")?;
        Ok(daemon)
    }

    /// Puts this agent's programs into every hook: the uplink's, the cgroup's, the
    /// VXLAN device's (endpoints' follow in `reconcile`). Maps the load made anew are
    /// filled from the store first, so no packet meets a new program with empty maps.
    async fn attach(&self, up: &Uplink) -> anyhow::Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        if inner.dp.needs_store() {
            inner.sync_maps().await?;
        }
        let (native_xdp, guard_in_tc) = up.xdp(&self.args);
        inner
            .dp
            .attach_uplink(&up.link.name, native_xdp.then_some(XdpMode::Driver))?;
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
        let cgroup = match self.args.cgroup.as_deref() {
            Some("none") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => args::cgroup2_root(),
        };
        match cgroup {
            Some(cg) => {
                inner.dp.attach_cgroup(&cg)?;
                info!(
                    "host access to published ports via socket programs on {}",
                    cg.display()
                );
            }
            None => warn!("no cgroup2 mount: 127.0.0.1:PORT access from the host is off"),
        }
        if self.cluster.is_some() {
            let name =
                overlay::ensure_vxlan(&inner.nl, &inner.owned, &self.args.bridge_prefix).await?;
            inner.dp.attach_vxlan(&name)?;
            inner.vxlan = Some(name);
        }
        Ok(())
    }
}

/// Checks the cluster flags, resolves the advertised address in this namespace and
/// starts registering; etcd itself may still be unreachable (the registration retries).
async fn join_cluster(
    nl: &Netlink,
    url: &str,
    store_opts: &cluster::StoreOpts,
    advertise: Option<&str>,
    uplink_ip: Ipv4Addr,
    state: &State,
) -> anyhow::Result<Cluster> {
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
        id: state.instance_id.clone(),
        addr,
    };
    info!("cluster store {url}, advertising {addr}");
    Ok(Cluster::start(url, store_opts, node).await?)
}
