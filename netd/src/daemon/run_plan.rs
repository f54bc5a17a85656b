//! What a new container asks for, checked and planned before anything is committed:
//! its name, network mode and networks (one attachment each), published ports, links.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{not_found_container, not_found_net, now, random_id, DaemonArgs};
use crate::{
    error::{NetdError, Result},
    model::{
        self, Attachment, Container, ContainerState, EndpointRequest, NetMode, Network,
        PortMapping, RunRequest,
    },
    netlink::Netlink,
    netns, ports,
    sandbox::{self, AttachOptions},
    store::State,
};

/// The name `run` gives the new container: the one asked for (Docker's rule, unused)
/// or a made-up one.
pub(super) fn new_name(state: &State, req: &RunRequest) -> Result<String> {
    let name = match &req.name {
        Some(n) => {
            model::validate_name(n)?;
            n.clone()
        }
        None => format!("netd_{}", &random_id()[..8]),
    };
    if state.name_taken(&name) {
        return Err(NetdError::Conflict(format!(
            "container name {name:?} is already in use: remove it or pick another name"
        )));
    }
    Ok(name)
}

/// A new container's record as `req` asks: name, mode and networks checked, one
/// attachment per network planned, ports and links resolved. Nothing is made yet.
pub(super) async fn plan_container(
    state: &State,
    nl: &Netlink,
    args: &DaemonArgs,
    req: &RunRequest,
) -> Result<Container> {
    let name = new_name(state, req)?;
    let eps = req.endpoints()?;
    let (mode, nets) = resolve_networks(state, &eps)?;
    check_mode_options(req, &eps, &mode, &state.containers)?;
    model::check_ns_sysctls(&req.sysctls, model::sysctl_exists)?;
    let dns = model::DnsConfig::parse(&req.dns, &req.dns_search, &req.dns_options)?;
    let links: Vec<String> = req
        .links
        .iter()
        .chain(eps.iter().flat_map(|e| &e.links))
        .cloned()
        .collect();
    let links = resolve_links(state, &links)?;
    let id = random_id();
    let attachments = plan_attachments(state, &eps, &nets, &id, &args.veth_prefix)?;
    let ports = plan_ports(state, nl, req, &nets, &attachments, args.snat_port_range).await?;
    let netns = match &mode {
        NetMode::Bridge | NetMode::None => Some(format!("{}{}", args.netns_prefix, name)),
        NetMode::Host => None,
        NetMode::Container(t) => state
            .containers
            .iter()
            .find(|c| &c.id == t)
            .and_then(|c| c.netns.clone()),
    };
    if matches!(mode, NetMode::Bridge | NetMode::None) {
        if let Some(ns) = &netns {
            if netns::exists(ns) {
                return Err(NetdError::Conflict(format!(
                    "network namespace {ns} already exists (not made by this netd?): remove it first"
                )));
            }
        }
    }
    Ok(Container {
        id,
        name: name.clone(),
        hostname: req.hostname.clone(),
        mode,
        netns,
        attachments,
        ports,
        cmd: req.cmd.clone(),
        state: ContainerState::Created,
        pid: None,
        pid_start: None,
        exit_code: None,
        auto_remove: req.auto_remove,
        origin: model::Origin::Netd,
        created: now(),
        started: None,
        finished: None,
        labels: req.labels.clone(),
        exposed: req.exposed.clone(),
        dns,
        links,
        config: model::CreateConfig {
            network_mode: nets.first().map(|n| n.name.clone()),
            sysctls: req.sysctls.clone(),
            tty: req.tty,
            open_stdin: req.open_stdin,
            attached: req.attached,
        },
    })
}

/// Options that only a container with networks of its own can have.
pub(super) fn check_mode_options(
    req: &RunRequest,
    eps: &[EndpointRequest],
    mode: &NetMode,
    all: &[Arc<Container>],
) -> Result<()> {
    if *mode == NetMode::Bridge {
        return Ok(());
    }
    let name = model::mode_name(mode, all);
    if eps.len() > 1 {
        return Err(NetdError::InvalidArgument(format!(
            "network mode {name} cannot be combined with other networks"
        )));
    }
    if !req.ports.is_empty() {
        return Err(NetdError::InvalidArgument(format!(
            "port publishing needs a bridge network, not network mode {name}"
        )));
    }
    let e = &eps[0];
    if e.ip.is_some()
        || e.ip6.is_some()
        || !e.aliases.is_empty()
        || !e.link_local_ips.is_empty()
        || e.mac_address.is_some()
        || !e.driver_opts.is_empty()
        || e.gw_priority != 0
    {
        return Err(NetdError::InvalidArgument(format!(
            "--ip, --ip6, --alias, --link-local-ip, --mac-address, driver-opt and gw-priority need a bridge network, not network mode {name}"
        )));
    }
    // Host and container: modes use a namespace that is not the container's own.
    if !req.sysctls.is_empty() && matches!(mode, NetMode::Host | NetMode::Container(_)) {
        return Err(NetdError::InvalidArgument(format!(
            "--sysctl needs a network namespace of the container's own, not network mode {name}"
        )));
    }
    Ok(())
}

