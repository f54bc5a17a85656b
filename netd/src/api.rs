//! The HTTP/JSON API, with Docker Engine API paths and shapes, so that the stock
//! `docker -H unix://... network ...` CLI can drive netd. Requests may carry Docker's
//! version prefix (`/v1.41/networks`); it is stripped before routing.
use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{header::HeaderValue, Request, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    daemon::Daemon,
    error::NetdError,
    model::{fmt_mac, mode_name, ConnectRequest, Container, Network, NetworkSpec, RunRequest},
};

/// The Docker Engine API version netd speaks (docker CLIs negotiate down to it).
pub const API_VERSION: &str = "1.41";

impl IntoResponse for NetdError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(json!({ "message": self.to_string() }))).into_response()
    }
}

type D = State<Arc<Daemon>>;
type Q = Query<HashMap<String, String>>;

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/_ping", get(ping))
        .route("/version", get(version))
        .route("/networks", get(list_networks))
        .route("/networks/create", post(create_network))
        .route("/networks/prune", post(prune_networks))
        .route(
            "/networks/{id}",
            get(inspect_network).delete(remove_network),
        )
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route("/containers/json", get(list_containers))
        .route("/containers/{id}/json", get(inspect_container))
        .route("/containers/{id}", axum::routing::delete(remove_container))
        .route("/containers/{id}/start", post(start_container))
        .route("/containers/{id}/stop", post(stop_container))
        .route("/containers/{id}/logs", get(logs))
        .route("/netd/run", post(run))
        .route("/netd/stats", get(stats))
        .route("/netd/conntrack", get(conntrack).delete(flush_conntrack))
        .merge(crate::api_endpoints::routes())
        .with_state(d)
}

/// The router behind a rewrite that drops Docker's `/vX.Y` path prefix.
pub fn service(d: Arc<Daemon>) -> axum::routing::IntoMakeService<Router> {
    let versioned = router(d).layer(axum::middleware::map_response(give_back_memory));
    Router::new()
        .fallback_service(
            tower::ServiceBuilder::new()
                .map_request(strip_version)
                .service(versioned),
        )
        .into_make_service()
}

/// After each request, hands freed heap back to the OS. A request about a container with
/// thousands of ports builds large JSON trees; glibc would otherwise keep their memory
/// in its arenas, and the agent's RSS would stay at its high-water mark.
async fn give_back_memory(r: Response) -> Response {
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe { libc::malloc_trim(0) };
    r
}

fn strip_version(mut req: Request<Body>) -> Request<Body> {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            if rest[..slash]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
                && slash > 0
            {
                let new_path = rest[slash..].to_string();
                let pq = match req.uri().query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req
}

async fn ping() -> Response {
    let mut r = "OK".into_response();
    let h = r.headers_mut();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    r
}

async fn version() -> Json<Value> {
    Json(json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.24",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "Components": [{"Name": "netd", "Version": env!("CARGO_PKG_VERSION")}],
    }))
}

/// Seconds since the epoch as RFC 3339 (UTC), as Docker prints creation times.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn endpoint_id(container: &str, network: &str) -> String {
    // Stable and unique per attachment; Docker's are random, nobody parses them.
    format!("{}{}", &container[..32], &network[..32])
}

pub fn network_json(n: &Network, containers: &[Container]) -> Value {
    let mut config = Map::new();
    if let Some(s) = n.subnet {
        config.insert("Subnet".into(), s.to_string().into());
    }
    if let Some(g) = n.gateway {
        config.insert("Gateway".into(), g.to_string().into());
    }
    if let Some(r) = n.ip_range {
        config.insert("IPRange".into(), r.to_string().into());
    }
    if !n.aux_addresses.is_empty() {
        let aux: Map<String, Value> = n
            .aux_addresses
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string().into()))
            .collect();
        config.insert("AuxiliaryAddresses".into(), aux.into());
    }
    let prefix = n.subnet.map(|s| s.prefix()).unwrap_or(32);
    let members: Map<String, Value> = containers
        .iter()
        .flat_map(|c| c.attachments.iter().filter(|a| a.network == n.id).map(move |a| (c, a)))
        .map(|(c, a)| {
            (
                c.id.clone(),
                json!({"Name": c.name, "EndpointID": endpoint_id(&c.id, &n.id), "MacAddress": fmt_mac(&a.mac),
                       "IPv4Address": format!("{}/{prefix}", a.ip), "IPv6Address": ""}),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": if config.is_empty() { vec![] } else { vec![Value::Object(config)] }},
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": members,
        "Options": n.options,
        "Labels": n.labels,
    })
}

