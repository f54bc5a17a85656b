//! The bridge driver: a Linux bridge per network holding the gateway address, and a veth
//! per endpoint whose container end is born inside the container's namespace. A
//! dual-stack network (`--ipv6`) adds the IPv6 gateway on the bridge and an IPv6
//! address and default route in the container, on that interface only.
use std::net::IpAddr;

use anyhow::{anyhow, Context};
use futures::{future::BoxFuture, FutureExt};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{Join, NetworkDriver, TeardownErrors};
use crate::{
    model::{self, Attachment, GatewayMode, Network},
    netlink::{Netlink, Veth},
    netns, sysctl,
};

pub struct Bridge;

impl NetworkDriver for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn validate(&self, net: &Network) -> anyhow::Result<()> {
        if net.subnets.is_empty() {
            return Err(anyhow!(
                "bridge network {} needs a subnet and a gateway",
                net.name
            ));
        }
        if net.bridge.is_empty() || net.bridge.len() > 15 {
            return Err(anyhow!(
                "bridge name {:?} is not 1-15 characters",
                net.bridge
            ));
        }
        Ok(())
    }

    fn setup<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
    ) -> BoxFuture<'a, anyhow::Result<Network>> {
        async move {
            if net.subnets.is_empty() {
                return Ok(net.clone());
            }
            let link = match nl.link_by_name(&net.bridge).await? {
                Some(l) => l,
                None => nl.create_bridge(&net.bridge).await?,
            };
            if let Some(mtu) = net.mtu {
                nl.set_mtu(link.index, mtu).await?;
            }
            if net.ipv6() {
                // The host never takes a router advertisement from a container (it would
                // make a container the host's default router). IPv6 forwarding is the
                // daemon's to turn on (`sysctl::enable_ipv6_forwarding`), not the
                // driver's.
                sysctl::set_ipv6_conf(&net.bridge, "accept_ra", "0")?;
                sysctl::set_ipv6_conf(&net.bridge, "disable_ipv6", "0")?;
            }
            // Every subnet's gateway: containers of each subnet route through theirs.
            // Gateway mode `isolated` leaves the bridge without one, so not even the
            // host reaches the containers.
            for s in &net.subnets {
                if net.gateway_mode(s.subnet.is_ipv6()) == GatewayMode::Isolated {
                    continue;
                }
                match (s.subnet, s.gateway) {
                    (IpNetwork::V4(n), IpAddr::V4(g)) => {
                        nl.add_addr(link.index, Ipv4Network::new(g, n.prefix())?)
                            .await?
                    }
                    (IpNetwork::V6(n), IpAddr::V6(g)) => {
                        nl.add_addr6(link.index, Ipv6Network::new(g, n.prefix())?)
                            .await?
                    }
                    _ => return Err(anyhow!("subnet {} has gateway {}", s.subnet, s.gateway)),
                }
            }
            nl.set_up(link.index).await?;
            // Replies of published services leave the endpoint program with a host
            // address as their source; when they take the stack's path (no fast path),
            // the bridge must accept a local source address.
            sysctl::set(&format!("net.ipv4.conf.{}.accept_local", net.bridge), "1")?;
            sysctl::set(&format!("net.ipv4.conf.{}.rp_filter", net.bridge), "0")?;
            Ok(Network {
                bridge_mac: link.mac.unwrap_or_default(),
                ..net.clone()
            })
        }
        .boxed()
    }

    fn teardown<'a>(&'a self, nl: &'a Netlink, net: &'a Network) -> BoxFuture<'a, TeardownErrors> {
        delete_link(nl, &net.bridge).boxed()
    }

    fn join<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
        j: Join<'a>,
    ) -> BoxFuture<'a, anyhow::Result<u32>> {
        async move {
            let a = j.attachment;
            // An IPv6-only network's endpoint has no IPv4 address to find a subnet of.
            let prefix = match a.ipv4() {
                Some(ip) => net
                    .pool_of(ip)
                    .ok_or_else(|| anyhow!("{ip} is in no subnet of network {}", net.name))?
                    .subnet
                    .prefix(),
                None => 0,
            };
            let bridge = nl
                .link_by_name(&net.bridge)
                .await?
                .ok_or_else(|| anyhow!("bridge {} missing", net.bridge))?;
            let ns_file = j.netns.map(netns::open).transpose()?;
            let host = nl
                .create_veth(Veth {
                    host: &a.veth,
                    peer: &a.ifname,
                    peer_ns: ns_file.as_ref(),
                    peer_mac: a.mac,
                    mtu: net.mtu,
                    master: Some(bridge.index),
                })
                .await?;
            // Handed to the runtime: the MTU goes with the link when it moves.
            let Some(ns) = j.netns else {
                return Ok(host.index);
            };
            configure_inside(ns, net, a, prefix, (j.default_route, j.default_route6))
                .await
                .with_context(|| format!("configuring {} in {ns}", a.ifname))?;
            Ok(host.index)
        }
        .boxed()
    }

    fn leave<'a>(
        &'a self,
        nl: &'a Netlink,
        a: &'a Attachment,
        _netns: Option<&'a str>,
    ) -> BoxFuture<'a, TeardownErrors> {
        // Deleting the host end deletes the pair, the container end included.
        delete_link(nl, &a.veth).boxed()
    }
}

