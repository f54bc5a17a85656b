//! netd's endpoint API, the front door of container runtimes (the CNI plugin, and any
//! runtime that speaks it; the Docker network plugin has a protocol of its own,
//! `plugin/`): attach a namespace the runtime made, detach it, list, check and
//! garbage-collect. Routes are under /netd/endpoints; the core does the work.
use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

use super::ApiJson;
use crate::{
    daemon::{Daemon, Endpoint, EndpointRequest, GcRequest},
    error::NetdError,
};

type D = State<Arc<Daemon>>;

/// The endpoint routes, merged into the API's router.
pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/netd/endpoints", get(list).post(add))
        .route("/netd/endpoints/gc", post(gc))
        .route(
            "/netd/endpoints/{container_id}/{ifname}",
            get(inspect).delete(remove),
        )
        .route("/netd/endpoints/{container_id}/{ifname}/check", get(check))
}

async fn add(
    State(d): D,
    ApiJson(req): ApiJson<EndpointRequest>,
) -> Result<(StatusCode, Json<Endpoint>), NetdError> {
    Ok((StatusCode::CREATED, Json(d.add_endpoint(req).await?)))
}

/// Idempotent: an endpoint netd does not know is already removed.
async fn remove(
    State(d): D,
    Path((container_id, ifname)): Path<(String, String)>,
) -> Result<StatusCode, NetdError> {
    d.remove_endpoint(&container_id, &ifname).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn inspect(
    State(d): D,
    Path((container_id, ifname)): Path<(String, String)>,
) -> Result<Json<Endpoint>, NetdError> {
    Ok(Json(d.endpoint(&container_id, &ifname).await?))
}

async fn list(
    State(d): D,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Endpoint>>, NetdError> {
    let network = q.get("network").map(String::as_str);
    Ok(Json(d.endpoints(network).await?))
}

async fn check(
    State(d): D,
    Path((container_id, ifname)): Path<(String, String)>,
) -> Result<Json<Value>, NetdError> {
    let problems = d.check_endpoint(&container_id, &ifname).await?;
    Ok(Json(json!({ "problems": problems })))
}

async fn gc(State(d): D, ApiJson(req): ApiJson<GcRequest>) -> Result<Json<Value>, NetdError> {
    let removed = d.gc_endpoints(req).await?;
    Ok(Json(json!({ "removed": removed })))
}
