//! `GET /events`: Docker's event stream of containers and networks. `since` replays the
//! daemon's recent history (its last 256 events), `until` ends the stream (at once when
//! it is past), and `filters` select as Docker's do: `type`, `event`, `scope` and
//! `image` exactly, `container`, `network` and the other object kinds by id or name
//! (or a prefix of either), every `label` against the event's attributes.
use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Query, State},
    http::header::HeaderValue,
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{filters::Filters, D, Q};
use crate::{daemon::events::Event, error::NetdError};

/// Docker's event filters; the object kinds among them match an event's actor.
const FILTERS: &[&str] = &[
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
];

/// A time as Docker's `since`/`until` take it: seconds since the epoch, possibly with
/// a fraction (the docker CLI turns durations and dates into that).
fn parse_time(k: &str, v: &str) -> Result<f64, NetdError> {
    v.parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| {
            NetdError::InvalidArgument(format!("invalid {k} {v:?}: seconds since the epoch"))
        })
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Docker's FuzzyMatch: no such filter, or a value equal to, or a prefix of, `source`.
fn fuzzy(f: &Filters, key: &str, source: &str) -> bool {
    !f.contains(key) || f.values(key).iter().any(|v| source.starts_with(v.as_str()))
}

/// Docker's ExactMatch: no such filter, or a value equal to `source`.
fn exact(f: &Filters, key: &str, source: &str) -> bool {
    !f.contains(key) || f.values(key).iter().any(|v| v == source)
}

/// Whether `e` passes every filter (Docker's events.Filter.Include).
fn include(f: &Filters, e: &Event) -> bool {
    let name = e.attributes.get("name").map_or("", String::as_str);
    let image = e.attributes.get("image").map_or("", String::as_str);
    // Docker matches these three actions by prefix ("exec_start: sh -c ...").
    let by_prefix = f
        .values("event")
        .iter()
        .any(|v| ["exec_create", "exec_start", "health_status"].contains(&v.as_str()));
    let event = if by_prefix {
        fuzzy(f, "event", &e.action)
    } else {
        exact(f, "event", &e.action)
    };
    let actor_kinds = [
        "container",
        "network",
        "daemon",
        "plugin",
        "volume",
        "node",
        "service",
        "secret",
        "config",
    ];
    event
        && exact(f, "type", e.kind)
        && exact(f, "scope", e.scope)
        && (exact(f, "image", image) || exact(f, "image", &e.actor))
        && actor_kinds
            .iter()
            .all(|k| fuzzy(f, k, &e.actor) || fuzzy(f, k, name))
        && f.labels_match("label", &e.attributes)
}

/// An event as Docker writes it (API 1.41: container events keep the older
/// `status`, `id` and `from` fields too).
fn to_json(e: &Event) -> Value {
    let nanos = i64::try_from(e.time_nano).unwrap_or(i64::MAX);
    let mut v = json!({
        "Type": e.kind,
        "Action": e.action,
        "Actor": {"ID": e.actor, "Attributes": e.attributes},
        "scope": e.scope,
        "time": nanos / 1_000_000_000,
        "timeNano": nanos,
    });
    if e.kind == "container" {
        v["status"] = json!(e.action);
        v["id"] = json!(e.actor);
        v["from"] = json!(e.attributes.get("image").cloned().unwrap_or_default());
    }
    v
}

fn line(e: &Event) -> Result<Vec<u8>, std::io::Error> {
    let mut b = serde_json::to_vec(&to_json(e))?;
    b.push(b'\n');
    Ok(b)
}

pub async fn events(State(d): D, Query(q): Q) -> Result<Response, NetdError> {
    let f = Filters::parse(q.get("filters").map(String::as_str), "events", FILTERS)?;
    let since = q.get("since").map(|s| parse_time("since", s)).transpose()?;
    let until = q.get("until").map(|u| parse_time("until", u)).transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(NetdError::InvalidArgument(format!(
                "`since` time ({s}) cannot be after `until` time ({u})"
            )));
        }
    }
    let sub = d.subscribe_events();
    let in_window =
        move |e: &Event| since.is_none_or(|s| e.secs() >= s) && until.is_none_or(|u| e.secs() <= u);
    // Without `since` the stream starts now, as Docker's.
    let past: Vec<Arc<Event>> = match since {
        Some(_) => sub
            .past
            .iter()
            .filter(|e| in_window(e) && include(&f, e))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let deadline = until
        .map(|u| tokio::time::Instant::now() + Duration::from_secs_f64((u - now_secs()).max(0.0)));
    let replay = futures::stream::iter(past.into_iter().map(|e| line(&e)));
    let live = futures::stream::unfold(sub, move |mut sub| {
        let f = f.clone();
        async move {
            loop {
                let next = match deadline {
                    Some(at) => match tokio::time::timeout_at(at, sub.live.recv()).await {
                        Ok(r) => r,
                        Err(_) => return None,
                    },
                    None => sub.live.recv().await,
                };
                match next {
                    Ok(e) if in_window(&e) && include(&f, &e) => return Some((line(&e), sub)),
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let mut r = Body::from_stream(futures::StreamExt::chain(replay, live)).into_response();
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(json: &str) -> Filters {
        Filters::parse(Some(json), "events", FILTERS).unwrap()
    }

    #[test]
    fn filters_select_as_dockers_do() {
        let start = Event::new("container", "start", "abcdef0123")
            .with("name", "web")
            .with("image", "netd")
            .with("team", "blue");
        let connect = Event::new("network", "connect", "9876543210")
            .with("name", "front")
            .with("type", "bridge")
            .with("container", "abcdef0123");
        let both = |j: &str| (include(&filters(j), &start), include(&filters(j), &connect));
        assert_eq!(both("{}"), (true, true));
        assert_eq!(both(r#"{"type":["network"]}"#), (false, true));
        assert_eq!(both(r#"{"event":["start","connect"]}"#), (true, true));
        assert_eq!(
            both(r#"{"event":["star"]}"#),
            (false, false),
            "actions are exact"
        );
        // By id, id prefix or name; a container filter does not select network events.
        assert_eq!(both(r#"{"container":["web"]}"#), (true, false));
        assert_eq!(both(r#"{"container":["abc"]}"#), (true, false));
        assert_eq!(both(r#"{"network":["front"]}"#), (false, true));
        assert_eq!(both(r#"{"label":["team=blue"]}"#), (true, false));
        assert_eq!(both(r#"{"scope":["swarm"]}"#), (false, false));
        assert_eq!(both(r#"{"image":["netd"]}"#), (true, false));
    }

    #[test]
    fn container_events_keep_the_older_fields() {
        let e = Event::new("container", "die", "c1")
            .with("image", "netd")
            .with("exitCode", "3");
        let v = to_json(&e);
        assert_eq!(v["status"], "die");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["Actor"]["Attributes"]["exitCode"], "3");
        assert_eq!(
            v["time"].as_i64().unwrap(),
            v["timeNano"].as_i64().unwrap() / 1_000_000_000
        );
        assert!(to_json(&Event::new("network", "create", "n"))
            .get("status")
            .is_none());
    }
}
