//! Docker's remote network driver calls, the core side (the wire is `plugin/`).
//!
//! A Docker network is a netd bridge network whose id is Docker's network id; a Docker
//! endpoint is a container record of origin Docker whose id is Docker's endpoint id.
//! CreateEndpoint records the address Docker's IPAM chose; Join plumbs the veth and
//! hands its container side to dockerd (`sandbox::attach_handoff`); Program/Revoke
//! ExternalConnectivity publish and unpublish; DeleteEndpoint removes the veth (not
//! Leave: dockerd moves the interface back out of the sandbox after Leave, as it does
//! for its own bridge driver). Every call is idempotent, because a restarted dockerd
//! sends what it knows again and a lost reply makes it retry.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use log::info;

use super::super::{not_found_net, now, owned::Kind, run_plan::prepare_ports, txn};
use super::super::{Daemon, Inner};
use crate::{
    error::{NetdError, Result},
    model::{
        Attachment, Container, ContainerState, NetMode, Network, NetworkSpec, Origin, PortMapping,
        PortSpec, Proto,
    },
    sandbox::{self, AttachOptions},
    store::State,
};

/// CreateNetwork, as the core needs it.
#[derive(Clone, Debug)]
pub struct DockerNetwork {
    /// Docker's network id: netd's id of the network too. Docker does not tell a
    /// driver the network's name: netd names it by the id's first 12 characters, as
    /// `docker network ls` shows ids.
    pub id: String,
    /// The pool Docker's IPAM gave the network.
    pub subnet: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// `docker network create -o`: netd's (Docker's bridge driver's) options.
    pub options: BTreeMap<String, String>,
    pub internal: bool,
    /// `--ipv6`: the IPv6 pool Docker's IPAM gave the network, and its gateway.
    pub subnet6: Option<Ipv6Network>,
    pub gateway6: Option<Ipv6Addr>,
}

/// What Join answers: the interface dockerd moves into the sandbox, and the gateways
/// (none on an internal network, so Docker sets no default route; no IPv6 one for an
/// endpoint without IPv6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerJoin {
    pub ifname: String,
    pub gateway: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
}

/// An endpoint as EndpointOperInfo reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerEndpoint {
    pub mac: [u8; 6],
    pub ports: Vec<PortMapping>,
    pub exposed: Vec<(u16, Proto)>,
}

/// Docker's ids are 64 hex digits; anything else is a caller that is not dockerd.
fn check_id(what: &str, id: &str) -> Result<()> {
    if id.len() >= 12 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(NetdError::InvalidArgument(format!(
            "invalid {what} id {id:?}: Docker's ids are hexadecimal"
        )))
    }
}

fn find<'a>(state: &'a State, endpoint_id: &str) -> Option<&'a Container> {
    state
        .containers
        .iter()
        .find(|c| c.id == endpoint_id && c.handed_off())
        .map(|c| &**c)
}

fn not_found_endpoint(endpoint_id: &str) -> NetdError {
    NetdError::NotFound(format!("endpoint {endpoint_id} not found"))
}

/// The record's name in `netd ps`: `docker-` and the endpoint id as `docker ps` shortens
/// ids.
fn record_name(state: &State, endpoint_id: &str) -> String {
    let name = format!("docker-{}", &endpoint_id[..12]);
    if state.container(&name).is_none() {
        name
    } else {
        format!("docker-{endpoint_id}")
    }
}

impl Daemon {
    /// CreateNetwork. A repeat with the same pool is a no-op (dockerd restarted).
    pub async fn docker_create_network(&self, n: DockerNetwork) -> Result<()> {
        check_id("network", &n.id)?;
        {
            let g = self.inner.lock().await;
            if let Some(have) = g.state.network_by_id(&n.id) {
                if have.subnet4() == Some(n.subnet) && have.subnet6() == n.subnet6 {
                    return Ok(());
                }
                let show = |v4: Option<Ipv4Network>, v6: Option<Ipv6Network>| {
                    v4.map(|s| s.to_string())
                        .into_iter()
                        .chain(v6.map(|s| s.to_string()))
                        .collect::<Vec<_>>()
                        .join(" and ")
                };
                return Err(NetdError::Conflict(format!(
                    "network {} already exists with subnet {}, not {}",
                    n.id,
                    show(have.subnet4(), have.subnet6()),
                    show(Some(n.subnet), n.subnet6)
                )));
            }
        }
        let spec = NetworkSpec {
            name: n.id[..12].to_string(),
            driver: None,
            subnet: Some(n.subnet.to_string()),
            gateway: n.gateway.map(|g| g.to_string()),
            ip_range: None,
            aux_addresses: n
                .aux_addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            internal: n.internal,
            attachable: true,
            labels: BTreeMap::new(),
            options: n.options.clone(),
            ipv6: n.subnet6.is_some(),
            subnet6: n.subnet6.map(|s| s.to_string()),
            gateway6: n.gateway6.map(|g| g.to_string()),
            ip_range6: None,
            ..Default::default()
        };
        let (net, _) = self.create_network_as(spec, n.id.clone()).await?;
        info!("docker network {} is {}", n.id, net.name);
        Ok(())
    }

