//! Overlay networks on this node: created and removed through the cluster store, and
//! mirrored into the local state from its watch, so that list, inspect and the
//! datapath's subnet map see them like any other network. Each node numbers its copy
//! with a net_id of its own; the VNI is the cluster-wide identity.
use std::{collections::HashSet, net::Ipv4Addr};

use log::{info, warn};

use super::{
    now,
    owned::{Kind, Owned},
    Daemon, Inner,
};
use crate::{
    cluster::{endpoints, networks as store},
    dns::records::names_of,
    error::{NetdError, Result},
    ipam,
    model::{Attachment, Container, Network, NetworkSpec, RemoteEndpoint},
    netlink::Netlink,
};

impl Daemon {
    fn cluster_client(&self) -> Result<etcd_client::Client> {
        self.cluster.as_ref().map(|c| c.client()).ok_or_else(|| {
            NetdError::InvalidArgument(
                "overlay networks need a cluster store: start netd daemon with --cluster-store etcd://HOST:PORT"
                    .into(),
            )
        })
    }

    /// `network create -d overlay`: planned here (the same checks as a bridge network,
    /// against this node's networks and routes), decided by the cluster store.
    pub(super) async fn create_overlay(&self, spec: NetworkSpec, id: String) -> Result<Network> {
        let client = self.cluster_client()?;
        let mut g = self.inner.lock().await;
        let routes = g.nl.route_destinations().await?;
        let planned = ipam::plan_network(
            &spec,
            &g.state,
            &routes,
            &HashSet::new(),
            &self.args.bridge_prefix,
            id,
            now(),
        )?;
        let net = store::create(&client, planned).await?;
        info!(
            "overlay network {} ({}, VNI {})",
            net.name,
            net.pools::<Ipv4Addr>()
                .iter()
                .map(|p| p.subnet.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            net.vni
        );
        // At once, not only when the watch brings it: the caller inspects it next.
        mirror(&mut g, std::slice::from_ref(&net), false).await?;
        Ok(g.state.network_by_id(&net.id).cloned().unwrap_or(net))
    }

    /// `network rm` of an overlay network: gone from the cluster store, then here;
    /// the other nodes follow their watch.
    pub(super) async fn remove_overlay(&self, net: &Network) -> Result<()> {
        let client = self.cluster_client()?;
        store::remove(&client, net).await?;
        let mut g = self.inner.lock().await;
        g.state.networks.retain(|n| n.id != net.id);
        g.store.commit(&g.state)?;
        let errs = g.teardown_network(net).await;
        g.sync_maps().await?;
        if !errs.is_empty() {
            warn!("removing overlay network {} here: {errs}", net.name);
        }
        info!("removed overlay network {}", net.name);
        Ok(())
    }

    /// Keeps this node's copies of the overlay networks equal to the cluster store's.
    pub(super) fn spawn_overlay_mirror(self: &std::sync::Arc<Self>) {
        let Some(c) = &self.cluster else { return };
        let mut rx = store::follow(c.client());
        let d = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(nets) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let Some(d) = d.upgrade() else { return };
                let mut g = d.inner.lock().await;
                if let Err(e) = mirror(&mut g, &nets, true).await {
                    warn!("cluster: mirroring overlay networks: {e:#}");
                }
            }
        });
    }
}

impl Daemon {
    /// Follows the overlay endpoints of the other nodes into the state (IPAM, DNS, the
    /// datapath's overlay map), after keeping this node's own under its lease again.
    pub(super) async fn spawn_overlay_endpoints(self: &std::sync::Arc<Self>) {
        let Some(c) = &self.cluster else { return };
        {
            let g = self.inner.lock().await;
            for cont in &g.state.containers {
                for a in &cont.attachments {
                    let Some(net) = g.state.network_by_id(&a.network) else {
                        continue;
                    };
                    if let Some(rec) = g.overlay_record(net, cont, a) {
                        if let Err(e) = endpoints::keep(c, &rec) {
                            warn!("cluster: {e}");
                        }
                    }
                }
            }
        }
        let me = c.node().id.clone();
        let mut rx = endpoints::follow(c.client());
        let d = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(all) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let Some(d) = d.upgrade() else { return };
                let remote: Vec<RemoteEndpoint> =
                    all.iter().filter(|r| r.node != me).cloned().collect();
                let mut g = d.inner.lock().await;
                if *g.state.remote == remote {
                    continue;
                }
                g.state.remote = std::sync::Arc::new(remote);
                if let Err(e) = g.sync_maps().await {
                    warn!("cluster: writing the overlay map: {e:#}");
                }
                g.sync_names();
            }
        });
    }
}

impl Inner {
    /// The cluster record of attachment `a` of `c`, if `net` is an overlay network
    /// (and this node is in a cluster).
    pub(super) fn overlay_record(
        &self,
        net: &Network,
        c: &Container,
        a: &Attachment,
    ) -> Option<RemoteEndpoint> {
        if !net.is_multi_host() {
            return None;
        }
        let node = self.cluster.as_ref()?.node();
        Some(RemoteEndpoint {
            node: node.id.clone(),
            vtep: node.addr,
            network: net.id.clone(),
            vni: net.vni,
            ip: a.ip,
            container: c.name.clone(),
            names: names_of(c, &a.aliases),
        })
    }