/// The networks of a new container in bridge mode, planned in the order asked:
/// addresses, interface names, MACs, host veths.
pub(super) fn plan_attachments(
    state: &State,
    eps: &[EndpointRequest],
    nets: &[Network],
    id: &str,
    veth_prefix: &str,
) -> Result<Vec<Attachment>> {
    let mut atts: Vec<Attachment> = Vec::new();
    for (e, net) in eps.iter().zip(nets) {
        let opts = AttachOptions {
            ip: e.ip,
            ip6: e.ip6,
            aliases: e.aliases.clone(),
            link_local_ips: e.link_local_ips.clone(),
            mac: e.mac_address.as_deref().map(model::parse_mac).transpose()?,
            gw_priority: e.gw_priority,
            driver_opts: e.driver_opts.clone(),
            ..Default::default()
        };
        let a = sandbox::plan(state, net, id, &atts, opts, veth_prefix)?;
        atts.push(a);
    }
    Ok(atts)
}

/// `--network`s as a mode and, in bridge mode, their networks (one per endpoint).
pub(super) fn resolve_networks(
    state: &State,
    eps: &[EndpointRequest],
) -> Result<(NetMode, Vec<Network>)> {
    let (mode, first) = resolve_mode(state, &eps[0].network)?;
    let mut nets: Vec<Network> = first.into_iter().collect();
    if mode == NetMode::Bridge {
        for e in &eps[1..] {
            match resolve_mode(state, &e.network)? {
                (NetMode::Bridge, Some(n)) => nets.push(n),
                (m, _) => {
                    return Err(NetdError::InvalidArgument(format!(
                        "network mode {} cannot be combined with other networks",
                        model::mode_name(&m, &state.containers)
                    )))
                }
            }
        }
        if let Some((_, n)) = nets
            .iter()
            .enumerate()
            .find(|(i, n)| nets[..*i].iter().any(|o| o.id == n.id))
        {
            return Err(NetdError::InvalidArgument(format!(
                "network {:?} is specified multiple times",
                n.name
            )));
        }
    }
    Ok((mode, nets))
}

/// The published ports of a new container: `req`'s `-p` specs expanded and checked
/// (`prepare_ports`) for its gateway endpoint, where Docker publishes (the
/// both-families rule looks at its IPv6 address there).
pub(super) async fn plan_ports(
    state: &State,
    nl: &Netlink,
    req: &RunRequest,
    nets: &[Network],
    attachments: &[Attachment],
    snat_port_range: (u16, u16),
) -> Result<Vec<PortMapping>> {
    let primary = model::gateways(attachments, |a| nets.iter().find(|n| n.id == a.network))
        .0
        .or((!attachments.is_empty()).then_some(0));
    let net = primary.map(|p| &nets[p]);
    let ip6 = primary.and_then(|p| attachments[p].ip6);
    let default_v4 = net.map_or(Ipv4Addr::UNSPECIFIED, |n| n.host_binding_ipv4);
    let mut ports = model::expand_specs(&req.ports, default_v4, ip6.is_some());
    if let Some(n) = net.filter(|n| !n.ipv4() && n.ipv6()) {
        only_ipv6_ports(n, &mut ports)?;
    }
    if ports.iter().any(|m| m.host_ip.is_ipv6()) {
        let local6 = nl.ipv6_addrs().await?;
        check_ipv6_ports(&ports, ip6, &local6, net)?;
    }
    prepare_ports(state, net, &mut ports, snat_port_range)?;
    Ok(ports)
}

/// An IPv6-only network's container publishes on IPv6 host addresses only: a mapping
/// without an address keeps its `[::]` half; one on an IPv4 address cannot lead there.
fn only_ipv6_ports(net: &Network, ports: &mut Vec<PortMapping>) -> Result<()> {
    if let Some(m) = ports
        .iter()
        .find(|m| m.host_ip.is_ipv4() && !m.host_ip.is_unspecified())
    {
        return Err(NetdError::InvalidArgument(format!(
            "-p {m}: network {} has no IPv4 (created with --ipv4=false)",
            net.name
        )));
    }
    ports.retain(|m| m.host_ip.is_ipv6());
    Ok(())
}

