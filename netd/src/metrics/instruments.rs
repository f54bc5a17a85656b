//! What the agent measures as it goes (API latency, DNS), kept in one registry for the
//! process. Label values are resolved once: the DNS server counts every query, and a
//! lookup by label values on that path would cost more than the count.
use std::{sync::LazyLock, time::Duration};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

pub(super) struct Instruments {
    pub registry: Registry,
    api: HistogramVec,
    dns: Dns,
}

/// A DNS transport.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Where an answer came from: the embedded table (or a refusal), or an upstream.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    Local,
    Forwarded,
}

/// Response codes by their number; other codes count as "other".
const RCODES: [&str; 6] = [
    "noerror", "formerr", "servfail", "nxdomain", "notimp", "refused",
];

struct Dns {
    queries: [IntCounter; 2],
    /// [source][rcode, RCODES then "other"].
    answers: [[IntCounter; 7]; 2],
    duration: [Histogram; 2],
}

pub(super) static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    instruments().unwrap_or_else(|e| {
        // The definitions are constant: a failure here is a bug in them, seen at the
        // first test run.
        panic!("metric definitions: {e}")
    })
});

fn instruments() -> prometheus::Result<Instruments> {
    let registry = Registry::new();
    let api = HistogramVec::new(
        HistogramOpts::new(
            "netd_api_request_duration_seconds",
            "Time to answer a request of the API socket (netd's CLI, the docker CLI, netd-cni), by method, route template and status code.",
        )
        .buckets(exponential_buckets(0.000_25, 2.0, 16)?),
        &["method", "route", "code"],
    )?;
    registry.register(Box::new(api.clone()))?;
    let queries = IntCounterVec::new(
        Opts::new(
            "netd_dns_queries_total",
            "Queries the embedded DNS servers received, by transport.",
        ),
        &["transport"],
    )?;
    let answers = IntCounterVec::new(
        Opts::new(
            "netd_dns_answers_total",
            "Answers the embedded DNS servers sent, by source (local: from netd's table, or refused; forwarded: from an upstream) and response code.",
        ),
        &["source", "rcode"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "netd_dns_answer_duration_seconds",
            "Time from a query to its answer, by source (local answers exclude the wait in the socket's queue).",
        )
        .buckets(exponential_buckets(0.000_002, 4.0, 12)?),
        &["source"],
    )?;
    registry.register(Box::new(queries.clone()))?;
    registry.register(Box::new(answers.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    let sources = ["local", "forwarded"];
    let answers_of = |source: &str| -> [IntCounter; 7] {
        std::array::from_fn(|i| {
            answers.with_label_values(&[source, RCODES.get(i).unwrap_or(&"other")])
        })
    };
    let dns = Dns {
        queries: [
            queries.with_label_values(&["udp"]),
            queries.with_label_values(&["tcp"]),
        ],
        answers: [answers_of(sources[0]), answers_of(sources[1])],
        duration: [
            duration.with_label_values(&[sources[0]]),
            duration.with_label_values(&[sources[1]]),
        ],
    };
    Ok(Instruments { registry, api, dns })
}

/// Counts a query the DNS server received.
pub fn dns_query(t: Transport) {
    INSTRUMENTS.dns.queries[t as usize].inc();
}

/// Counts an answer (`answer`: the DNS message sent; empty: none sent) and its time.
pub fn dns_answer(source: Source, answer: &[u8], took: Duration) {
    let Some(flags) = answer.get(3) else {
        return;
    };
    let d = &INSTRUMENTS.dns;
    let rcode = usize::from(flags & 0x0f).min(RCODES.len());
    d.answers[source as usize][rcode].inc();
    d.duration[source as usize].observe(took.as_secs_f64());
}

/// Times every API request by its route's template (`/networks/{id}`, never the
/// name in it, so the series stay few); a route_layer, where axum knows the template.
pub async fn api_latency(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    INSTRUMENTS
        .api
        .with_label_values(&[&method, &route, resp.status().as_str()])
        .observe(t0.elapsed().as_secs_f64());
    resp
}
