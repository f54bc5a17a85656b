//! Endpoints: namespaces a container runtime made (CNI's CNI_NETNS; Docker's sandboxes,
//! see `docker`), attached to a netd network through the same sandbox seam as
//! `netd run`. Each is stored as a container record of origin CNI, keyed by the
//! runtime's (container id, interface name): it survives daemon restarts, `netd ps`
//! shows it, and netd never deletes its namespace nor kills its processes.
mod check;
mod docker;
mod request;

pub use docker::{DockerEndpoint, DockerJoin, DockerNetwork};
use request::validate;
pub use request::{parse_mac, Endpoint, EndpointKey, EndpointRequest, GcRequest, Route};

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use log::{info, warn};

use super::{
    not_found_net, now,
    owned::Kind,
    random_id,
    run_plan::{check_ipv6_ports, prepare_ports},
    txn,
};
use super::{Daemon, Inner};
use crate::{
    error::{NetdError, Result},
    model::{
        expand_specs, fmt_mac, Attachment, Container, ContainerState, NetMode, Network, Origin,
        PortMapping, PortSpec,
    },
    netlink::Netlink,
    netns,
    sandbox::{self, AttachOptions},
    store::State,
};

/// The record's name: readable in `netd ps`, unique among the containers.
fn record_name(state: &State, container_id: &str, ifname: &str, id: &str) -> String {
    // Runtime ids are often 64 hex digits: 12 are what `docker ps` shows too.
    let cid = if container_id.len() > 40 {
        &container_id[..12]
    } else {
        container_id
    };
    let ifname: String = ifname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("cni-{cid}-{ifname}");
    if state.container(&name).is_none() {
        name
    } else {
        format!("{name}-{}", &id[..8])
    }
}

fn cni_key(c: &Container) -> Option<(&str, &str)> {
    match &c.origin {
        Origin::Cni {
            container_id,
            ifname,
            ..
        } => Some((container_id, ifname)),
        Origin::Netd | Origin::Docker { .. } => None,
    }
}

fn find<'a>(state: &'a State, container_id: &str, ifname: &str) -> Option<&'a Container> {
    state
        .containers
        .iter()
        .find(|c| cni_key(c) == Some((container_id, ifname)))
        .map(|c| &**c)
}

fn not_found_endpoint(container_id: &str, ifname: &str) -> NetdError {
    NetdError::NotFound(format!(
        "no endpoint of container {container_id} with interface {ifname}"
    ))
}

/// The API's view of a record of origin CNI.
fn endpoint_of(c: &Container, nets: &[Network]) -> Option<Endpoint> {
    let (container_id, ifname) = cni_key(c)?;
    let a = c.attachments.first()?;
    let net = nets.iter().find(|n| n.id == a.network)?;
    let prefix = net.prefix_for(a.ip);
    let address6 = match (a.ip6, net.subnet6()) {
        (Some(ip6), Some(s6)) => Some(Ipv6Network::new(ip6, s6.prefix()).ok()?),
        _ => None,
    };
    let gateway6 = net.gateway6().filter(|_| address6.is_some());
    let mut routes = Vec::new();
    if c.default_route_on(0) && !net.internal {
        // The routes the bridge driver adds: a default route per family.
        let defaults = [
            (
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                net.gateway_for(a.ip).map(IpAddr::V4),
            ),
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), gateway6.map(IpAddr::V6)),
        ];
        for (any, gw) in defaults {
            if let Some(gw) = gw {
                routes.push(Route {
                    dst: IpNetwork::new(any, 0).ok()?,
                    gw: Some(gw),
                });
            }
        }
    }
    Some(Endpoint {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        netns: c.netns.clone().unwrap_or_default(),
        container: c.name.clone(),
        network: net.name.clone(),
        network_id: net.id.clone(),
        address: Ipv4Network::new(a.ip, prefix).ok()?,
        gateway: net.gateway_for(a.ip),
        address6,
        gateway6,
        mac: fmt_mac(&a.mac),
        mtu: net.mtu,
        // A driver without a host side (macvlan) has no veth or bridge to name.
        host_veth: if net.traits().bridge {
            a.veth.clone()
        } else {
            String::new()
        },
        bridge: if net.traits().bridge {
            net.bridge.clone()
        } else {
            String::new()
        },
        bridge_mac: fmt_mac(&net.bridge_mac),
        routes,
        port_mappings: c.ports.clone(),
        aliases: a.aliases.clone(),
    })
}

