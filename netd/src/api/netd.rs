//! netd's own endpoints (`/netd/*`): run, stats, conntrack, trace.
use std::collections::HashMap;

use axum::{
    body::Body,
    extract::{Query, State},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
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
    let x = d.inspect_extras(&c.id).await;
    Ok((StatusCode::CREATED, Json(inspect_of(&c, &nets, &all, x))))
}

pub async fn stats(State(d): D) -> Result<Json<Stats>, NetdError> {
    Ok(Json(d.stats().await?))
}

/// `GET /netd/conntrack[?proto=tcp|udp|icmp][&addr=IP][&port=N]`.
pub async fn conntrack(State(d): D, Query(q): Q) -> Result<Json<Vec<ConntrackRow>>, NetdError> {
    Ok(Json(d.conntrack(flow_filter(&q, "conntrack")?).await?))
}

/// `GET /netd/trace[?proto=tcp|udp|icmp][&addr=IP][&port=N]`: a JSON line per packet
/// the datapath decides on (netd::daemon::TraceItem), for as long as the client reads.
/// The datapath writes records only while some client does.
pub async fn trace(State(d): D, Query(q): Q) -> Result<Response, NetdError> {
    let reader = d.trace(flow_filter(&q, "trace")?)?;
    let stream = futures::stream::unfold(reader, |mut r| async move {
        let item = r.next().await?;
        let mut line = serde_json::to_vec(&item).ok()?;
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(line), r))
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}

/// The `proto`, `addr` and `port` query parameters of a flow listing; any other is an
/// error naming it.
fn flow_filter(q: &HashMap<String, String>, what: &str) -> Result<FlowFilter, NetdError> {
    for k in q.keys() {
        if !["proto", "addr", "port"].contains(&k.as_str()) {
            return Err(NetdError::InvalidArgument(format!(
                "invalid {what} filter {k:?} (netd knows proto, addr, port)"
            )));
        }
    }
    let bad = |k: &str, v: &str| NetdError::InvalidArgument(format!("invalid {k} {v:?}"));
    Ok(FlowFilter {
        proto: q.get("proto").map(|p| p.parse()).transpose()?,
        addr: q
            .get("addr")
            .map(|a| a.parse().map_err(|_| bad("IP address", a)))
            .transpose()?,
        port: q
            .get("port")
            .map(|p| p.parse().map_err(|_| bad("port", p)))
            .transpose()?,
    })
}

pub async fn flush_conntrack(State(d): D, Query(q): Q) -> Result<Json<Flushed>, NetdError> {
    let proto = q.get("proto").map(|p| p.parse()).transpose()?;
    Ok(Json(Flushed {
        removed: d.flush_conntrack(proto).await?,
    }))
}
