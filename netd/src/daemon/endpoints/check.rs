//! CHECK of an endpoint: its record against the kernel, as CNI's CHECK asks of a plugin
//! (interfaces, addresses and routes it made, and what the result type does not
//! track: the endpoint program and the map entries).
use ipnetwork::Ipv4Network;

use super::{find, not_found_endpoint};
use crate::{
    daemon::{not_found_net, Daemon},
    error::{NetdError, Result},
    model::{fmt_mac, Attachment, Network},
    netlink::Netlink,
    netns,
};

impl Daemon {
    /// What differs between an endpoint's record and the kernel: the interface, its
    /// MAC, address and default route in the namespace; the host veth, its program,
    /// endpoint and port map entries. Empty when all is as attached.
    pub async fn check_endpoint(&self, container_id: &str, ifname: &str) -> Result<Vec<String>> {
        let g = self.inner.lock().await;
        let c = find(&g.state, container_id, ifname)
            .ok_or_else(|| not_found_endpoint(container_id, ifname))?;
        let (Some(a), Some(ns)) = (c.attachments.first(), c.netns.as_deref()) else {
            return Err(NetdError::Internal(format!("record {} is empty", c.name)));
        };
        let net = g
            .state
            .network_by_id(&a.network)
            .ok_or_else(|| not_found_net(&a.network))?;
        let mut problems = Vec::new();
        if !netns::exists(ns) {
            problems.push(format!("network namespace {ns} is gone"));
            return Ok(problems);
        }
        check_inside(ns, net, a, c.default_route_on(0), &mut problems).await?;
        if !net.traits().programs {
            // No host side (macvlan): the interface inside is the whole endpoint.
            return Ok(problems);
        }
        match g.nl.link_by_name(&a.veth).await? {
            Some(l) if l.index == a.host_ifindex => {}
            Some(l) => problems.push(format!(
                "host veth {} is ifindex {}, attached as {}",
                a.veth, l.index, a.host_ifindex
            )),
            None => problems.push(format!("host veth {} is missing", a.veth)),
        }
        match g.nl.ingress_filters(a.host_ifindex).await {
            Ok(filters) => {
                let set = crate::sandbox::programs_of(net, a);
                problems.extend(g.dp.endpoint_problems(&a.veth, &filters, set)?);
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        if !g.dp.has_endpoint(a, net) {
            problems.push(format!("the endpoint map has no entry for {}", a.ip));
        }
        for m in &c.ports {
            let to = crate::sandbox::backend_ip(m, a);
            if !to.is_some_and(|ip| g.dp.has_port(m, ip)) {
                problems.push(format!("published port {m} is not in the port map"));
            }
        }
        Ok(problems)
    }
}

/// The namespace side of `check_endpoint`.
async fn check_inside(
    ns: &str,
    net: &Network,
    a: &Attachment,
    default_route: bool,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let inside = Netlink::in_netns(ns)?;
    let Some(link) = inside.link_by_name(&a.ifname).await? else {
        problems.push(format!("interface {} is missing in {ns}", a.ifname));
        return Ok(());
    };
    if link.mac != Some(a.mac) {
        problems.push(format!(
            "interface {} has MAC {}, attached with {}",
            a.ifname,
            link.mac.map(|m| fmt_mac(&m)).unwrap_or_default(),
            fmt_mac(&a.mac)
        ));
    }
    // An IPv6-only network's endpoint has no IPv4 address or route to check.
    let Some(ip) = a.ipv4() else {
        return check_inside6(&inside, net, a, link.index, default_route, problems).await;
    };
    let want = Ipv4Network::new(ip, net.prefix_for(ip))?;
    let has_addr = inside
        .ipv4_addrs()
        .await?
        .iter()
        .any(|(i, n)| *i == link.index && *n == want);
    if !has_addr {
        problems.push(format!("interface {} lacks address {want}", a.ifname));
    }
    if let (true, false, Some(gw)) = (default_route, net.internal, net.gateway_for(ip)) {
        match inside.default_gateway().await? {
            Some(g) if g == gw => {}
            Some(g) => problems.push(format!("the default route is via {g}, not {gw}")),
            None => problems.push(format!("the default route via {gw} is missing")),
        }
    }
    check_inside6(&inside, net, a, link.index, default_route, problems).await
}

/// The IPv6 side of `check_inside`: the endpoint's address and default route.
async fn check_inside6(
    inside: &Netlink,
    net: &Network,
    a: &Attachment,
    index: u32,
    default_route: bool,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(ip6) = a.ip6 else {
        return Ok(());
    };
    let has_addr6 = inside
        .ipv6_addrs_of_links()
        .await?
        .iter()
        .any(|(i, ip)| *i == index && *ip == ip6);
    if !has_addr6 {
        problems.push(format!("interface {} lacks address {ip6}", a.ifname));
    }
    if let (true, false, Some(gw6)) = (default_route, net.internal, net.gateway6()) {
        match inside.default_gateway6().await? {
            Some(g) if g == gw6 => {}
            Some(g) => problems.push(format!("the IPv6 default route is via {g}, not {gw6}")),
            None => problems.push(format!("the IPv6 default route via {gw6} is missing")),
        }
    }
    Ok(())
}