    /// DeleteNetwork; Ok when netd does not know the network (any more).
    pub async fn docker_delete_network(&self, id: &str) -> Result<()> {
        let known = self.inner.lock().await.state.network_by_id(id).is_some();
        if known {
            self.remove_network(id).await?;
        }
        Ok(())
    }

    /// CreateEndpoint: records the endpoint with the addresses Docker's IPAM chose
    /// (`ip6` on a network with IPv6) and the MAC Docker gave (else Docker's own 02:42
    /// scheme); returns the MAC. Nothing is plumbed before Join.
    pub async fn docker_create_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
        mac: Option<[u8; 6]>,
    ) -> Result<[u8; 6]> {
        check_id("endpoint", endpoint_id)?;
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        if let Some(c) = find(&inner.state, endpoint_id) {
            return match c.attachments.first() {
                Some(a) if a.network == network_id && a.ip == ip && a.ip6 == ip6 => Ok(a.mac),
                _ => Err(NetdError::Conflict(format!(
                    "endpoint {endpoint_id} already exists with another network or address"
                ))),
            };
        }
        let net = inner
            .state
            .network_by_id(network_id)
            .cloned()
            .ok_or_else(|| not_found_net(network_id))?;
        if let (Some(ip6), false) = (ip6, net.ipv6()) {
            return Err(NetdError::InvalidArgument(format!(
                "endpoint IPv6 address {ip6}: network {} has no IPv6",
                net.name
            )));
        }
        let opts = AttachOptions {
            ip: Some(ip),
            ip6,
            // Docker configures the sandbox with the addresses its IPAM gave: without
            // an IPv6 one, netd must not pick one Docker never sets.
            ipv4_only: ip6.is_none(),
            ..Default::default()
        };
        let mut att = sandbox::plan(
            &inner.state,
            &net,
            endpoint_id,
            &[],
            opts,
            &self.args.veth_prefix,
        )?;
        att.ifname = sandbox::handoff_name(&att.veth);
        if let Some(mac) = mac {
            att.mac = mac;
        }
        let mac = att.mac;
        let c = docker_record(endpoint_id, record_name(&inner.state, endpoint_id), att);
        inner.state.containers.push(Arc::new(c));
        if let Err(e) = inner.store.commit(&inner.state) {
            inner.state.containers.retain(|c| c.id != endpoint_id);
            return Err(e.into());
        }
        let ip6 = ip6.map(|ip| format!(" {ip}")).unwrap_or_default();
        info!("docker endpoint {endpoint_id} on {}: {ip}{ip6}", net.name);
        Ok(mac)
    }

    /// Join: plumbs the endpoint's veth, the container side handed to dockerd. A
    /// repeat while the container side still waits in this namespace gets the same
    /// answer; one after dockerd took it gets a new veth.
    pub async fn docker_join(&self, endpoint_id: &str, sandbox_key: &str) -> Result<DockerJoin> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let c = find(&inner.state, endpoint_id)
            .cloned()
            .ok_or_else(|| not_found_endpoint(endpoint_id))?;
        let Some(a) = c.attachments.first().cloned() else {
            return Err(NetdError::Internal(format!("record {} is empty", c.name)));
        };
        let net = inner
            .state
            .network_by_id(&a.network)
            .cloned()
            .ok_or_else(|| not_found_net(&a.network))?;
        let reply = DockerJoin {
            ifname: a.ifname.clone(),
            gateway: net.gateway_for(a.ip).filter(|_| !net.internal),
            gateway6: net.gateway6().filter(|_| !net.internal && a.ip6.is_some()),
        };
        if a.host_ifindex != 0 {
            if inner.nl.link_by_name(&a.ifname).await?.is_some() {
                return Ok(reply);
            }
            inner.detach(&c, &a).await;
        }
        let key = sandbox_key.to_string();
        txn::transact(
            inner,
            &format!("joining docker endpoint {endpoint_id} to {}", net.name),
            "docker-join-committed",
            |state| {
                let m = state
                    .container_mut(endpoint_id)
                    .ok_or_else(|| not_found_endpoint(endpoint_id))?;
                m.state = ContainerState::Running;
                m.started = Some(now());
                m.origin = Origin::Docker {
                    sandbox_key: Some(key),
                };
                m.attachments[0].host_ifindex = 0;
                Ok(m.clone())
            },
            async |inner: &mut Inner, c: &Container| {
                let mut a = c.attachments[0].clone();
                inner.owned.claim(Kind::Link, &a.veth)?;
                sandbox::attach_handoff(&inner.nl, &mut inner.dp, &net, &mut a).await?;
                inner.record_attachment(&c.id, &a)?;
                Ok(())
            },
            async |inner: &mut Inner, c: &Container| inner.teardown(c).await,
        )
        .await?;
        info!(
            "docker endpoint {endpoint_id} joined {sandbox_key} through {}",
            a.ifname
        );
        Ok(reply)
    }

    /// Leave: unpublishes the endpoint's ports. The veth stays until DeleteEndpoint,
    /// because dockerd moves the interface back out of the sandbox after Leave.
    pub async fn docker_leave(&self, endpoint_id: &str) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let Some(c) = find(&inner.state, endpoint_id).cloned() else {
            return Ok(());
        };
        if let Some(m) = inner.state.container_mut(endpoint_id) {
            m.state = ContainerState::Created;
            m.finished = Some(now());
            m.ports.clear();
            m.exposed.clear();
        }
        inner.store.commit(&inner.state)?;
        sandbox::unpublish(&mut inner.dp, &c.ports);
        Ok(())
    }

    /// DeleteEndpoint: removes the record and everything of it from the kernel; Ok
    /// when netd does not know the endpoint (any more).
    pub async fn docker_delete_endpoint(&self, endpoint_id: &str) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let Some(c) = find(&inner.state, endpoint_id).cloned() else {
            return Ok(());
        };
        inner.state.containers.retain(|x| x.id != c.id);
        inner.store.commit(&inner.state)?;
        txn::fault("docker-endpoint-rm-committed");
        inner.teardown(&c).await;
        info!("docker endpoint {endpoint_id} removed");
        Ok(())
    }

    /// ProgramExternalConnectivity: publishes `specs` (Docker's port bindings) to the
    /// joined endpoint through the port maps of both families, replacing what it
    /// published before; returns the mappings with host ports and addresses filled in.
    pub async fn docker_publish(
        &self,
        endpoint_id: &str,
        mut specs: Vec<PortSpec>,
        exposed: Vec<(u16, Proto)>,
    ) -> Result<Vec<PortMapping>> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let (c, a, net) = joined(&inner.state, endpoint_id)?;
        if a.ip6.is_none() {
            skip_ipv6(endpoint_id, &mut specs);
        }
        let mut ports = super::mappings_for(&inner.nl, &net, &a, &specs).await?;
        // Docker may list a binding twice (once per address family it resolved).
        let mut seen = Vec::new();
        ports.retain(|m| {
            let new = !seen.contains(m);
            seen.push(m.clone());
            new
        });
        // A repeat replaces this endpoint's own ports: they are no conflict.
        let mut others = inner.state.clone();
        if let Some(m) = others.container_mut(endpoint_id) {
            m.ports.clear();
        }
        prepare_ports(&others, Some(&net), &mut ports, self.args.snat_port_range)?;
        let old = c.ports.clone();
        let published = ports.clone();
        txn::transact(
            inner,
            &format!("publishing ports of docker endpoint {endpoint_id}"),
            "docker-publish-committed",
            |state| {
                let m = state
                    .container_mut(endpoint_id)
                    .ok_or_else(|| not_found_endpoint(endpoint_id))?;
                m.ports = ports;
                m.exposed = exposed;
                Ok(m.ports.clone())
            },
            async |inner: &mut Inner, ports: &Vec<PortMapping>| {
                sandbox::unpublish(&mut inner.dp, &old);
                sandbox::publish(&mut inner.dp, ports, &a)?;
                Ok(())
            },
            async |inner: &mut Inner, ports: &Vec<PortMapping>| {
                // The store has the old ports again: so has the map.
                sandbox::unpublish(&mut inner.dp, ports);
                if let Err(e) = sandbox::publish(&mut inner.dp, &old, &a) {
                    log::warn!("docker endpoint {endpoint_id}: republishing: {e:#}");
                }
            },
        )
        .await?;
        if !published.is_empty() {
            info!(
                "docker endpoint {endpoint_id}: published {}",
                published
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(published)
    }

    /// RevokeExternalConnectivity: unpublishes the endpoint's ports; Ok when there are
    /// none or netd does not know the endpoint.
    pub async fn docker_unpublish(&self, endpoint_id: &str) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let Some(c) = find(&inner.state, endpoint_id).cloned() else {
            return Ok(());
        };
        if c.ports.is_empty() {
            return Ok(());
        }
        txn::remove(
            inner,
            &format!("unpublishing the ports of docker endpoint {endpoint_id}"),
            "docker-unpublish-committed",
            |state| {
                if let Some(m) = state.container_mut(endpoint_id) {
                    m.ports.clear();
                }
                Ok(())
            },
            async |inner: &mut Inner, ()| sandbox::unpublish(&mut inner.dp, &c.ports),
        )
        .await
    }

    /// EndpointOperInfo.
    pub async fn docker_endpoint(&self, endpoint_id: &str) -> Result<DockerEndpoint> {
        let g = self.inner.lock().await;
        let c = find(&g.state, endpoint_id).ok_or_else(|| not_found_endpoint(endpoint_id))?;
        Ok(DockerEndpoint {
            mac: c.attachments.first().map(|a| a.mac).unwrap_or_default(),
            ports: c.ports.clone(),
            exposed: c.exposed.clone(),
        })
    }
}

