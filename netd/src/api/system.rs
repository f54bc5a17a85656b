//! `/_ping`, `/version`, `/system/df`: what Docker clients ask first (`/info` is in
//! `info`, `/events` in `events`).
use axum::{
    extract::State,
    http::header::HeaderValue,
    response::{IntoResponse, Response},
};

use super::{
    containers::summary,
    info::{go_arch, kernel_version},
    now,
    types::{Component, DiskUsage, Version},
    Json, API_VERSION, D,
};

pub async fn ping() -> Response {
    let mut r = "OK".into_response();
    let h = r.headers_mut();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    r
}

pub async fn version() -> Json<Version> {
    let v = env!("CARGO_PKG_VERSION").to_string();
    Json(Version {
        version: v.clone(),
        api_version: API_VERSION.into(),
        min_api_version: "1.24".into(),
        os: "linux".into(),
        arch: go_arch().into(),
        kernel_version: kernel_version(),
        git_commit: crate::version::GIT_COMMIT.into(),
        components: vec![Component {
            name: "netd".into(),
            version: v,
            details: crate::version::details()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }],
    })
}

pub async fn df(State(d): D) -> Json<DiskUsage> {
    let (cs, nets) = d.containers().await;
    let now = now();
    Json(DiskUsage {
        containers: cs.iter().map(|c| summary(c, &nets, &cs, now)).collect(),
        ..Default::default()
    })
}
