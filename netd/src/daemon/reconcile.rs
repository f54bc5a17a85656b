//! Makes the kernel match the store: at start (after a restart or a crash) and, for the
//! maps, after changes that touch networks or several containers.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use anyhow::anyhow;
use log::{debug, warn};

use super::{
    containers::set_lo_up,
    owned::Kind,
    processes::{self, kill_netns_processes},
    Daemon, Inner,
};
use crate::{
    model::{Attachment, Container, ContainerState, NetMode, Network, PortMapping},
    netlink::Netlink,
    netns, process, sandbox,
};

impl Daemon {
    /// Networks' host side, containers' namespaces, veths and programs, every map; then
    /// removes what this instance made that the store does not want (after a crash
    /// between a commit and the kernel work, or before it).
    pub(super) async fn reconcile(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        for net in inner.state.networks.clone() {
            inner.setup_network(&net).await?;
        }
        inner.drop_lost_containers()?;
        let mut adopt = Vec::new();
        for c in inner.state.containers.clone() {
            if c.owns_netns() {
                if let Some(ns) = &c.netns {
                    // Claimed again: a store from before ownership markers.
                    inner.owned.claim(Kind::Netns, ns)?;
                    let ipv6_lo = c.attachments.iter().any(|a| a.ip6.is_some());
                    set_lo_up(ns, ipv6_lo).await?;
                }
            }
            for i in 0..c.attachments.len() {
                inner.reconcile_attachment(&c, i).await?;
            }
            if c.attachments.len() > 1 {
                // The default routes as Docker 28 picks the gateway endpoint, whatever a
                // release that kept them on the first network left (the published
                // ports follow the same choice in `sync_maps`).
                if let Some(ns) = &c.netns {
                    inner.route_gateways(&c.id, ns).await;
                }
            }
            if let Some(p) = inner.running_process(&c) {
                adopt.push(p);
            }
        }
        inner.store.commit(&inner.state)?;
        inner.sync_maps().await?;
        inner.remove_leftovers().await;
        inner.sync_names();
        drop(g);
        for (id, pid, start) in adopt {
            processes::watch_adopted(self, id, pid, start).await;
        }
        Ok(())
    }
}

impl Inner {
    /// Containers whose namespace is gone cannot be brought back: dropped, with the
    /// ones that shared it.
    fn drop_lost_containers(&mut self) -> anyhow::Result<()> {
        let before = self.state.containers.len();
        let lost: HashSet<String> = self
            .state
            .containers
            .iter()
            .filter(|c| c.netns.as_deref().is_some_and(|n| !netns::exists(n)))
            .map(|c| {
                warn!("container {} lost its namespace: dropping it", c.name);
                c.id.clone()
            })
            .collect();
        self.state.containers.retain(|c| {
            !lost.contains(&c.id) && !matches!(&c.mode, NetMode::Container(t) if lost.contains(t))
        });
        if self.state.containers.len() != before {
            self.store.commit(&self.state)?;
        }
        Ok(())
    }

    /// Attachment `i` of `c` as the kernel has it now: its veth found (programs on it
    /// again), recreated if it was lost, or left unplumbed for Docker to join again.
    async fn reconcile_attachment(&mut self, c: &Container, i: usize) -> anyhow::Result<()> {
        let mut a = c.attachments[i].clone();
        let net = self
            .state
            .network_by_id(&a.network)
            .cloned()
            .ok_or_else(|| anyhow!("container {} on unknown network", c.name))?;
        if c.handed_off() && a.host_ifindex == 0 {
            // Docker's endpoint before Join: nothing plumbed yet.
            return Ok(());
        }
        if !net.traits().programs {
            return self.reconcile_inside(c, i, &net).await;
        }
        self.owned.claim(Kind::Link, &a.veth)?;
        match self.nl.link_by_name(&a.veth).await? {
            Some(link) => {
                a.host_ifindex = link.index;
                let set = sandbox::programs_of(&net, &a);
                self.dp
                    .attach_endpoint(&self.nl, &a.veth, link.index, set)
                    .await?;
                // An agent that died between making the veth and its programs left it
                // down.
                self.nl.set_up(link.index).await?;
            }
            None if c.handed_off() => {
                // Its container side was the runtime's: a new one would never reach
                // the sandbox. Unplumbed until Docker joins it again.
                warn!("docker endpoint {}: its veth {} is gone", c.name, a.veth);
                a.host_ifindex = 0;
            }
            None => {
                warn!(
                    "container {}: recreating its interface {}",
                    c.name, a.ifname
                );
                let ns = c.netns.clone().unwrap_or_default();
                let routes = c.default_routes(i, &self.state.networks);
                sandbox::attach(&self.nl, &mut self.dp, &ns, &net, &mut a, routes).await?;
            }
        }
        self.record_attachment(&c.id, &a)?;
        Ok(())
    }

    /// An endpoint with no host side (macvlan): its device lives in the container's
    /// namespace; made again there if it was lost.
    async fn reconcile_inside(
        &mut self,
        c: &Container,
        i: usize,
        net: &Network,
    ) -> anyhow::Result<()> {
        let Some(ns) = c.netns.clone() else {
            return Ok(());
        };
        let mut a = c.attachments[i].clone();
        if Netlink::in_netns(&ns)?
            .link_by_name(&a.ifname)
            .await?
            .is_some()
        {
            return Ok(());
        }
        warn!(
            "container {}: recreating its interface {}",
            c.name, a.ifname
        );
        let routes = c.default_routes(i, &self.state.networks);
        sandbox::attach(&self.nl, &mut self.dp, &ns, net, &mut a, routes).await?;
        self.record_attachment(&c.id, &a)
    }