/// The record of a Docker endpoint before Join: no namespace of netd's (dockerd's
/// sandbox takes the container side), no process.
fn docker_record(endpoint_id: &str, name: String, att: Attachment) -> Container {
    Container {
        id: endpoint_id.to_string(),
        name,
        hostname: None,
        mode: NetMode::Bridge,
        netns: None,
        attachments: vec![att],
        ports: Vec::new(),
        cmd: Vec::new(),
        state: ContainerState::Created,
        pid: None,
        pid_start: None,
        exit_code: None,
        auto_remove: false,
        created: now(),
        started: None,
        finished: None,
        labels: Default::default(),
        exposed: Vec::new(),
        origin: Origin::Docker { sandbox_key: None },
        dns: Default::default(),
        links: Vec::new(),
        config: Default::default(),
    }
}

/// A Docker endpoint that joined a sandbox: its record, attachment and network.
fn joined(state: &State, endpoint_id: &str) -> Result<(Container, Attachment, Network)> {
    let c = find(state, endpoint_id)
        .cloned()
        .ok_or_else(|| not_found_endpoint(endpoint_id))?;
    let Some(a) = c.attachments.first().cloned() else {
        return Err(NetdError::Internal(format!("record {} is empty", c.name)));
    };
    if a.host_ifindex == 0 {
        return Err(NetdError::Conflict(format!(
            "endpoint {endpoint_id} has not joined a sandbox: nothing to publish to"
        )));
    }
    let net = state
        .network_by_id(&a.network)
        .cloned()
        .ok_or_else(|| not_found_net(&a.network))?;
    Ok((c, a, net))
}

/// What Docker's bridge driver does without its proxy: an IPv6 binding of a container
/// without IPv6 is skipped with a log line.
fn skip_ipv6(endpoint_id: &str, specs: &mut Vec<PortSpec>) {
    specs.retain(|s| {
        let v6 = s.host_ip.is_some_and(|ip| ip.is_ipv6());
        if v6 {
            info!(
                "docker endpoint {endpoint_id} has no IPv6 address: not publishing {}/{} on IPv6",
                s.container_port, s.proto
            );
        }
        !v6
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_look_like_dockers() {
        assert!(check_id("network", &"ab12".repeat(16)).is_ok());
        assert!(check_id("network", "short").is_err());
        let e = check_id("endpoint", "../../etc/passwd0").unwrap_err();
        assert!(e.to_string().contains("invalid endpoint id"), "{e}");
    }

    #[test]
    fn record_names_shorten_ids_as_docker_ps_does() {
        let id = "0123456789abcdef".repeat(4);
        let st = State::default();
        assert_eq!(record_name(&st, &id), "docker-0123456789ab");
    }
}
