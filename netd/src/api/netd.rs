//! netd's own endpoints (`/netd/*`): run, stats, conntrack.
use axum::{
    extract::{Query, State},
    http::StatusCode,
};

use super::{containers::inspect_of, types::ContainerInspect, types::Flushed, ApiJson, Json, D, Q};
use crate::{
    daemon::{ConntrackRow, FlowFilter, Stats},
    error::NetdError,
    model::RunRequest,
};

pub async fn run(
    State(d): D,
    ApiJson(req): ApiJson<RunRequest>,
) -> Result<(StatusCode, Json<ContainerInspect>), NetdError> {
    let c = d.run(req).await?;
    let (c, nets, all) = d.container(&c.id).await?;
    Ok((StatusCode::CREATED, Json(inspect_of(&c, &nets, &all))))
}

pub async fn stats(State(d): D) -> Result<Json<Stats>, NetdError> {
    Ok(Json(d.stats().await?))
}

/// `GET /netd/conntrack[?proto=tcp|udp|icmp][&addr=IP][&port=N]`.
pub async fn conntrack(State(d): D, Query(q): Q) -> Result<Json<Vec<ConntrackRow>>, NetdError> {
    for k in q.keys() {
        if !["proto", "addr", "port"].contains(&k.as_str()) {
            return Err(NetdError::InvalidArgument(format!(
                "invalid conntrack filter {k:?} (netd knows proto, addr, port)"
            )));
        }
    }
    let bad = |k: &str, v: &str| NetdError::InvalidArgument(format!("invalid {k} {v:?}"));
    let filter = FlowFilter {
        proto: q.get("proto").map(|p| p.parse()).transpose()?,
        addr: q
            .get("addr")
            .map(|a| a.parse().map_err(|_| bad("IPv4 address", a)))
            .transpose()?,
        port: q
            .get("port")
            .map(|p| p.parse().map_err(|_| bad("port", p)))
            .transpose()?,
    };
    Ok(Json(d.conntrack(filter).await?))
}

pub async fn flush_conntrack(State(d): D, Query(q): Q) -> Result<Json<Flushed>, NetdError> {
    let proto = q.get("proto").map(|p| p.parse()).transpose()?;
    Ok(Json(Flushed {
        removed: d.flush_conntrack(proto).await?,
    }))
}
