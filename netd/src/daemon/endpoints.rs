//! Endpoints: namespaces a container runtime made (CNI's CNI_NETNS; Docker's sandboxes,
//! see `docker`), attached to a netd network through the same sandbox seam as
//! `netd run`. Each is stored as a container record of origin CNI, keyed by the
//! runtime's (container id, interface name): it survives daemon restarts, `netd ps`
//! shows it, and netd never deletes its namespace nor kills its processes.
mod check;
mod docker;

pub use docker::{DockerEndpoint, DockerJoin, DockerNetwork};

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::{containers::prepare_ports, not_found_net, now, owned::Kind, random_id, txn};
use super::{Daemon, Inner};
use crate::{
    error::{NetdError, Result},
    model::{fmt_mac, Container, ContainerState, NetMode, Network, Origin, PortMapping},
    netlink::Netlink,
    netns,
    sandbox::{self, AttachOptions},
    store::State,
};

/// POST /netd/endpoints: attach the runtime's namespace `netns` to `network` as
/// interface `ifname`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointRequest {
    /// The runtime's id of the container (CNI_CONTAINERID).
    pub container_id: String,
    /// The interface inside the namespace (CNI_IFNAME).
    pub ifname: String,
    /// The namespace, an absolute path (CNI_NETNS).
    pub netns: String,
    /// A netd network, by name or id.
    pub network: String,
    /// A static address (the `ips` capability); else IPAM picks one.
    pub ip: Option<Ipv4Addr>,
    /// A static MAC, "aa:bb:cc:dd:ee:ff" (the `mac` capability); else Docker's scheme.
    pub mac: Option<String>,
    pub port_mappings: Vec<PortMapping>,
    /// Names of the endpoint on its network (recorded for netd's DNS).
    pub aliases: Vec<String>,
}

/// A route inside the namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Network,
    pub gw: Option<Ipv4Addr>,
}

/// An endpoint: what a runtime needs to report the attachment (a CNI result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// netd's record of it (the NAMES column of `netd ps`).
    pub container: String,
    pub network: String,
    pub network_id: String,
    /// The address with the network's prefix length.
    pub address: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The host side: the veth on the network's bridge.
    pub host_veth: String,
    pub bridge: String,
    pub bridge_mac: String,
    pub routes: Vec<Route>,
    pub port_mappings: Vec<PortMapping>,
    pub aliases: Vec<String>,
}

/// One attachment a runtime still wants (CNI's `cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointKey {
    pub container_id: String,
    pub ifname: String,
}

/// POST /netd/endpoints/gc: remove the endpoints of `network` not in `keep`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GcRequest {
    pub network: String,
    pub keep: Vec<EndpointKey>,
}

/// Parses "aa:bb:cc:dd:ee:ff" (or with '-'): a unicast MAC.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || NetdError::InvalidArgument(format!("invalid MAC address {s:?}"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(NetdError::InvalidArgument(format!(
            "MAC address {s} is a multicast address: an interface needs a unicast one"
        )));
    }
    Ok(mac)
}

/// The checks of a request that need no state: one error naming the field.
fn validate(req: &EndpointRequest) -> Result<()> {
    let bad = |m: String| Err(NetdError::InvalidArgument(m));
    let id_ok = req
        .container_id
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && req
            .container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !id_ok {
        return bad(format!(
            "invalid container id {:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]* expected",
            req.container_id
        ));
    }
    // The kernel's rule for interface names (dev_valid_name).
    let ifname_ok = !req.ifname.is_empty()
        && req.ifname.len() <= 15
        && req.ifname != "."
        && req.ifname != ".."
        && !req
            .ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !ifname_ok {
        return bad(format!(
            "invalid interface name {:?}: 1-15 characters without '/', ':' or spaces",
            req.ifname
        ));
    }
    if !req.netns.starts_with('/') {
        return bad(format!(
            "invalid network namespace {:?}: an absolute path expected",
            req.netns
        ));
    }
    if req.network.is_empty() {
        return bad("no network given".into());
    }
    Ok(())
}

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
    let prefix = net.subnet.map(|s| s.prefix()).unwrap_or(32);
    let routes = match net.gateway {
        Some(gw) if c.default_route_on(0) && !net.internal => vec![Route {
            dst: Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).ok()?,
            gw: Some(gw),
        }],
        _ => Vec::new(),
    };
    Some(Endpoint {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        netns: c.netns.clone().unwrap_or_default(),
        container: c.name.clone(),
        network: net.name.clone(),
        network_id: net.id.clone(),
        address: Ipv4Network::new(a.ip, prefix).ok()?,
        gateway: net.gateway,
        mac: fmt_mac(&a.mac),
        mtu: net.mtu,
        host_veth: a.veth.clone(),
        bridge: net.bridge.clone(),
        bridge_mac: fmt_mac(&net.bridge_mac),
        routes,
        port_mappings: c.ports.clone(),
        aliases: a.aliases.clone(),
    })
}

