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
    let prefix = n.subnet.map(|s| s.prefix()).unwrap_or(32);
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
                    ipv6_address: String::new(),
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
        enable_ipv6: false,
        ipam: Ipam {
            driver: Some("default".into()),
            config: Some(if n.subnet.is_some() {
                vec![config]
            } else {
                vec![]
            }),
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
    if req.enable_ipv6 {
        return Err(NetdError::InvalidArgument(
            "IPv6 networks are not supported by netd yet".into(),
        ));
    }
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
    let mut configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(NetdError::InvalidArgument(
            "netd supports one IPv4 subnet per network".into(),
        ));
    }
    let c = configs.pop().unwrap_or_default();
    let empty = |s: Option<String>| s.filter(|x| !x.is_empty());
    let spec = NetworkSpec {
        name: req.name,
        driver: empty(req.driver),
        subnet: empty(c.subnet),
        gateway: empty(c.gateway),
        ip_range: empty(c.ip_range),
        aux_addresses: c.auxiliary_addresses.unwrap_or_default(),
        internal: req.internal,
        attachable: req.attachable,
        labels: req.labels.unwrap_or_default(),
        options: req.options.unwrap_or_default(),
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
    let ip = match ec
        .ipam_config
        .and_then(|i| i.ipv4_address)
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(
            s.parse()
                .map_err(|_| NetdError::InvalidArgument(format!("invalid IPv4 address {s:?}")))?,
        ),
        None => None,
    };
    let req = ConnectRequest {
        container: b.container,
        ip,
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
