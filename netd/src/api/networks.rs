//! `/networks`: Docker's network endpoints.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
};

use super::{
    filters::{bool_value, Filters},
    rfc3339,
    types::{
        ConfigReference, Ipam, IpamConfig, NetworkConnect, NetworkContainer, NetworkCreate,
        NetworkCreateResponse, NetworkResource,
    },
    ApiJson, Json, D, Q,
};
use crate::{
    error::NetdError,
    model::{self, fmt_mac, ConnectRequest, Container, Network, NetworkSpec, PoolSpec},
};

/// Stable and unique per attachment; Docker's are random, nobody parses them.
pub fn endpoint_id(container: &str, network: &str) -> String {
    format!("{}{}", &container[..32], &network[..32])
}

fn in_use(n: &Network, containers: &[Arc<Container>]) -> bool {
    containers
        .iter()
        .any(|c| c.attachments.iter().any(|a| a.network == n.id))
}

pub fn network_resource(n: &Network, containers: &[Arc<Container>]) -> NetworkResource {
    // One entry per IPv4 subnet, in order, with the aux addresses it holds.
    let mut configs: Vec<IpamConfig> = n
        .pools::<Ipv4Addr>()
        .iter()
        .map(|p| {
            let aux: BTreeMap<String, String> = n
                .aux_addresses
                .iter()
                .filter(|(_, ip)| p.subnet.contains(**ip))
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            IpamConfig {
                subnet: Some(p.subnet.to_string()),
                gateway: Some(p.gateway.to_string()),
                ip_range: p.ip_range.map(|r| r.to_string()),
                auxiliary_addresses: (!aux.is_empty()).then_some(aux),
            }
        })
        .collect();
    // Docker lists the IPv6 pool after the IPv4 ones.
    configs.extend(n.pools::<Ipv6Addr>().iter().map(|p| IpamConfig {
        subnet: Some(p.subnet.to_string()),
        gateway: Some(p.gateway.to_string()),
        ip_range: p.ip_range.map(|r| r.to_string()),
        auxiliary_addresses: None,
    }));
    let prefix6 = n.subnet6().map(|s| s.prefix()).unwrap_or(128);
    let members = containers
        .iter()
        .flat_map(|c| {
            c.attachments
                .iter()
                .filter(|a| a.network == n.id)
                .map(move |a| (c, a))
        })
        .map(|(c, a)| {
            (
                c.id.clone(),
                NetworkContainer {
                    name: c.name.clone(),
                    endpoint_id: endpoint_id(&c.id, &n.id),
                    mac_address: fmt_mac(&a.mac),
                    ipv4_address: a
                        .ipv4()
                        .map(|ip| format!("{ip}/{}", n.prefix_for(ip)))
                        .unwrap_or_default(),
                    ipv6_address: a
                        .ip6
                        .map(|ip| format!("{ip}/{prefix6}"))
                        .unwrap_or_default(),
                },
            )
        })
        .collect();
    NetworkResource {
        name: n.name.clone(),
        id: n.id.clone(),
        created: rfc3339(n.created),
        scope: n.scope().into(),
        driver: n.driver.clone(),
        enable_ipv4: n.ipv4() || !n.ipv6(),
        enable_ipv6: n.ipv6(),
        ipam: Ipam {
            driver: Some("default".into()),
            config: Some(configs),
            options: Some(n.ipam_options.clone()),
        },
        internal: n.internal,
        attachable: n.attachable,
        ingress: false,
        config_from: ConfigReference::default(),
        config_only: false,
        containers: members,
        options: options_of(n),
        labels: n.labels.clone(),
    }
}

/// A network's options as inspect shows them: as given, and for the default `bridge`
/// the whole set dockerd shows for its own (from the daemon's flags).
fn options_of(n: &Network) -> BTreeMap<String, String> {
    let mut o = n.options.clone();
    if n.builtin && n.traits().plumbing == model::Plumbing::Bridge {
        for (k, v) in [
            (
                "com.docker.network.bridge.default_bridge",
                "true".to_string(),
            ),
            (model::OPT_ICC, n.icc.to_string()),
            (model::OPT_MASQUERADE, n.masquerade.to_string()),
            (model::OPT_HOST_BINDING, n.host_binding_ipv4.to_string()),
            (model::OPT_BRIDGE_NAME, n.bridge.clone()),
            (model::OPT_MTU, n.mtu.unwrap_or(1500).to_string()),
        ] {
            o.insert(k.to_string(), v);
        }
    }
    o
}