/// Docker's `filters` query parameter: `{"name":{"x":true}}` or the older `{"name":["x"]}`.
fn parse_filters(q: &HashMap<String, String>) -> Result<HashMap<String, Vec<String>>, NetdError> {
    let Some(raw) = q.get("filters") else {
        return Ok(HashMap::new());
    };
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| NetdError::InvalidArgument(format!("invalid filters {raw:?}: {e}")))?;
    let mut out = HashMap::new();
    if let Value::Object(m) = v {
        for (k, vals) in m {
            let list = match vals {
                Value::Object(o) => o
                    .into_iter()
                    .filter(|(_, b)| b.as_bool().unwrap_or(false))
                    .map(|(s, _)| s)
                    .collect(),
                Value::Array(a) => a
                    .into_iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            out.insert(k, list);
        }
    }
    Ok(out)
}

fn network_matches(n: &Network, f: &HashMap<String, Vec<String>>) -> Result<bool, NetdError> {
    for (k, vals) in f {
        let ok = match k.as_str() {
            "driver" => vals.contains(&n.driver),
            "id" => vals.iter().any(|v| n.id.starts_with(v.as_str())),
            "name" => vals.iter().any(|v| n.name.contains(v.as_str())),
            "scope" => vals.iter().any(|v| v == "local"),
            "type" => vals.iter().any(|v| match v.as_str() {
                "builtin" => n.builtin,
                "custom" => !n.builtin,
                _ => false,
            }),
            "label" => vals.iter().any(|v| match v.split_once('=') {
                Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
                None => n.labels.contains_key(v),
            }),
            "dangling" => true,
            other => {
                return Err(NetdError::InvalidArgument(format!(
                    "invalid filter {other:?} (netd filters networks by driver, id, label, name, scope and type)"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list_networks(State(d): D, Query(q): Q) -> Result<Json<Value>, NetdError> {
    let f = parse_filters(&q)?;
    let (nets, containers) = d.networks().await;
    let mut out = Vec::new();
    for n in &nets {
        if network_matches(n, &f)? {
            out.push(network_json(n, &containers));
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn inspect_network(State(d): D, Path(id): Path<String>) -> Result<Json<Value>, NetdError> {
    let (n, containers) = d.network(&id).await?;
    Ok(Json(network_json(&n, &containers)))
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct IpamConfig {
    subnet: Option<String>,
    gateway: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
    auxiliary_addresses: Option<HashMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Ipam {
    driver: Option<String>,
    config: Option<Vec<IpamConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct CreateNetwork {
    name: String,
    driver: Option<String>,
    internal: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    ingress: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    options: Option<HashMap<String, String>>,
    labels: Option<HashMap<String, String>>,
}

async fn create_network(
    State(d): D,
    Json(req): Json<CreateNetwork>,
) -> Result<(StatusCode, Json<Value>), NetdError> {
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
        aux_addresses: c
            .auxiliary_addresses
            .unwrap_or_default()
            .into_iter()
            .collect(),
        internal: req.internal,
        labels: req.labels.unwrap_or_default().into_iter().collect(),
        options: req.options.unwrap_or_default().into_iter().collect(),
    };
    let n = d.create_network(spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": n.id, "Warning": ""})),
    ))
}

async fn remove_network(State(d): D, Path(id): Path<String>) -> Result<StatusCode, NetdError> {
    d.remove_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune_networks(State(d): D) -> Result<Json<Value>, NetdError> {
    Ok(Json(json!({"NetworksDeleted": d.prune_networks().await?})))
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct IpamEndpoint {
    #[serde(rename = "IPv4Address")]
    ipv4_address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct EndpointConfig {
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<IpamEndpoint>,
    aliases: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointConfig>,
}

async fn connect(
    State(d): D,
    Path(id): Path<String>,
    Json(b): Json<ConnectBody>,
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
    };
    d.connect(&id, req).await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct DisconnectBody {
    container: String,
}

async fn disconnect(
    State(d): D,
    Path(id): Path<String>,
    Json(b): Json<DisconnectBody>,
) -> Result<StatusCode, NetdError> {
    d.disconnect(&id, &b.container).await?;
    Ok(StatusCode::OK)
}

/// A container in the shape of Docker's `GET /containers/json` entries, plus the
/// fields of `GET /containers/{id}/json` that concern networking.
/// With `inspect`, the shape of `GET /containers/{id}/json` (State an object, Created a
/// timestamp); otherwise that of the list entries.
pub fn container_json(c: &Container, nets: &[Network], all: &[Container], inspect: bool) -> Value {
    let ports: Vec<Value> = c
        .ports
        .iter()
        .map(|p| json!({"IP": p.host_ip.to_string(), "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.proto.to_string()}))
        .collect();
    let mut port_map = Map::new();
    for p in &c.ports {
        let e = port_map
            .entry(format!("{}/{}", p.container_port, p.proto))
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(a) = e {
            a.push(json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}));
        }
    }
    let networks: Map<String, Value> = c
        .attachments
        .iter()
        .filter_map(|a| {
            let n = nets.iter().find(|n| n.id == a.network)?;
            Some((
                n.name.clone(),
                json!({"NetworkID": n.id, "EndpointID": endpoint_id(&c.id, &n.id),
                       "IPAddress": a.ip.to_string(), "IPPrefixLen": n.subnet.map(|s| s.prefix()).unwrap_or(0),
                       "Gateway": n.gateway.map(|g| g.to_string()).unwrap_or_default(),
                       "MacAddress": fmt_mac(&a.mac), "Aliases": a.aliases, "Interface": a.ifname}),
            ))
        })
        .collect();
    let mode = mode_name(&c.mode, all);
    let netns = match &c.netns {
        // netd's own under /run/netns, or a runtime's absolute path.
        Some(n) => crate::netns::resolve(n).display().to_string(),
        // --network host: the daemon's own namespace.
        None => format!("/proc/{}/ns/net", std::process::id()),
    };
    let status = match c.exit_code {
        Some(code) => format!("Exited ({code})"),
        None => c.state.to_string(),
    };
    let (state, created) = if inspect {
        (
            json!({"Status": c.state.to_string(), "Running": c.state == crate::model::ContainerState::Running,
                   "Pid": c.pid.unwrap_or(0), "ExitCode": c.exit_code.unwrap_or(0)}),
            Value::from(rfc3339(c.created)),
        )
    } else {
        (Value::from(c.state.to_string()), Value::from(c.created))
    };
    json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Names": [format!("/{}", c.name)],
        "Image": "netd",
        "Command": c.cmd.join(" "),
        "Path": c.cmd.first().cloned().unwrap_or_default(),
        "Args": c.cmd.iter().skip(1).collect::<Vec<_>>(),
        "Created": created,
        "State": state,
        "Status": status,
        "Pid": c.pid,
        "Ports": ports,
        "Config": {"Hostname": c.hostname.clone().unwrap_or_else(|| c.id[..12].to_string()),
                   "HostnameSet": c.hostname.is_some(), "Cmd": c.cmd},
        "HostConfig": {"NetworkMode": mode, "AutoRemove": c.auto_remove},
        // The list leaves out what only inspect shows: a container with 10,000 ports
        // would otherwise cost megabytes per `ps`.
        "NetworkSettings": if inspect {
            json!({"Networks": networks, "Ports": port_map, "SandboxKey": netns})
        } else {
            json!({"Networks": networks, "SandboxKey": netns})
        },
        "Netns": netns,
        "HostVeths": c.attachments.iter().map(|a| a.veth.clone()).collect::<Vec<_>>(),
    })
}

async fn list_containers(State(d): D, Query(q): Q) -> Json<Value> {
    let all = q.get("all").is_some_and(|v| v == "1" || v == "true");
    let (cs, nets) = d.containers().await;
    let v: Vec<Value> = cs
        .iter()
        .filter(|c| all || c.state == crate::model::ContainerState::Running)
        .map(|c| container_json(c, &nets, &cs, false))
        .collect();
    Json(Value::Array(v))
}

async fn inspect_container(State(d): D, Path(id): Path<String>) -> Result<Json<Value>, NetdError> {
    let (c, nets, all) = d.container(&id).await?;
    Ok(Json(container_json(&c, &nets, &all, true)))
}

async fn remove_container(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<StatusCode, NetdError> {
    let force = q.get("force").is_some_and(|v| v == "1" || v == "true");
    d.remove(&id, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_container(State(d): D, Path(id): Path<String>) -> Result<StatusCode, NetdError> {
    d.start_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop_container(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<StatusCode, NetdError> {
    let t = q.get("t").and_then(|t| t.parse().ok()).unwrap_or(10);
    d.stop_container(&id, std::time::Duration::from_secs(t))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn run(
    State(d): D,
    Json(req): Json<RunRequest>,
) -> Result<(StatusCode, Json<Value>), NetdError> {
    let c = d.run(req).await?;
    let (c, nets, all) = d.container(&c.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(container_json(&c, &nets, &all, true)),
    ))
}

async fn stats(State(d): D) -> Result<Json<crate::daemon::Stats>, NetdError> {
    Ok(Json(d.stats().await?))
}

async fn conntrack(State(d): D) -> Result<Json<Vec<crate::daemon::ConntrackRow>>, NetdError> {
    Ok(Json(d.conntrack().await?))
}

async fn flush_conntrack(State(d): D, Query(q): Q) -> Result<Json<Value>, NetdError> {
    let proto = match q.get("proto").map(String::as_str) {
        None => None,
        Some("tcp") => Some(netd_common::IPPROTO_TCP),
        Some("udp") => Some(netd_common::IPPROTO_UDP),
        Some("icmp") => Some(netd_common::IPPROTO_ICMP),
        Some(p) => {
            return Err(NetdError::InvalidArgument(format!(
                "unknown protocol {p:?}"
            )))
        }
    };
    Ok(Json(json!({ "removed": d.flush_conntrack(proto).await? })))
}

async fn logs(State(d): D, Path(id): Path<String>) -> Result<String, NetdError> {
    let (c, _, _) = d.container(&id).await?;
    Ok(std::fs::read_to_string(d.log_path(&c.id)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn version_prefix_is_stripped() {
        let r = strip_version(
            Request::builder()
                .uri("/v1.41/networks?filters=x")
                .body(Body::empty())
                .unwrap(),
        );
        assert_eq!(r.uri().to_string(), "/networks?filters=x");
        let r = strip_version(
            Request::builder()
                .uri("/version")
                .body(Body::empty())
                .unwrap(),
        );
        assert_eq!(r.uri().to_string(), "/version");
    }

    #[test]
    fn filters_both_formats() {
        let mut q = HashMap::new();
        q.insert(
            "filters".to_string(),
            r#"{"name":{"web":true},"type":["custom"]}"#.to_string(),
        );
        let f = parse_filters(&q).unwrap();
        assert_eq!(f["name"], vec!["web".to_string()]);
        assert_eq!(f["type"], vec!["custom".to_string()]);
    }
}