    /// A running container's process (id, pid, start time), to watch while it is
    /// alive; one that died while no agent ran leaves its container exited.
    fn running_process(&mut self, c: &Container) -> Option<(String, u32, Option<u64>)> {
        if c.state != ContainerState::Running {
            return None;
        }
        let pid = c.pid?;
        if process::alive(pid, c.pid_start) {
            return Some((c.id.clone(), pid, c.pid_start));
        }
        if let Some(m) = self.state.container_mut(&c.id) {
            m.state = ContainerState::Exited;
            m.pid = None;
        }
        None
    }

    /// Makes every map hold exactly what the store wants (start, reconcile, and changes
    /// that touch networks or several containers). Attachments not plumbed yet (no
    /// recorded ifindex) have no entries.
    pub(super) async fn sync_maps(&mut self) -> anyhow::Result<()> {
        let mut ports: Vec<(&PortMapping, IpAddr)> = Vec::new();
        let mut eps: Vec<(&Attachment, &Network)> = Vec::new();
        for c in &self.state.containers {
            let primary = c.primary(&self.state.networks);
            for (i, a) in c.attachments.iter().enumerate() {
                if a.host_ifindex == 0 {
                    continue;
                }
                let Some(net) = self.state.network_by_id(&a.network) else {
                    continue;
                };
                if Some(i) == primary {
                    // Published ports lead to the gateway endpoint, as in Docker.
                    ports.extend(
                        c.ports
                            .iter()
                            .filter_map(|m| Some((m, sandbox::backend_ip(m, a)?))),
                    );
                }
                eps.push((a, net));
            }
        }
        self.dp.sync_endpoints(&eps)?;
        let eps6: Vec<_> = eps
            .iter()
            .filter_map(|(a, n)| a.ip6.map(|ip6| (*a, *n, ip6)))
            .collect();
        self.dp.sync_endpoints6(&eps6)?;
        // After the endpoints: a `routed` endpoint's entry says which ports open.
        self.dp.sync_ports(&ports)?;
        self.dp.sync_subnets(&self.state.networks)?;
        self.dp.sync_sources(&self.state.networks)?;
        let trusted = self.trusted_interfaces().await?;
        self.dp.sync_trusted(&trusted)?;
        let vxlan_ifindex = match &self.vxlan {
            Some(name) => self.nl.link_by_name(name).await?.map(|l| l.index),
            None => None,
        };
        self.dp
            .sync_overlay_peers(&self.state.remote, &self.state.networks, vxlan_ifindex)?;
        let addrs: Vec<Ipv4Addr> = self
            .nl
            .ipv4_addrs()
            .await?
            .into_iter()
            .map(|(_, n)| n.ip())
            .collect();
        self.dp
            .sync_local_addrs(&addrs, &self.nl.ipv6_addrs().await?)?;
        Ok(())
    }

    /// Every network's trusted host interfaces that exist now, as (ifindex, network
    /// id). One that does not exist is skipped (Docker takes names of interfaces to
    /// come): the next reconcile picks it up.
    async fn trusted_interfaces(&self) -> anyhow::Result<Vec<(u32, u32)>> {
        let mut out = Vec::new();
        for n in &self.state.networks {
            for name in n.trusted_interfaces() {
                match self.nl.link_by_name(&name).await? {
                    Some(l) => out.push((l.index, n.net_id)),
                    None => debug!(
                        "network {}: trusted interface {name} does not exist",
                        n.name
                    ),
                }
            }
        }
        Ok(out)
    }

    /// Removes what this instance made (it holds a claim, see `owned`) and the store
    /// no longer wants: endpoint links, veths, bridges, namespaces. Nothing without a
    /// claim of this instance is touched, whatever its name.
    async fn remove_leftovers(&mut self) {
        let veths: HashSet<String> = self
            .state
            .containers
            .iter()
            .flat_map(|c| c.attachments.iter().map(|a| a.veth.clone()))
            .collect();
        for v in self.dp.stale_endpoint_links(&veths) {
            let _ = self.dp.detach_endpoint(&v);
        }
        let bridges: HashSet<String> = self
            .state
            .networks
            .iter()
            .map(|n| n.bridge.clone())
            .collect();
        let stale_links: HashSet<String> = self
            .owned
            .all(Kind::Link)
            .into_iter()
            .filter(|l| !veths.contains(l) && !bridges.contains(l))
            .filter(|l| self.vxlan.as_ref() != Some(l))
            .collect();
        if let Ok(links) = self.nl.links().await {
            for l in links.iter().filter(|l| stale_links.contains(&l.name)) {
                warn!("removing stale link {}", l.name);
                if let Err(e) = self.nl.del_link(l.index).await {
                    warn!("{e:#}");
                }
            }
            for name in &stale_links {
                self.owned.release(Kind::Link, name);
            }
        }
        let wanted: HashSet<String> = self
            .state
            .containers
            .iter()
            .filter(|c| c.owns_netns())
            .filter_map(|c| c.netns.clone())
            .collect();
        for name in self.owned.all(Kind::Netns) {
            if wanted.contains(&name) {
                continue;
            }
            if netns::exists(&name) {
                warn!("removing stale namespace {name}");
                kill_netns_processes(&name);
                if let Err(e) = netns::delete(&name) {
                    warn!("{e:#}");
                    continue;
                }
            }
            self.owned.release(Kind::Netns, &name);
        }
    }
}