const NETWORK_FILTERS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

fn network_matches(
    n: &Network,
    containers: &[Arc<Container>],
    f: &Filters,
) -> Result<bool, NetdError> {
    f.all(|k, v| {
        Ok(match k {
            "driver" => n.driver == v,
            // Docker's id and name filters are regular expressions.
            "id" => f.regex_match("id", &[&n.id])?,
            "name" => f.regex_match("name", &[&n.name])?,
            "scope" => v == n.scope(),
            "type" => match v {
                "builtin" => n.builtin,
                "custom" => !n.builtin,
                _ => {
                    return Err(NetdError::InvalidArgument(format!(
                        "invalid filter 'type={v}': builtin or custom"
                    )))
                }
            },
            // Every label asked for (Docker's MatchKVList), whichever value this is.
            "label" => f.labels_match("label", &n.labels),
            // Docker's rule: dangling networks are user networks without endpoints; the
            // predefined ones are never dangling.
            "dangling" => {
                let dangling = !n.builtin && !in_use(n, containers);
                dangling == bool_value(k, v)?
            }
            _ => false,
        })
    })
}

pub async fn list(State(d): D, Query(q): Q) -> Result<Json<Vec<NetworkResource>>, NetdError> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        "networks",
        NETWORK_FILTERS,
    )?;
    let (nets, containers) = d.networks().await;
    let mut out = Vec::new();
    for n in &nets {
        if network_matches(n, &containers, &f)? {
            out.push(network_resource(n, &containers));
        }
    }
    Ok(Json(out))
}

pub async fn inspect(
    State(d): D,
    Path(id): Path<String>,
) -> Result<Json<NetworkResource>, NetdError> {
    let (n, containers) = d.network(&id).await?;
    Ok(Json(network_resource(&n, &containers)))
}

pub async fn create(
    State(d): D,
    ApiJson(req): ApiJson<NetworkCreate>,
) -> Result<(StatusCode, Json<NetworkCreateResponse>), NetdError> {
    if req.ingress {
        return Err(NetdError::InvalidArgument(
            "ingress networks are a swarm feature netd does not have".into(),
        ));
    }
    check_scope(req.scope.as_deref(), req.driver.as_deref())?;
    let ipam = req.ipam.unwrap_or_default();
    if let Some(drv) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(NetdError::InvalidArgument(format!(
            "unsupported --ipam-driver {drv:?}: netd has Docker's \"default\" only"
        )));
    }
    let (v4, v6) = split_families(ipam.config.unwrap_or_default())?;
    let empty = |s: Option<String>| s.filter(|x| !x.is_empty());
    let mut v4 = v4.into_iter();
    let first = v4.next().unwrap_or_default();
    let mut aux = first.auxiliary_addresses.unwrap_or_default();
    let mut more_subnets = Vec::new();
    for c in v4 {
        aux.extend(c.auxiliary_addresses.unwrap_or_default());
        more_subnets.push(PoolSpec {
            subnet: empty(c.subnet).ok_or_else(|| {
                NetdError::InvalidArgument(
                    "every IPv4 IPAM config after the first needs a subnet".into(),
                )
            })?,
            gateway: empty(c.gateway),
            ip_range: empty(c.ip_range),
        });
    }
    let spec = NetworkSpec {
        name: req.name,
        driver: empty(req.driver),
        subnet: empty(first.subnet),
        gateway: empty(first.gateway),
        ip_range: empty(first.ip_range),
        aux_addresses: aux,
        internal: req.internal,
        attachable: req.attachable,
        labels: req.labels.unwrap_or_default(),
        options: req.options.unwrap_or_default(),
        ipv4: req.enable_ipv4,
        ipv6: req.enable_ipv6,
        subnet6: empty(v6.subnet),
        gateway6: empty(v6.gateway),
        ip_range6: empty(v6.ip_range),
        more_subnets,
        ipam_options: ipam.options.unwrap_or_default(),
    };
    let (n, warning) = d.create_network(spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkCreateResponse {
            id: n.id,
            warning: warning.unwrap_or_default(),
        }),
    ))
}