/// The mappings `specs` publish to attachment `a` on `net`, by `netd run`'s rules: a
/// spec without a host address on both families when `a` has IPv6; an IPv6 one needs
/// IPv6 on `a` and an address of the host.
async fn mappings_for(
    nl: &Netlink,
    net: &Network,
    a: &Attachment,
    specs: &[PortSpec],
) -> Result<Vec<PortMapping>> {
    let ports = expand_specs(specs, net.host_binding_ipv4, a.ip6.is_some());
    if ports.iter().any(|m| m.host_ip.is_ipv6()) {
        let local6 = nl.ipv6_addrs().await?;
        check_ipv6_ports(&ports, a.ip6, &local6, Some(net))?;
    }
    Ok(ports)
}

impl Daemon {
    /// Attaches a runtime's namespace (see the module doc). A second attachment with the
    /// same (container id, interface) is a conflict: the runtime removes the first.
    pub async fn add_endpoint(&self, req: EndpointRequest) -> Result<Endpoint> {
        validate(&req)?;
        let mac = req.mac.as_deref().map(parse_mac).transpose()?;
        if !netns::exists(&req.netns) {
            return Err(NetdError::NotFound(format!(
                "network namespace {} does not exist",
                req.netns
            )));
        }
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let net = endpoint_network(&inner.state, &req)?;
        let inside = Netlink::in_netns(&req.netns)?;
        if inside.link_by_name(&req.ifname).await?.is_some() {
            return Err(NetdError::Conflict(format!(
                "interface {} already exists in network namespace {}",
                req.ifname, req.netns
            )));
        }
        let default_route = first_in_netns(&inner.state, &req.netns);
        let id = random_id();
        let opts = AttachOptions {
            ip: req.ip,
            ip6: req.ip6,
            ifname: Some(req.ifname.clone()),
            aliases: req.aliases.clone(),
            ..Default::default()
        };
        let mut att = sandbox::plan(&inner.state, &net, &id, &[], opts, &self.args.veth_prefix)?;
        if let Some(mac) = mac {
            att.mac = mac;
        }
        let mut ports = mappings_for(&inner.nl, &net, &att, &req.port_mappings).await?;
        prepare_ports(
            &inner.state,
            Some(&net),
            &mut ports,
            self.args.snat_port_range,
        )?;
        let name = record_name(&inner.state, &req.container_id, &req.ifname, &id);
        let c = cni_record(&req, name, id, att, ports, default_route);
        let c = txn::transact(
            inner,
            &format!(
                "attaching container {} as {} to {}",
                req.container_id, req.ifname, net.name
            ),
            "endpoint-committed",
            |state| {
                state.containers.push(Arc::new(c.clone()));
                Ok(c)
            },
            async |inner: &mut Inner, c: &Container| {
                let mut c = c.clone();
                let ns = req.netns.as_str();
                let a = &mut c.attachments[0];
                inner.owned.claim(Kind::Link, &a.veth)?;
                let routes = (default_route, default_route);
                sandbox::attach(&inner.nl, &mut inner.dp, ns, &net, a, routes).await?;
                inner.record_attachment(&c.id, a)?;
                sandbox::publish(&mut inner.dp, &c.ports, a)?;
                Ok(c)
            },
            async |inner: &mut Inner, c: &Container| inner.teardown(c).await,
        )
        .await?;
        inner.sync_names();
        let a = &c.attachments[0];
        let ip6 = a.ip6.map(|ip| format!(" {ip}")).unwrap_or_default();
        info!(
            "endpoint {} {} of {} on {}: {}{ip6}",
            req.container_id, req.ifname, req.netns, net.name, a.ip
        );
        endpoint_of(&c, &inner.state.networks)
            .ok_or_else(|| NetdError::Internal("endpoint without attachment".into()))
    }

