//! Prometheus metrics: `netd daemon --metrics-addr ADDR:PORT` serves
//! `http://ADDR:PORT/metrics` in Prometheus' text format (version 0.0.4).
//!
//! - `instruments`: what the agent measures as it goes (API latency, DNS queries,
//!   answers and their latency), in a registry of the process. It depends on nothing of
//!   the agent's, so the DNS server below the daemon counts into it without an import
//!   circle (this module's scrape reads the daemon).
//! - `scrape`: what each scrape reads: the datapath's counters and conntrack through
//!   handles of its own on the pinned maps (never under the daemon's lock), the state's
//!   networks, containers and published ports (a brief count under the lock), and the
//!   agent's restarts.
//! - the standard `process_*` families (resident memory, CPU, file descriptors, start
//!   time) from the process collector.
//!
//! Names follow Prometheus' conventions: `netd_` prefix, base units (seconds, bytes),
//! `_total` for counters.
pub mod instruments;
mod scrape;

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context;
use log::{info, warn};
use prometheus::{Encoder, TextEncoder};

pub use instruments::api_latency;

use crate::{daemon::Daemon, datapath::Readings};

/// The file under the state directory that counts the agent's starts.
pub const STARTS_FILE: &str = "starts";

/// Counts this start of the agent on `state_dir`; returns how many starts came before
/// (the restarts). Kept in a file of its own (one decimal number), so it survives
/// crashes, upgrades and reboots as the state does.
pub fn count_start(state_dir: &Path) -> u64 {
    let path = state_dir.join(STARTS_FILE);
    let before: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let tmp = state_dir.join(format!("{STARTS_FILE}.tmp"));
    let written = std::fs::write(&tmp, format!("{}\n", before + 1))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        warn!("counting this start in {}: {e}", path.display());
    }
    before
}

struct Endpoint {
    daemon: Arc<Daemon>,
    readings: Readings,
    restarts: u64,
    process: prometheus::process_collector::ProcessCollector,
}

/// Binds ADDR:PORT, before the daemon starts: a taken port stops the start with its
/// address, before anything is touched.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-addr {addr}"))
}

/// Serves /metrics on `listener` in the background.
pub fn serve(
    listener: tokio::net::TcpListener,
    daemon: Arc<Daemon>,
    restarts: u64,
) -> anyhow::Result<()> {
    let readings = Readings::open(daemon.bpf_dir()).context("metrics: the pinned maps")?;
    let addr = listener.local_addr()?;
    let ep = Arc::new(Endpoint {
        daemon,
        readings,
        restarts,
        process: prometheus::process_collector::ProcessCollector::for_self(),
    });
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(ep);
    info!("metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("metrics endpoint: {e}");
        }
    });
    Ok(())
}

async fn metrics(
    axum::extract::State(ep): axum::extract::State<Arc<Endpoint>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let census = ep.daemon.census().await;
    // The map reads are syscalls (a conntrack walk among them): off the runtime's
    // workers, and with the census already taken, without the daemon's lock.
    let ep2 = ep.clone();
    let gathered = tokio::task::spawn_blocking(move || gather(&ep2, &census)).await;
    match gathered {
        Ok(Ok(text)) => (
            [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Ok(Err(e)) => {
            warn!("metrics: {e:#}");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e:#}\n"),
            )
                .into_response()
        }
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e}\n"),
        )
            .into_response(),
    }
}

fn gather(ep: &Endpoint, census: &crate::daemon::Census) -> anyhow::Result<String> {
    use prometheus::core::Collector;
    let mut families = instruments::INSTRUMENTS.registry.gather();
    families.extend(scrape::datapath(&ep.readings, census)?);
    families.extend(scrape::state(census, ep.restarts)?);
    families.extend(ep.process.collect());
    // A family without series (no published port yet) is not written: the format
    // has no way to say "none", and the encoder refuses it.
    families.retain(|f| !f.get_metric().is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    Ok(String::from_utf8(out)?)
}
