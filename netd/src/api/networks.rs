//! `/networks`: Docker's network endpoints.
use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
};

use super::{
    filters::{bool_value, Filters},
    rfc3339,
    types::{
        ConfigReference, Ipam, IpamConfig, NetworkConnect, NetworkContainer, NetworkCreate,
        NetworkCreateResponse, NetworkResource, PrunedNetworks,
    },
    ApiJson, Json, D, Q,
};
use crate::{
    error::NetdError,
    model::{fmt_mac, ConnectRequest, Container, Network, NetworkSpec},
};

/// Stable and unique per attachment; Docker's are random, nobody parses them.
pub fn endpoint_id(container: &str, network: &str) -> String {
    format!("{}{}", &container[..32], &network[..32])
}

fn in_use(n: &Network, containers: &[Container]) -> bool {
    containers
        .iter()
        .any(|c| c.attachments.iter().any(|a| a.network == n.id))
}

pub fn network_resource(n: &Network, containers: &[Container]) -> NetworkResource {
    let mut config = IpamConfig {
        subnet: n.subnet.map(|s| s.to_string()),
        gateway: n.gateway.map(|g| g.to_string()),
        ip_range: n.ip_range.map(|r| r.to_string()),
        auxiliary_addresses: None,
    };
    if !n.aux_addresses.is_empty() {
        config.auxiliary_addresses = Some(
            n.aux_addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        );
    }
    let mut configs = Vec::new();
    if n.subnet.is_some() {
        configs.push(config);
    }
    // Docker lists the IPv6 pool after the IPv4 one.
    if let Some(s6) = n.subnet6.filter(|_| n.ipv6) {
        configs.push(IpamConfig {
            subnet: Some(s6.to_string()),
            gateway: n.gateway6.map(|g| g.to_string()),
            ip_range: n.ip_range6.map(|r| r.to_string()),
            auxiliary_addresses: None,
        });
    }
    let prefix = n.subnet.map(|s| s.prefix()).unwrap_or(32);
    let prefix6 = n.subnet6.map(|s| s.prefix()).unwrap_or(128);
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
                    ipv4_address: format!("{}/{prefix}", a.ip),
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
        enable_ipv6: n.ipv6,
        ipam: Ipam {
            driver: Some("default".into()),
            config: Some(configs),
            options: Some(BTreeMap::new()),
        },
        internal: n.internal,
        attachable: n.attachable,
        ingress: false,
        config_from: ConfigReference::default(),
        config_only: false,
        containers: members,
        options: n.options.clone(),
        labels: n.labels.clone(),
    }
}

const NETWORK_FILTERS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];

fn network_matches(n: &Network, containers: &[Container], f: &Filters) -> Result<bool, NetdError> {
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
    let ipam = req.ipam.unwrap_or_default();
    if let Some(drv) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(NetdError::InvalidArgument(format!(
            "unsupported IPAM driver {drv:?}: netd has only \"default\""
        )));
    }
    let (v4, v6) = split_families(ipam.config.unwrap_or_default())?;
    let empty = |s: Option<String>| s.filter(|x| !x.is_empty());
    let spec = NetworkSpec {
        name: req.name,
        driver: empty(req.driver),
        subnet: empty(v4.subnet),
        gateway: empty(v4.gateway),
        ip_range: empty(v4.ip_range),
        aux_addresses: v4.auxiliary_addresses.unwrap_or_default(),
        internal: req.internal,
        attachable: req.attachable,
        labels: req.labels.unwrap_or_default(),
        options: req.options.unwrap_or_default(),
        ipv6: req.enable_ipv6,
        subnet6: empty(v6.subnet),
        gateway6: empty(v6.gateway),
        ip_range6: empty(v6.ip_range),
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

/// Docker's IPAM config list as (IPv4, IPv6) entries: netd networks have at most one
/// subnet per family. An entry's family is its subnet's, else its gateway's or range's
/// (an IPv6 literal always holds a ':', an IPv4 one never).
fn split_families(configs: Vec<IpamConfig>) -> Result<(IpamConfig, IpamConfig), NetdError> {
    let (mut v4, mut v6): (Option<IpamConfig>, Option<IpamConfig>) = (None, None);
    for c in configs {
        let key = [&c.subnet, &c.gateway, &c.ip_range]
            .into_iter()
            .find_map(|v| v.as_deref().filter(|s| !s.is_empty()));
        let is_v6 = key.is_some_and(|k| k.contains(':'));
        if is_v6
            && c.auxiliary_addresses
                .as_ref()
                .is_some_and(|a| !a.is_empty())
        {
            return Err(NetdError::InvalidArgument(
                "--aux-address is supported for the IPv4 subnet only".into(),
            ));
        }
        let (slot, family) = if is_v6 {
            (&mut v6, "IPv6")
        } else {
            (&mut v4, "IPv4")
        };
        if slot.is_some() {
            return Err(NetdError::InvalidArgument(format!(
                "netd supports one IPv4 and one IPv6 subnet per network (two {family} IPAM configs given)"
            )));
        }
        *slot = Some(c);
    }
    Ok((v4.unwrap_or_default(), v6.unwrap_or_default()))
}

pub async fn remove(State(d): D, Path(id): Path<String>) -> Result<StatusCode, NetdError> {
    d.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn prune(State(d): D, Query(q): Q) -> Result<Json<PrunedNetworks>, NetdError> {
    // Docker's prune takes until= and label= filters; netd has no use for them yet, and
    // an ignored filter would prune what the user meant to keep.
    Filters::parse(q.get("filters").map(String::as_str), "network prune", &[])?;
    Ok(Json(PrunedNetworks {
        networks_deleted: d.prune_networks().await?,
    }))
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
    let req = ConnectRequest {
        container: b.container,
        ip,
        ip6,
        aliases: ec.aliases.unwrap_or_default(),
        links: ec.links.unwrap_or_default(),
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