    /// Detaches a runtime's endpoint; Ok(false) when netd does not know it (a DEL may
    /// come twice, or after the namespace is gone).
    pub async fn remove_endpoint(&self, container_id: &str, ifname: &str) -> Result<bool> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let Some(c) = find(&inner.state, container_id, ifname).cloned() else {
            return Ok(false);
        };
        let what = format!("removing endpoint {container_id} {ifname}");
        inner
            .remove_record(&c, &what, "endpoint-rm-committed")
            .await?;
        info!("endpoint {container_id} {ifname} removed");
        Ok(true)
    }

    pub async fn endpoint(&self, container_id: &str, ifname: &str) -> Result<Endpoint> {
        let g = self.inner.lock().await;
        find(&g.state, container_id, ifname)
            .and_then(|c| endpoint_of(c, &g.state.networks))
            .ok_or_else(|| not_found_endpoint(container_id, ifname))
    }

    /// Every endpoint, or those of one network.
    pub async fn endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>> {
        let g = self.inner.lock().await;
        let net_id = match network {
            Some(n) => Some(
                g.state
                    .network(n)
                    .map(|n| n.id.clone())
                    .ok_or_else(|| not_found_net(n))?,
            ),
            None => None,
        };
        Ok(g.state
            .containers
            .iter()
            .filter_map(|c| endpoint_of(c, &g.state.networks))
            .filter(|e| net_id.as_ref().is_none_or(|id| *id == e.network_id))
            .collect())
    }

    /// Removes the endpoints of a network that the runtime no longer wants; returns
    /// the (container id, interface) of each one removed. Goes on past failures.
    pub async fn gc_endpoints(&self, req: GcRequest) -> Result<Vec<EndpointKey>> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let net = inner
            .state
            .network(&req.network)
            .cloned()
            .ok_or_else(|| not_found_net(&req.network))?;
        let stale: Vec<Arc<Container>> = inner
            .state
            .containers
            .iter()
            .filter(|c| c.attachments.first().is_some_and(|a| a.network == net.id))
            .filter(|c| {
                cni_key(c).is_some_and(|(cid, ifn)| {
                    !req.keep
                        .iter()
                        .any(|k| k.container_id == cid && k.ifname == ifn)
                })
            })
            .cloned()
            .collect();
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        inner
            .state
            .containers
            .retain(|c| !stale.iter().any(|s| s.id == c.id));
        inner.store.commit(&inner.state)?;
        let mut removed = Vec::new();
        for c in &stale {
            inner.teardown(c).await;
            inner.sync_names();
            if let Some((cid, ifn)) = cni_key(c) {
                warn!("gc of network {}: removed endpoint {cid} {ifn}", net.name);
                removed.push(EndpointKey {
                    container_id: cid.to_string(),
                    ifname: ifn.to_string(),
                });
            }
        }
        Ok(removed)
    }
}

/// Whether a runtime's new interface is its first of netd's in namespace `netns`: that
/// one carries the default route; a second one (another network) would clash with it.
fn first_in_netns(state: &State, netns: &str) -> bool {
    !state
        .containers
        .iter()
        .any(|c| cni_key(c).is_some() && c.netns.as_deref() == Some(netns))
}

