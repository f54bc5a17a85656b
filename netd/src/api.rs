//! The HTTP/JSON API, with Docker Engine API paths and shapes where Docker has them.
use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use serde_json::{json, Value};

use crate::{
    daemon::Daemon,
    error::NetdError,
    model::{fmt_mac, Container, RunRequest},
};

pub const API_VERSION: &str = "1.41";

impl IntoResponse for NetdError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(json!({ "message": self.to_string() }))).into_response()
    }
}

type D = State<Arc<Daemon>>;

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/_ping", get(|| async { "OK" }))
        .route("/version", get(version))
        .route("/containers/json", get(list_containers))
        .route("/containers/{id}/json", get(inspect_container))
        .route("/containers/{id}", delete(remove_container))
        .route("/networks", get(list_networks))
        .route("/netd/run", post(run))
        .route("/netd/stats", get(stats))
        .route("/netd/conntrack", get(conntrack).delete(flush_conntrack))
        .route("/containers/{id}/logs", get(logs))
        .with_state(d)
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

/// A container in the shape of Docker's `GET /containers/json`.
pub fn container_json(c: &Container) -> Value {
    let ports: Vec<Value> = c
        .ports
        .iter()
        .map(|p| {
            json!({"IP": p.host_ip.to_string(), "PrivatePort": p.container_port,
                   "PublicPort": p.host_port, "Type": p.proto.to_string()})
        })
        .collect();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Command": c.cmd.join(" "),
        "Created": c.created,
        "State": c.state.to_string(),
        "Status": match c.exit_code { Some(code) => format!("Exited ({code})"), None => c.state.to_string() },
        "Ports": ports,
        "NetworkSettings": {"Networks": {"bridge": {
            "IPAddress": c.ip.to_string(), "MacAddress": fmt_mac(&c.mac), "NetworkID": c.network}}},
        "Netns": format!("/run/netns/{}", c.netns),
        "Pid": c.pid,
        "HostVeth": c.veth,
    })
}

async fn list_containers(State(d): D, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let all = q.get("all").is_some_and(|v| v == "1" || v == "true");
    let v: Vec<Value> = d
        .containers()
        .await
        .iter()
        .filter(|c| all || c.state == crate::model::ContainerState::Running)
        .map(container_json)
        .collect();
    Json(Value::Array(v))
}

async fn inspect_container(State(d): D, Path(id): Path<String>) -> Result<Json<Value>, NetdError> {
    Ok(Json(container_json(&d.container(&id).await?)))
}

async fn remove_container(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, NetdError> {
    let force = q.get("force").is_some_and(|v| v == "1" || v == "true");
    d.remove(&id, force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_networks(State(d): D) -> Json<Value> {
    let v: Vec<Value> = d
        .networks()
        .await
        .iter()
        .map(|n| {
            json!({"Name": n.name, "Id": n.id, "Driver": "bridge", "Scope": "local",
               "IPAM": {"Driver": "default", "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}]},
               "Options": {"com.docker.network.bridge.name": n.bridge}})
        })
        .collect();
    Json(Value::Array(v))
}

async fn run(
    State(d): D,
    Json(req): Json<RunRequest>,
) -> Result<(StatusCode, Json<Value>), NetdError> {
    let c = d.run(req).await?;
    Ok((StatusCode::CREATED, Json(container_json(&c))))
}

async fn stats(State(d): D) -> Json<Value> {
    Json(d.stats().await)
}

async fn conntrack(State(d): D) -> Json<Value> {
    Json(d.conntrack().await)
}

async fn flush_conntrack(
    State(d): D,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, NetdError> {
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
    Ok(Json(json!({ "removed": d.flush_conntrack(proto).await })))
}

async fn logs(State(d): D, Path(id): Path<String>) -> Result<String, NetdError> {
    let c = d.container(&id).await?;
    Ok(std::fs::read_to_string(d.log_path(&c.id)).unwrap_or_default())
}
