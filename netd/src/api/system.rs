//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`: what Docker clients ask first.
use std::time::Duration;

use axum::{
    body::Body,
    extract::{Query, State},
    http::header::HeaderValue,
    response::{IntoResponse, Response},
};

use super::{
    containers::summary,
    filters::Filters,
    now, rfc3339,
    types::{Component, DiskUsage, Info, SwarmInfo, Version},
    Json, API_VERSION, D, Q,
};
use crate::{error::NetdError, model::ContainerState};

pub async fn ping() -> Response {
    let mut r = "OK".into_response();
    let h = r.headers_mut();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    r
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The architecture in Go's words (`amd64`), as Docker's /version reports it (its
/// /info reports the kernel's, `x86_64`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `uname -m`.
fn machine() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.into())
}

/// The cgroup version of the host: 2 when /sys/fs/cgroup is the unified hierarchy.
fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
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

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

pub async fn info(State(d): D) -> Json<Info> {
    let (cs, _) = d.containers().await;
    let running = cs
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .count();
    let (ncpu, mem) = nix::sys::sysinfo::sysinfo()
        .map(|s| {
            (
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                s.ram_total(),
            )
        })
        .unwrap_or((1, 0));
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    Json(Info {
        id: d.instance_id().await,
        name: hostname,
        containers: cs.len(),
        containers_running: running,
        containers_paused: 0,
        containers_stopped: cs.len() - running,
        images: 0,
        driver: "none".into(),
        driver_status: Vec::new(),
        plugins: [
            (
                "Network".to_string(),
                vec!["bridge".into(), "host".into(), "null".into()],
            ),
            ("Volume".to_string(), Vec::new()),
            ("Log".to_string(), vec!["json-file".into()]),
        ]
        .into_iter()
        .collect(),
        ipv4_forwarding: true,
        system_time: rfc3339(now()),
        logging_driver: "json-file".into(),
        cgroup_driver: "none".into(),
        cgroup_version: cgroup_version().into(),
        kernel_version: kernel_version(),
        operating_system: os_name(),
        os_type: "linux".into(),
        architecture: machine(),
        ncpu,
        mem_total: mem,
        docker_root_dir: d.state_dir().display().to_string(),
        server_version: env!("CARGO_PKG_VERSION").into(),
        swarm: SwarmInfo {
            local_node_state: "inactive".into(),
            ..Default::default()
        },
        live_restore_enabled: true,
        cluster_store: d.cluster_store().unwrap_or_default().into(),
        cluster_advertise: d.cluster_advertise().unwrap_or_default(),
        cluster_nodes: d.cluster_nodes().await,
        ..Default::default()
    })
}

/// A time as Docker's `since`/`until` take it: seconds since the epoch, possibly with
/// a fraction.
fn parse_time(k: &str, v: &str) -> Result<f64, NetdError> {
    v.parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| {
            NetdError::InvalidArgument(format!("invalid {k} {v:?}: seconds since the epoch"))
        })
}

/// `GET /events`: netd records no event history, so the stream is honestly empty; it
/// ends at `until` (Docker's behaviour), or stays open, as Docker's does, without it.
pub async fn events(Query(q): Q) -> Result<Response, NetdError> {
    Filters::parse(
        q.get("filters").map(String::as_str),
        "events",
        &[
            "config",
            "container",
            "daemon",
            "event",
            "image",
            "label",
            "network",
            "node",
            "plugin",
            "scope",
            "secret",
            "service",
            "type",
            "volume",
        ],
    )?;
    let since = q.get("since").map(|s| parse_time("since", s)).transpose()?;
    let until = q.get("until").map(|u| parse_time("until", u)).transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(NetdError::InvalidArgument(format!(
                "`since` time ({s}) cannot be after `until` time ({u})"
            )));
        }
    }
    let wait = until.map(|u| Duration::from_secs_f64((u - now() as f64).max(0.0)));
    let stream = futures::stream::once(async move {
        match wait {
            Some(w) => tokio::time::sleep(w).await,
            None => std::future::pending::<()>().await,
        }
        Ok::<_, std::io::Error>(bytes_empty())
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    Ok(r)
}

fn bytes_empty() -> Vec<u8> {
    Vec::new()
}

pub async fn df(State(d): D) -> Json<DiskUsage> {
    let (cs, nets) = d.containers().await;
    let now = now();
    Json(DiskUsage {
        containers: cs.iter().map(|c| summary(c, &nets, &cs, now)).collect(),
        ..Default::default()
    })
}