/// Docker's `--scope`, which must agree with the driver: a bridge network is `local`,
/// an overlay network `global` (cluster-wide through the cluster store). `swarm`
/// would need a Docker swarm: refused, rather than quietly made local.
fn check_scope(scope: Option<&str>, driver: Option<&str>) -> Result<(), NetdError> {
    let overlay =
        model::driver_traits(driver.unwrap_or(model::DRIVER_BRIDGE)).is_some_and(|t| t.multi_host);
    let bad = |msg: String| Err(NetdError::InvalidArgument(msg));
    match scope.unwrap_or("") {
        "" => Ok(()),
        "local" if !overlay => Ok(()),
        "global" if overlay => Ok(()),
        "local" => bad("invalid --scope local: an overlay network is cluster-wide (scope global)".into()),
        "global" => bad(
            "invalid --scope global: a bridge network is local to its host (global needs -d overlay)".into(),
        ),
        "swarm" => bad(
            "invalid --scope swarm: netd has no Docker swarm (use local, or global with -d overlay and `netd daemon --cluster-store`)".into(),
        ),
        s => bad(format!("invalid --scope {s:?}: local or global")),
    }
}

/// Docker's IPAM config list as its IPv4 entries (in order; several only for an
/// overlay network, which `plan_network` checks) and its IPv6 entry (one at most). An
/// entry's family is its subnet's, else its gateway's or range's (an IPv6 literal
/// always holds a ':', an IPv4 one never).
fn split_families(configs: Vec<IpamConfig>) -> Result<(Vec<IpamConfig>, IpamConfig), NetdError> {
    let (mut v4, mut v6): (Vec<IpamConfig>, Option<IpamConfig>) = (Vec::new(), None);
    for c in configs {
        let key = [&c.subnet, &c.gateway, &c.ip_range]
            .into_iter()
            .find_map(|v| v.as_deref().filter(|s| !s.is_empty()));
        if !key.is_some_and(|k| k.contains(':')) {
            v4.push(c);
            continue;
        }
        if c.auxiliary_addresses
            .as_ref()
            .is_some_and(|a| !a.is_empty())
        {
            return Err(NetdError::InvalidArgument(
                "--aux-address is supported for IPv4 subnets only".into(),
            ));
        }
        if v6.is_some() {
            return Err(NetdError::InvalidArgument(
                "netd supports one IPv6 subnet per network (two IPv6 IPAM configs given)".into(),
            ));
        }
        v6 = Some(c);
    }
    Ok((v4, v6.unwrap_or_default()))
}

pub async fn remove(State(d): D, Path(id): Path<String>) -> Result<StatusCode, NetdError> {
    d.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn connect(
    State(d): D,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<NetworkConnect>,
) -> Result<StatusCode, NetdError> {
    let ec = b.endpoint_config.unwrap_or_default();
    let ipam = ec.ipam_config.unwrap_or_default();
    let ip = match ipam.ipv4_address.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse()
                .map_err(|_| NetdError::InvalidArgument(format!("invalid IPv4 address {s:?}")))?,
        ),
        None => None,
    };
    let ip6 = match ipam.ipv6_address.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse()
                .map_err(|_| NetdError::InvalidArgument(format!("invalid IPv6 address {s:?}")))?,
        ),
        None => None,
    };
    let link_local_ips = ipam
        .link_local_ips
        .unwrap_or_default()
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                NetdError::InvalidArgument(format!(
                    "invalid --link-local-ip {s:?}: not an IP address"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let req = ConnectRequest {
        container: b.container,
        ip,
        ip6,
        aliases: ec.aliases.unwrap_or_default(),
        links: ec.links.unwrap_or_default(),
        link_local_ips,
        mac_address: (!ec.mac_address.is_empty()).then_some(ec.mac_address),
        driver_opts: ec.driver_opts.unwrap_or_default(),
        gw_priority: ec.gw_priority,
    };
    d.connect(&id, req).await?;
    Ok(StatusCode::OK)
}

pub async fn disconnect(
    State(d): D,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<NetworkConnect>,
) -> Result<StatusCode, NetdError> {
    d.disconnect(&id, &b.container).await?;
    Ok(StatusCode::OK)
}