    /// Claims `a`'s overlay address cluster-wide before it is plumbed (nothing for
    /// other networks). Two nodes that handed out the same address in the same instant
    /// (before either's record reached the other) are told apart here: the second gets
    /// a conflict, and the holder is remembered at once, so its next try gets another.
    pub(super) async fn claim_overlay(
        &mut self,
        net: &Network,
        c: &Container,
        a: &Attachment,
    ) -> anyhow::Result<()> {
        if !net.is_multi_host() {
            return Ok(());
        }
        let (Some(cluster), Some(rec)) = (self.cluster.clone(), self.overlay_record(net, c, a))
        else {
            anyhow::bail!(
                "network {} is an overlay network: start netd daemon with --cluster-store",
                net.name
            );
        };
        if let Some(holder) = endpoints::claim(&cluster, &rec).await? {
            let msg = format!(
                "address {} of overlay network {} was just taken by {} on node {}: try again",
                a.ip, net.name, holder.container, holder.vtep
            );
            let mut remote = (*self.state.remote).clone();
            remote.push(holder);
            self.state.remote = std::sync::Arc::new(remote);
            return Err(NetdError::Conflict(msg).into());
        }
        Ok(())
    }

    /// Gives `a`'s overlay address back to the cluster (logged on failure: the record
    /// goes with this node's lease at the latest).
    pub(super) async fn release_overlay(&self, net: &Network, a: &Attachment) {
        let (Some(cluster), true) = (&self.cluster, net.is_multi_host()) else {
            return;
        };
        if let Err(e) = endpoints::release(cluster, net.vni, a.ip).await {
            warn!("cluster: releasing {} on {}: {e}", a.ip, net.name);
        }
    }
}

/// VXLAN's IANA port.
pub const VXLAN_PORT: u16 = 4789;

/// The node's one VXLAN device, in metadata mode, made if missing (and claimed, so a
/// later start without --cluster-store removes it); its name.
pub(super) async fn ensure_vxlan(
    nl: &Netlink,
    owned: &Owned,
    prefix: &str,
) -> anyhow::Result<String> {
    let name = format!("{prefix}vxlan");
    owned.claim(Kind::Link, &name)?;
    let link = match nl.link_by_name(&name).await? {
        Some(l) => l,
        None => nl.create_vxlan_external(&name, VXLAN_PORT).await?,
    };
    nl.set_up(link.index).await?;
    info!("VXLAN device {name} (external, dstport {VXLAN_PORT})");
    Ok(name)
}

/// Adds the overlay networks of `nets` this node lacks; with `complete` (`nets` is the
/// whole list) also drops the ones the store no longer has, unless containers here
/// still use them.
async fn mirror(g: &mut Inner, nets: &[Network], complete: bool) -> anyhow::Result<()> {
    let mut changed = false;
    for n in nets {
        if g.state.network_by_id(&n.id).is_some() {
            continue;
        }
        if let Some(local) = g.state.networks.iter().find(|l| l.name == n.name) {
            warn!(
                "cluster: overlay network {} hidden here by local network {} of the same name",
                n.name, local.id
            );
            continue;
        }
        let mut n = n.clone();
        n.net_id = g.state.next_net_id.max(1);
        g.state.next_net_id = n.net_id + 1;
        info!("cluster: overlay network {} (VNI {})", n.name, n.vni);
        g.state.networks.push(n.clone());
        g.store.commit(&g.state)?;
        // This node's part: the bridge its containers of the network hang on.
        if let Err(e) = g.setup_network(&n).await {
            warn!("cluster: setting up overlay network {} here: {e:#}", n.name);
        }
        changed = true;
    }
    if complete {
        let live: HashSet<&str> = nets.iter().map(|n| n.id.as_str()).collect();
        let gone: Vec<Network> = g
            .state
            .networks
            .iter()
            .filter(|n| n.is_multi_host() && !live.contains(n.id.as_str()))
            .cloned()
            .collect();
        for n in gone {
            let used = g
                .state
                .containers
                .iter()
                .any(|c| c.attachments.iter().any(|a| a.network == n.id));
            if used {
                warn!(
                    "cluster: overlay network {} was removed but containers here use it",
                    n.name
                );
                continue;
            }
            info!("cluster: overlay network {} removed", n.name);
            g.state.networks.retain(|x| x.id != n.id);
            g.store.commit(&g.state)?;
            let errs = g.teardown_network(&n).await;
            if !errs.is_empty() {
                warn!("cluster: removing overlay network {} here: {errs}", n.name);
            }
            changed = true;
        }
    }
    if changed {
        g.store.commit(&g.state)?;
        g.sync_maps().await?;
    }
    Ok(())
}