/// The network a runtime's endpoint request may join: a bridge network, the
/// container's interface not already netd's, a static IPv6 address only with IPv6.
fn endpoint_network(state: &State, req: &EndpointRequest) -> Result<Network> {
    if let Some(c) = find(state, &req.container_id, &req.ifname) {
        return Err(NetdError::Conflict(format!(
            "container {} already has interface {} on netd (record {}): remove it first",
            req.container_id, req.ifname, c.name
        )));
    }
    let net = state
        .network(&req.network)
        .cloned()
        .ok_or_else(|| not_found_net(&req.network))?;
    if !net.traits().connect {
        return Err(NetdError::InvalidArgument(format!(
            "network {} (driver {}) takes no endpoints: use a bridge or macvlan network",
            net.name, net.driver
        )));
    }
    if let (Some(ip6), false) = (req.ip6, net.ipv6()) {
        return Err(NetdError::InvalidArgument(format!(
            "static IPv6 address {ip6}: network {} has no IPv6 (create it with --ipv6)",
            net.name
        )));
    }
    Ok(net)
}

/// The record of a runtime's endpoint: a container of origin CNI whose processes are
/// the runtime's.
fn cni_record(
    req: &EndpointRequest,
    name: String,
    id: String,
    att: Attachment,
    ports: Vec<PortMapping>,
    default_route: bool,
) -> Container {
    Container {
        name,
        id,
        hostname: None,
        mode: NetMode::Bridge,
        netns: Some(req.netns.clone()),
        attachments: vec![att],
        ports,
        cmd: Vec::new(),
        // Its processes are the runtime's: "running" is the attachment's state.
        state: ContainerState::Running,
        pid: None,
        pid_start: None,
        exit_code: None,
        auto_remove: false,
        created: now(),
        started: Some(now()),
        finished: None,
        labels: Default::default(),
        exposed: Vec::new(),
        dns: Default::default(),
        links: Vec::new(),
        config: Default::default(),
        origin: Origin::Cni {
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            default_route,
            netns_ino: netns::inode(&req.netns),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_container;

    #[test]
    fn a_dual_stack_endpoint_reports_both_addresses_and_default_routes() {
        let net = crate::model::test_network6();
        let mut c = test_container(&"c".repeat(64), "cni-ctr-eth0");
        c.origin = Origin::Cni {
            container_id: "ctr".into(),
            ifname: "eth0".into(),
            default_route: true,
            netns_ino: None,
        };
        c.attachments.push(crate::model::test_attachment());
        c.attachments[0].ip6 = Some("fd00:1::2".parse().unwrap());
        let ep = endpoint_of(&c, std::slice::from_ref(&net)).unwrap();
        assert_eq!(ep.address.to_string(), "10.1.0.2/24");
        assert_eq!(ep.address6.unwrap().to_string(), "fd00:1::2/64");
        assert_eq!(ep.gateway6, net.gateway6());
        let routes: Vec<String> = ep
            .routes
            .iter()
            .map(|r| format!("{} via {}", r.dst, r.gw.unwrap()))
            .collect();
        assert_eq!(routes, ["0.0.0.0/0 via 10.1.0.1", "::/0 via fd00:1::1"]);
        // The same network without IPv6: one address, one route, no IPv6 in the JSON.
        c.attachments[0].ip6 = None;
        let ep = endpoint_of(&c, std::slice::from_ref(&net)).unwrap();
        assert_eq!((ep.address6, ep.gateway6, ep.routes.len()), (None, None, 1));
        let json = serde_json::to_value(&ep).unwrap();
        assert!(json.get("address6").is_none(), "{json}");
    }

    #[test]
    fn record_names_are_short_and_unique() {
        let mut st = State::default();
        let long = "f".repeat(64);
        assert_eq!(
            record_name(&st, &long, "eth0", "0123456789"),
            "cni-ffffffffffff-eth0"
        );
        let mut c = test_container(&"x".repeat(64), "cni-ctr1-eth0");
        c.name = record_name(&st, "ctr1", "eth0", "0123456789");
        assert_eq!(c.name, "cni-ctr1-eth0");
        st.containers.push(c.into());
        assert_eq!(
            record_name(&st, "ctr1", "eth0", "0123456789"),
            "cni-ctr1-eth0-01234567"
        );
        assert!(crate::model::validate_name(&record_name(&st, "a", "e:0", "0123456789")).is_ok());
    }
}
