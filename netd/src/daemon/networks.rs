//! Networks: create, remove, prune, list; connect and disconnect containers; the
//! built-in `bridge`, `host` and `none`.
use std::sync::Arc;
use std::{
    collections::{BTreeMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::anyhow;
use log::{info, warn};

use super::{
    not_found_container, not_found_net, now,
    owned::{Kind, Owned},
    random_id, txn, Daemon, DaemonArgs, Inner,
};
use crate::{
    driver,
    error::{NetdError, Result},
    ipam,
    model::{
        self, Attachment, ConnectRequest, Container, NetMode, Network, NetworkSpec, Pool, Subnet,
    },
    netlink::Netlink,
    sandbox::{self, AttachOptions},
    store::State,
};

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

/// Whether container `c` may join `net`: a bridge network, a container
/// with networks of its own, not on it already (Docker's 403, which scripts and SDKs
/// tell from other errors).
fn check_connect(net: &Network, c: &Container, all: &[Arc<Container>]) -> Result<()> {
    if !net.traits().connect {
        return Err(NetdError::InvalidArgument(format!(
            "container cannot be connected to the {} network: the {} driver takes no connect",
            net.name, net.driver
        )));
    }
    if c.mode != NetMode::Bridge {
        return Err(NetdError::InvalidArgument(format!(
            "container {} uses network mode {}: it cannot be connected to other networks",
            c.name,
            model::mode_name(&c.mode, all)
        )));
    }
    if c.attachments.iter().any(|a| a.network == net.id) {
        return Err(NetdError::Forbidden(format!(
            "endpoint with name {} already exists in network {}",
            c.name, net.name
        )));
    }
    Ok(())
}

impl Inner {
    /// Sets up `net` on the host through its driver and records what the driver found
    /// (the bridge's MAC) in the state, committed.
    pub(super) async fn setup_network(&mut self, net: &Network) -> anyhow::Result<()> {
        let Some(d) = driver::for_network(net) else {
            return Ok(());
        };
        if !net.bridge.is_empty() {
            self.owned.claim(Kind::Link, &net.bridge)?;
        }
        if net.ipv6() && crate::sysctl::enable_ipv6_forwarding(&self.uplink)? {
            info!("IPv6 forwarding on (network {} has IPv6)", net.name);
        }
        let set = d.setup(&self.nl, net).await?;
        if let Some(n) = self.state.networks.iter_mut().find(|n| n.id == net.id) {
            if *n != set {
                *n = set;
                self.store.commit(&self.state)?;
            }
        }
        Ok(())
    }

    /// Removes `net` from the host; goes on past failures and returns them all.
    pub(super) async fn teardown_network(&mut self, net: &Network) -> driver::TeardownErrors {
        let Some(d) = driver::for_network(net) else {
            return driver::TeardownErrors::default();
        };
        let errs = d.teardown(&self.nl, net).await;
        if errs.is_empty() {
            self.owned.release(Kind::Link, &net.bridge);
        }
        errs
    }
}

impl Daemon {
    /// Creates a network; the second value is Docker's `Warning` (a user subnet that
    /// overlaps a route of the host).
    pub async fn create_network(&self, spec: NetworkSpec) -> Result<(Network, Option<String>)> {
        self.create_network_as(spec, random_id()).await
    }

    /// `create_network` with the id chosen by the caller (Docker's network id, for the
    /// plugin front door).
    pub(super) async fn create_network_as(
        &self,
        spec: NetworkSpec,
        id: String,
    ) -> Result<(Network, Option<String>)> {
        let driver = spec.driver.as_deref().unwrap_or(model::DRIVER_BRIDGE);
        if model::driver_traits(driver).is_some_and(|t| t.multi_host) {
            let net = self.create_overlay(spec, id).await?;
            self.emit_network(&net, "create", None);
            return Ok((net, None));
        }
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
        let name = spec.name.clone();
        let net = txn::transact(
            inner,
            &format!("creating network {name}"),
            "network-create-committed",
            |state| {
                let net = ipam::plan_network(
                    &spec,
                    state,
                    &routes,
                    &links,
                    &self.args.bridge_prefix,
                    id,
                    now(),
                )?;
                if let Some(d) = driver::for_network(&net) {
                    d.validate(&net)
                        .map_err(|e| NetdError::InvalidArgument(e.to_string()))?;
                }
                state.next_net_id = net.net_id + 1;
                state.networks.push(net.clone());
                Ok(net)
            },
            async |inner: &mut Inner, net: &Network| {
                inner.setup_network(net).await?;
                inner.sync_maps().await?;
                Ok(net.clone())
            },
            async |inner: &mut Inner, net: &Network| {
                let errs = inner.teardown_network(net).await;
                if !errs.is_empty() {
                    warn!("undoing network {}: {errs}", net.name);
                }
            },
        )
        .await?;
        let warning = created(&net, &routes);
        self.emit_network(&net, "create", None);
        Ok((net, warning))
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
            return Err(NetdError::Forbidden(format!(
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
            return Err(NetdError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints (containers: {})",
                net.name,
                net.id,
                users.join(", ")
            )));
        }
        if net.is_multi_host() {
            drop(g);
            self.remove_overlay(&net).await?;
            self.emit_network(&net, "destroy", None);
            return Ok(net.id);
        }
        let errs = txn::remove(
            inner,
            &format!("removing network {}", net.name),
            "network-rm-committed",
            |state| {
                state.networks.retain(|n| n.id != net.id);
                Ok(())
            },
            async |inner: &mut Inner, ()| {
                let errs = inner.teardown_network(&net).await;
                (errs, inner.sync_maps().await)
            },
        )
        .await?;
        let (errs, synced) = errs;
        synced?;
        // The network is gone from the store: what could not be removed now is a
        // leftover that reconcile retries at the next start.
        self.emit_network(&net, "destroy", None);
        errs.into_result()
            .map_err(|e| NetdError::Internal(format!("removing network {}: {e:#}", net.name)))?;
        info!("removed network {}", net.name);
        Ok(net.id)
    }

    /// Removes every user network no container uses that `select` picks; returns
    /// their names.
    pub async fn prune_networks(&self, select: impl Fn(&Network) -> bool) -> Result<Vec<String>> {
        let unused: Vec<String> = {
            let g = self.inner.lock().await;
            g.state
                .networks
                .iter()
                .filter(|n| !n.builtin && select(n))
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

    pub async fn networks(&self) -> (Vec<Network>, Vec<Arc<Container>>) {
        let g = self.inner.lock().await;
        (g.state.networks.clone(), g.state.containers.clone())
    }

    pub async fn network(&self, name: &str) -> Result<(Network, Vec<Arc<Container>>)> {
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
        check_connect(&net, &c, &inner.state.containers)?;
        let ns = c
            .netns
            .clone()
            .ok_or_else(|| NetdError::Internal(format!("container {} has no namespace", c.name)))?;
        let links = super::run_plan::resolve_links(&inner.state, &req.links)?;
        model::check_driver_opts(&req.driver_opts)?;
        let opts = AttachOptions {
            ip: req.ip,
            ip6: req.ip6,
            aliases: req.aliases.clone(),
            link_local_ips: req.link_local_ips.clone(),
            mac: req
                .mac_address
                .as_deref()
                .map(model::parse_mac)
                .transpose()?,
            gw_priority: req.gw_priority,
            driver_opts: req.driver_opts.clone(),
            ..Default::default()
        };
        let att = txn::transact(
            inner,
            &format!("connecting {} to {}", c.name, net.name),
            "connect-committed",
            |state| {
                let att = sandbox::plan(
                    state,
                    &net,
                    &c.id,
                    &c.attachments,
                    opts,
                    &self.args.veth_prefix,
                )?;
                if let Some(m) = state.container_mut(&c.id) {
                    m.attachments.push(att.clone());
                    m.links.extend(links.iter().cloned());
                }
                Ok(att)
            },
            async |inner: &mut Inner, att: &Attachment| {
                inner.owned.claim(Kind::Link, &att.veth)?;
                inner.claim_overlay(&net, &c, att).await?;
                let mut a = att.clone();
                inner.join_more(&c, &ns, &net, &mut a).await?;
                Ok(a)
            },
            async |inner: &mut Inner, att: &Attachment| {
                inner.detach(&c, att).await;
                // The routes and ports it took (if any) go back where they were (the
                // state is put back after this).
                if let Some(m) = inner.state.container_mut(&c.id) {
                    m.attachments.retain(|x| x.network != att.network);
                }
                inner.route_gateways(&c.id, &ns).await;
            },
        )
        .await?;
        inner.sync_names();
        self.emit_network(&net, "connect", Some(&c.id));
        info!(
            "connected {} to {} as {} ({})",
            c.name, net.name, att.ifname, att.ip
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
        inner.detach(&c, &att).await;
        if let Some(ns) = &c.netns {
            // Its default routes went with its interface: another endpoint gives them.
            inner.route_gateways(&c.id, ns).await;
        }
        // Published ports lead to the gateway endpoint: that may now be another one.
        inner.sync_maps().await?;
        inner.sync_names();
        self.emit_network(&net, "disconnect", Some(&c.id));
        info!("disconnected {} from {}", c.name, net.name);
        Ok(())
    }
}

impl Inner {
    /// Plumbs attachment `a` of container `c` (committed, the last of its record) into
    /// namespace `ns`. When it becomes the gateway endpoint (Docker 28's rule,
    /// `model::gateways`), it takes the default routes it gives and the published
    /// ports over from the one before.
    async fn join_more(
        &mut self,
        c: &Container,
        ns: &str,
        net: &Network,
        a: &mut Attachment,
    ) -> anyhow::Result<()> {
        let now = self
            .state
            .container(&c.id)
            .cloned()
            .ok_or_else(|| anyhow!("container {} vanished", c.name))?;
        let i = now.attachments.len() - 1;
        let routes = now.default_routes(i, &self.state.networks);
        sandbox::attach(&self.nl, &mut self.dp, ns, net, a, routes).await?;
        self.record_attachment(&c.id, a)?;
        if now.primary(&self.state.networks) == Some(i) {
            sandbox::publish(&mut self.dp, &c.ports, a)?;
        }
        Ok(())
    }

    /// Makes the gateway endpoints of container `id` (Docker 28's rule) give namespace
    /// `ns` its default routes and its published ports lead to the IPv4 one, after an
    /// endpoint left. Failures are logged: the endpoint is gone either way.
    pub(super) async fn route_gateways(&mut self, id: &str, ns: &str) {
        let Some(c) = self.state.container(id).cloned() else {
            return;
        };
        if c.origin != model::Origin::Netd {
            return;
        }
        let (g4, g6) = c.gateways(&self.state.networks);
        for (i, a) in c.attachments.iter().enumerate() {
            let routes = (g4 == Some(i), g6 == Some(i));
            if routes == (false, false) {
                continue;
            }
            let Some(net) = self.state.network_by_id(&a.network).cloned() else {
                continue;
            };
            if let Err(e) = sandbox::route_through(ns, &net, a, routes).await {
                warn!("{}: default route through {}: {e:#}", c.name, a.ifname);
            }
        }
        if let Some(p) = c.primary(&self.state.networks) {
            if let Err(e) = sandbox::publish(&mut self.dp, &c.ports, &c.attachments[p]) {
                warn!(
                    "{}: publishing through {}: {e:#}",
                    c.name, c.attachments[p].ifname
                );
            }
        }
    }

    /// Stores what plumbing recorded about an attachment (its host-side ifindex).
    pub(super) fn record_attachment(&mut self, id: &str, a: &Attachment) -> anyhow::Result<()> {
        if let Some(m) = self.state.container_mut(id) {
            if let Some(x) = m.attachments.iter_mut().find(|x| x.network == a.network) {
                *x = a.clone();
            }
        }
        self.store.commit(&self.state)
    }

    /// Detaches one attachment from the kernel and releases its claim; failures are
    /// logged with every error (the store no longer wants it: reconcile retries).
    pub(super) async fn detach(&mut self, owner: &Container, a: &Attachment) {
        let net = self.state.network_by_id(&a.network).cloned();
        if let Some(net) = &net {
            self.release_overlay(net, a).await;
        }
        let ns = owner.netns.as_deref();
        let errs = sandbox::detach(&self.nl, &mut self.dp, net.as_ref(), a, ns).await;
        if errs.is_empty() {
            self.owned.release(Kind::Link, &a.veth);
        } else {
            warn!("{}: detaching {}: {errs}", owner.name, a.veth);
        }
    }
}

/// The default `bridge` network and the built-in `host` and `none`, as in Docker.
pub(super) async fn ensure_builtin(
    state: &mut State,
    nl: &Netlink,
    owned: &Owned,
    args: &DaemonArgs,
) -> anyhow::Result<()> {
    if state.network("bridge").is_none() {
        let mut avoid = nl.route_destinations().await?;
        avoid.extend(
            state
                .networks
                .iter()
                .flat_map(|n| n.pools::<Ipv4Addr>().into_iter().map(|p| p.subnet)),
        );
        let subnet = model::pick_subnet(&avoid)
            .ok_or_else(|| anyhow!("no free subnet for the default network"))?;
        let gateway = subnet
            .nth(1)
            .ok_or_else(|| anyhow!("subnet {subnet} too small"))?;
        let net_id = state.next_net_id.max(1);
        state.next_net_id = net_id + 1;
        state.networks.push(Network {
            net_id,
            bridge: args.bridge_name.clone(),
            subnets: vec![Subnet::from(Pool {
                subnet,
                gateway,
                ip_range: None,
                user: false,
            })],
            icc: args.icc,
            masquerade: true,
            options: [(model::OPT_BRIDGE_NAME.to_string(), args.bridge_name.clone())].into(),
            ..builtin_network("bridge", model::DRIVER_BRIDGE)
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
    default_bridge_v6(state, nl, owned, args).await?;
    for (name, driver) in [("host", model::DRIVER_HOST), ("none", model::DRIVER_NULL)] {
        if state.network(name).is_none() {
            state.networks.push(builtin_network(name, driver));
        }
    }
    Ok(())
}

/// Logs a new network; Docker's warning for it (a user subnet over a route of the host,
/// IPAM options the driver ignores), also logged.
fn created(net: &Network, routes: &[ipnetwork::Ipv4Network]) -> Option<String> {
    let subnets: Vec<String> = net.subnets.iter().map(|s| s.subnet.to_string()).collect();
    info!(
        "network {} ({}) on {}",
        net.name,
        subnets.join(" "),
        net.bridge
    );
    let warnings: Vec<String> = [
        net.pool::<Ipv4Addr>()
            .filter(|p| p.user)
            .and_then(|p| ipam::route_overlap_warning(&p.subnet, routes)),
        ipam::unused_ipam_options(net),
    ]
    .into_iter()
    .flatten()
    .collect();
    let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    if let Some(w) = &warning {
        warn!("network {}: {w}", net.name);
    }
    warning
}

/// A built-in network of `driver`: no bridge, no subnet, nothing of a user's.
fn builtin_network(name: &str, driver: &str) -> Network {
    Network {
        id: random_id(),
        name: name.into(),
        driver: driver.into(),
        net_id: 0,
        bridge: String::new(),
        bridge_mac: [0; 6],
        subnets: Vec::new(),
        aux_addresses: BTreeMap::new(),
        internal: false,
        icc: true,
        masquerade: false,
        host_binding_ipv4: Ipv4Addr::UNSPECIFIED,
        mtu: None,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        builtin: true,
        created: now(),
        attachable: false,
        vni: 0,
        ipam_options: BTreeMap::new(),
    }
}

/// The default bridge's IPv6 follows the daemon's `--ipv6` and `--fixed-cidr-v6` at
/// every start, as dockerd's default network does: dockerd deletes it and creates it
/// again from its flags. Here a change deletes the bridge device (this instance's), so
/// that reconcile builds it again with the new gateway and nothing of the old; the
/// change is made in `state` before it is committed, so a crash in between only does
/// it again. With containers on the network the settings stay and a warning says why,
/// as dockerd with live restore ("there are running containers, updated network
/// configuration will not take affect"): their addresses come from them.
async fn default_bridge_v6(
    state: &mut State,
    nl: &Netlink,
    owned: &Owned,
    args: &DaemonArgs,
) -> anyhow::Result<()> {
    let Some(br) = state
        .networks
        .iter()
        .find(|n| n.name == "bridge" && n.builtin)
        .cloned()
    else {
        return Ok(());
    };
    let want = ipam::plan_default_bridge(state, &br.id, args.ipv6, args.fixed_cidr_v6)?;
    let have = br.pool::<Ipv6Addr>();
    if want == have {
        return Ok(());
    }
    let describe = |p: &Option<Pool<Ipv6Addr>>| match p {
        Some(p) => format!("IPv6 {}", p.subnet),
        None => "no IPv6".to_string(),
    };
    let users: Vec<&str> = state
        .containers
        .iter()
        .filter(|c| c.attachments.iter().any(|a| a.network == br.id))
        .map(|c| c.name.as_str())
        .collect();
    if !users.is_empty() {
        warn!(
            "default network bridge keeps {} (the flags ask for {}): containers are on it ({}); remove them and restart for the change",
            describe(&have),
            describe(&want),
            users.join(", ")
        );
        return Ok(());
    }
    if br.ipv6() && owned.all(Kind::Link).contains(&br.bridge) {
        if let Some(link) = nl.link_by_name(&br.bridge).await? {
            nl.del_link(link.index).await?;
        }
    }
    if let Some(n) = state.networks.iter_mut().find(|n| n.id == br.id) {
        n.set_pools(want);
    }
    info!(
        "default network bridge: {} (was {})",
        describe(&want),
        describe(&have)
    );
    Ok(())
}