/// Docker's rules for the ports a new sandbox publishes: a mapping without a host
/// address takes the network's default one; a host port may be neither bound by a
/// process of the host namespace, nor published twice, nor published by another
/// container; host port 0 gets a free port.
pub(super) fn prepare_ports(
    state: &State,
    net: Option<&Network>,
    ports: &mut [PortMapping],
    snat_port_range: (u16, u16),
) -> Result<()> {
    if let (Some(net), Some(m)) = (net, ports.first()) {
        if !net.traits().programs {
            return Err(NetdError::InvalidArgument(format!(
                "cannot publish {}/{} on network {}: a {} network publishes no ports (its containers are reached at their own addresses)",
                m.container_port, m.proto, net.name, net.driver
            )));
        }
    }
    if let Some(net) = net {
        for m in ports.iter_mut() {
            if m.host_ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
                m.host_ip = IpAddr::V4(net.host_binding_ipv4);
            }
        }
    }
    if ports.is_empty() {
        return Ok(());
    }
    let host_sockets = ports::host_sockets();
    for (i, m) in ports.iter().enumerate() {
        if m.host_port == 0 {
            continue;
        }
        if let Some(b) = host_sockets.listening(m) {
            return Err(NetdError::Conflict(format!(
                "host port {}/{} is in use by a process in the host namespace (bound to {b})",
                m.host(),
                m.proto
            )));
        }
        if ports[..i].iter().any(|o| o.collides_with(m)) {
            return Err(NetdError::InvalidArgument(format!(
                "host port {}/{} is published twice in this request",
                m.host_port, m.proto
            )));
        }
        for c in state.publishing(m.proto, m.host_port) {
            if let Some(o) = c.ports.iter().find(|o| o.collides_with(m)) {
                return Err(NetdError::Conflict(format!(
                    "host port {}/{} is already published by container {} ({})",
                    o.host(),
                    o.proto,
                    c.name,
                    o
                )));
            }
        }
    }
    ports::assign_random(ports, state, &host_sockets, snat_port_range)
}

/// The IPv6 mappings a container may have: it needs an IPv6 address on the network it
/// is published through (`ip6`), and a specific host address must be one of the
/// host's (`local6`). Docker, whose docker-proxy could carry IPv6 to an IPv4-only
/// container, skips such a mapping with a log line when the proxy is off; netd has no
/// proxy and says so instead of publishing less than was asked.
pub(super) fn check_ipv6_ports(
    ports: &[PortMapping],
    ip6: Option<Ipv6Addr>,
    local6: &[Ipv6Addr],
    net: Option<&Network>,
) -> Result<()> {
    for m in ports.iter().filter(|m| m.host_ip.is_ipv6()) {
        if ip6.is_none() {
            let net = net.map_or("its network", |n| n.name.as_str());
            return Err(NetdError::InvalidArgument(format!(
                "cannot publish {}/{} on IPv6: the container has no IPv6 address on {net} (create the network with --ipv6, or publish on an IPv4 address)",
                m.host(),
                m.proto
            )));
        }
        if let IpAddr::V6(h) = m.host_ip {
            if !h.is_unspecified() && !local6.contains(&h) {
                return Err(NetdError::InvalidArgument(format!(
                    "cannot publish {}/{}: {h} is not an address of this host (cannot assign requested address)",
                    m.host(),
                    m.proto
                )));
            }
        }
    }
    Ok(())
}

/// `--link NAME[:ALIAS]`s as links to existing containers (by name or id).
pub(super) fn resolve_links(state: &State, specs: &[String]) -> Result<Vec<model::Link>> {
    specs
        .iter()
        .map(|spec| {
            let (name, alias) = model::parse_link(spec)?;
            let t = state.container(&name).ok_or_else(|| {
                NetdError::NotFound(format!("--link {spec}: No such container: {name}"))
            })?;
            Ok(model::Link {
                target: t.id.clone(),
                alias,
            })
        })
        .collect()
}

/// `--network VALUE` as a mode and, for bridge mode, the network.
fn resolve_mode(state: &State, value: &str) -> Result<(NetMode, Option<Network>)> {
    if let Some(target) = value.strip_prefix("container:") {
        let t = state
            .container(target)
            .ok_or_else(|| not_found_container(target))?;
        if t.netns.is_none() || t.mode == NetMode::Host {
            return Err(NetdError::InvalidArgument(format!(
                "container {} has no network namespace of its own to join",
                t.name
            )));
        }
        let id = match &t.mode {
            // Joining a joiner joins the namespace's owner.
            NetMode::Container(owner) => owner.clone(),
            _ => t.id.clone(),
        };
        return Ok((NetMode::Container(id), None));
    }
    let net = state
        .network(value)
        .cloned()
        .ok_or_else(|| not_found_net(value))?;
    Ok(match net.traits().joins {
        model::Joins::HostNamespace => (NetMode::Host, None),
        model::Joins::Nothing => (NetMode::None, None),
        model::Joins::Endpoint => (NetMode::Bridge, Some(net)),
    })
}