impl Daemon {
    /// Attaches a runtime's namespace (see the module doc). A second attachment with the
    /// same (container id, interface) is a conflict: the runtime removes the first.
    pub async fn add_endpoint(&self, mut req: EndpointRequest) -> Result<Endpoint> {
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
        if let Some(c) = find(&inner.state, &req.container_id, &req.ifname) {
            return Err(NetdError::Conflict(format!(
                "container {} already has interface {} on netd (record {}): remove it first",
                req.container_id, req.ifname, c.name
            )));
        }
        let net = inner
            .state
            .network(&req.network)
            .cloned()
            .ok_or_else(|| not_found_net(&req.network))?;
        if !net.is_bridge() {
            return Err(NetdError::InvalidArgument(format!(
                "network {} (driver {}) takes no endpoints: use a bridge network",
                net.name, net.driver
            )));
        }
        let inside = Netlink::in_netns(&req.netns)?;
        if inside.link_by_name(&req.ifname).await?.is_some() {
            return Err(NetdError::Conflict(format!(
                "interface {} already exists in network namespace {}",
                req.ifname, req.netns
            )));
        }
        prepare_ports(
            &inner.state,
            Some(&net),
            &mut req.port_mappings,
            self.args.snat_port_range,
        )?;
        // The runtime's first netd interface in a namespace carries its default route;
        // a second one (another network) would clash with it.
        let default_route = !inner
            .state
            .containers
            .iter()
            .any(|c| cni_key(c).is_some() && c.netns.as_deref() == Some(req.netns.as_str()));
        let id = random_id();
        let opts = AttachOptions {
            ip: req.ip,
            ifname: Some(req.ifname.clone()),
            aliases: req.aliases.clone(),
            // CNI results carry IPv4 only: a dual-stack network's IPv6 is not given.
            ipv4_only: true,
            ..Default::default()
        };
        let mut att = sandbox::plan(&inner.state, &net, &id, &[], opts, &self.args.veth_prefix)?;
        if let Some(mac) = mac {
            att.mac = mac;
        }
        let c = Container {
            name: record_name(&inner.state, &req.container_id, &req.ifname, &id),
            id,
            hostname: None,
            mode: NetMode::Bridge,
            netns: Some(req.netns.clone()),
            attachments: vec![att],
            ports: req.port_mappings.clone(),
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
            origin: Origin::Cni {
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                default_route,
            },
        };
        let c = txn::transact(
            inner,
            &format!(
                "attaching container {} as {} to {}",
                req.container_id, req.ifname, net.name
            ),
            "endpoint-committed",
            |state| {
                state.containers.push(c.clone());
                Ok(c)
            },
            async |inner: &mut Inner, c: &Container| {
                let mut c = c.clone();
                let ns = req.netns.as_str();
                let a = &mut c.attachments[0];
                inner.owned.claim(Kind::Link, &a.veth)?;
                sandbox::attach(&inner.nl, &mut inner.dp, ns, &net, a, default_route).await?;
                inner.record_attachment(&c.id, a)?;
                sandbox::publish(&mut inner.dp, &c.ports, a)?;
                Ok(c)
            },
            async |inner: &mut Inner, c: &Container| inner.teardown(c).await,
        )
        .await?;
        inner.sync_names();
        info!(
            "endpoint {} {} of {} on {}: {}",
            req.container_id, req.ifname, req.netns, net.name, c.attachments[0].ip
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
        inner.state.containers.retain(|x| x.id != c.id);
        inner.store.commit(&inner.state)?;
        txn::fault("endpoint-rm-committed");
        inner.teardown(&c).await;
        inner.sync_names();
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
        let stale: Vec<Container> = inner
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_container;

    fn req() -> EndpointRequest {
        EndpointRequest {
            container_id: "abc123".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            network: "bridge".into(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        assert!(validate(&req()).is_ok());
        for (r, what) in [
            (
                EndpointRequest {
                    container_id: "-x".into(),
                    ..req()
                },
                "container id",
            ),
            (
                EndpointRequest {
                    ifname: "a/b".into(),
                    ..req()
                },
                "interface name",
            ),
            (
                EndpointRequest {
                    ifname: "0123456789abcdef".into(),
                    ..req()
                },
                "interface name",
            ),
            (
                EndpointRequest {
                    netns: "x".into(),
                    ..req()
                },
                "absolute path",
            ),
        ] {
            let e = validate(&r).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn macs_parse_and_multicast_is_refused() {
        assert_eq!(
            parse_mac("c2:11:22:33:44:55").unwrap(),
            [0xc2, 0x11, 0x22, 0x33, 0x44, 0x55]
        );
        assert!(parse_mac("c2:11:22:33:44").is_err());
        assert!(parse_mac("zz:11:22:33:44:55").is_err());
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .to_string()
            .contains("multicast"));
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
        st.containers.push(c);
        assert_eq!(
            record_name(&st, "ctr1", "eth0", "0123456789"),
            "cni-ctr1-eth0-01234567"
        );
        assert!(crate::model::validate_name(&record_name(&st, "a", "e:0", "0123456789")).is_ok());
    }
}
