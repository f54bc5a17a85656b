//! netd's own endpoints (`/netd/*`): run, stats, conntrack.
use axum::{
    extract::{Query, State},
    http::StatusCode,
};

use super::{containers::inspect_of, types::ContainerInspect, types::Flushed, ApiJson, Json, D, Q};
use crate::{
    daemon::{ConntrackRow, Stats},
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

pub async fn conntrack(State(d): D) -> Result<Json<Vec<ConntrackRow>>, NetdError> {
    Ok(Json(d.conntrack().await?))
}

pub async fn flush_conntrack(State(d): D, Query(q): Q) -> Result<Json<Flushed>, NetdError> {
    Ok(Json(Flushed {
        removed: d
            .flush_conntrack(q.get("proto").map(String::as_str))
            .await?,
    }))
}