/// The container side of endpoint `a`, born in namespace `ns` (with the network's MTU):
/// its addresses (IPv6 on for it on a network with IPv6), the endpoint's sysctls, link up,
/// then the default routes it gives (`routes`: IPv4's, IPv6's) through its gateways.
pub(super) async fn configure_inside(
    ns: &str,
    net: &Network,
    a: &Attachment,
    prefix: u8,
    routes: (bool, bool),
) -> anyhow::Result<()> {
    let inside = Netlink::in_netns(ns)?;
    let eth = inside
        .link_by_name(&a.ifname)
        .await?
        .ok_or_else(|| anyhow!("{} missing in {}", a.ifname, ns))?;
    if let Some(ip) = a.ipv4() {
        inside
            .add_addr(eth.index, Ipv4Network::new(ip, prefix)?)
            .await?;
    }
    add_link_local(&inside, eth.index, a, false).await?;
    let v6 = a.ip6.zip(net.subnet6());
    let (ifname, sysctls) = (a.ifname.clone(), model::if_sysctls_of(a));
    let ipv6 = v6.is_some();
    if ipv6 || !sysctls.is_empty() {
        crate::process::with_own_proc(ns, move || {
            if ipv6 {
                enable_ipv6_on(&ifname)?;
            }
            // After netd's own settings, before the link is up (as Docker sets them).
            for s in &sysctls {
                let p = s.path(&ifname);
                std::fs::write(&p, &s.value).with_context(|| format!("setting {p}={}", s.value))?;
            }
            Ok(())
        })?;
    }
    inside.set_up(eth.index).await?;
    if routes.0 && !net.internal && a.ipv4().is_some() {
        if let Some(gw) = net.gateway_for(a.ip) {
            inside.replace_default_route(gw, eth.index).await?;
        }
    }
    if let Some((ip6, subnet6)) = v6 {
        // After the link is up: the default route's gateway must be on-link.
        inside
            .add_addr6(eth.index, Ipv6Network::new(ip6, subnet6.prefix())?)
            .await?;
        add_link_local(&inside, eth.index, a, true).await?;
        if let (true, false, Some(gw6)) = (routes.1, net.internal, net.gateway6()) {
            inside.replace_default_route6(gw6, eth.index).await?;
        }
    }
    Ok(())
}

/// Makes endpoint `a` (up already) give namespace `ns` its default routes (`routes`:
/// IPv4's, IPv6's), replacing those of another endpoint: the gateway endpoint changed.
pub async fn route_through(
    ns: &str,
    net: &Network,
    a: &Attachment,
    routes: (bool, bool),
) -> anyhow::Result<()> {
    if net.internal {
        return Ok(());
    }
    let inside = Netlink::in_netns(ns)?;
    let eth = inside
        .link_by_name(&a.ifname)
        .await?
        .ok_or_else(|| anyhow!("{} missing in {}", a.ifname, ns))?;
    if let (true, Some(_), Some(gw)) = (routes.0, a.ipv4(), net.gateway_for(a.ip)) {
        inside.replace_default_route(gw, eth.index).await?;
    }
    if let (true, Some(_), Some(gw6)) = (routes.1, a.ip6, net.gateway6()) {
        inside.replace_default_route6(gw6, eth.index).await?;
    }
    Ok(())
}

/// `--link-local-ip`s of one family on the container's interface: /16 for IPv4, /64
/// for IPv6, the masks Docker gives them.
async fn add_link_local(
    inside: &Netlink,
    index: u32,
    a: &Attachment,
    v6: bool,
) -> anyhow::Result<()> {
    for ip in &a.link_local_ips {
        match ip {
            IpAddr::V4(v4) if !v6 => inside.add_addr(index, Ipv4Network::new(*v4, 16)?).await?,
            IpAddr::V6(ip6) if v6 => inside.add_addr6(index, Ipv6Network::new(*ip6, 64)?).await?,
            _ => {}
        }
    }
    Ok(())
}

/// IPv6 on for interface `ifname` of the calling thread's namespace and its loopback
/// (a container namespace starts with IPv6 off everywhere, see `set_lo_up`), with
/// router advertisements ignored: addresses and routes come from netd alone.
fn enable_ipv6_on(ifname: &str) -> anyhow::Result<()> {
    for i in [ifname, "lo"] {
        sysctl::set_ipv6_conf(i, "accept_ra", "0")?;
        sysctl::set_ipv6_conf(i, "disable_ipv6", "0")?;
    }
    Ok(())
}

/// Deletes link `name` if it exists.
pub(super) async fn delete_link(nl: &Netlink, name: &str) -> TeardownErrors {
    let mut errs = TeardownErrors::default();
    if let Some(Some(l)) = errs.check(nl.link_by_name(name).await) {
        errs.check(nl.del_link(l.index).await);
    }
    errs
}
