//! The prune verbs `docker container|network|system prune` send: stopped containers and
//! unused networks, selected by Docker's prune filters (`until`, `label`, `label!`);
//! images and build cache, which netd does not have, are answered as empty.
use std::collections::BTreeMap;

use axum::extract::{Query, State};
use serde_json::{json, Value};

use super::{
    filters::{label_matches, Filters},
    now,
    types::PrunedNetworks,
    Json, D, Q,
};
use crate::error::NetdError;

/// What a prune keeps: objects created at or after `until`, those without every
/// `label`, those with any `label!`.
#[derive(Debug, Default)]
struct PruneFilter {
    until: Option<u64>,
    labels: Vec<String>,
    not_labels: Vec<String>,
}

impl PruneFilter {
    fn parse(raw: Option<&String>, what: &str) -> Result<PruneFilter, NetdError> {
        let f = Filters::parse(raw.map(String::as_str), what, &["until", "label", "label!"])?;
        let until = match f.values("until") {
            [] => None,
            [v] => Some(parse_until(v, now())?),
            _ => {
                return Err(NetdError::InvalidArgument(
                    "more than one until filter specified".into(),
                ))
            }
        };
        Ok(PruneFilter {
            until,
            labels: f.values("label").to_vec(),
            not_labels: f.values("label!").to_vec(),
        })
    }

    fn selects(&self, created: u64, labels: &BTreeMap<String, String>) -> bool {
        self.until.is_none_or(|u| created < u)
            && self.labels.iter().all(|l| label_matches(labels, l))
            && !self.not_labels.iter().any(|l| label_matches(labels, l))
    }
}

/// Docker's `until`: seconds since the epoch, a date (RFC 3339, or YYYY-MM-DD), or a Go
/// duration before now (`24h`, `1h30m`, `90s`).
fn parse_until(v: &str, now: u64) -> Result<u64, NetdError> {
    let bad = || {
        NetdError::InvalidArgument(format!(
            "invalid until {v:?}: a Unix timestamp, a date (2006-01-02T15:04:05Z) or a duration (24h, 90m)"
        ))
    };
    if let Ok(t) = v.parse::<f64>() {
        return if t.is_finite() && t >= 0.0 {
            Ok(t as u64)
        } else {
            Err(bad())
        };
    }
    if let Some(t) = parse_date(v) {
        return Ok(t);
    }
    let mut secs = 0f64;
    let mut num = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            _ => return Err(bad()),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        secs += n * unit;
        num.clear();
    }
    if !num.is_empty() || v.is_empty() {
        return Err(bad());
    }
    Ok(now.saturating_sub(secs as u64))
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[Z]` (UTC) as seconds since the epoch.
fn parse_date(v: &str) -> Option<u64> {
    let (date, time) = match v.split_once('T') {
        Some((d, t)) => (d, t.trim_end_matches('Z')),
        None => (v, "00:00:00"),
    };
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=31).contains(day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of api::rfc3339.
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// `POST /containers/prune`: every container of netd's own that is not running.
pub async fn containers(State(d): D, Query(q): Q) -> Result<Json<Value>, NetdError> {
    let f = PruneFilter::parse(q.get("filters"), "container prune")?;
    let deleted = d
        .prune_containers(|c| f.selects(c.created, &c.labels))
        .await?;
    Ok(Json(json!({
        "ContainersDeleted": (!deleted.is_empty()).then_some(deleted),
        "SpaceReclaimed": 0,
    })))
}

/// `POST /networks/prune`: every user network no container uses.
pub async fn networks(State(d): D, Query(q): Q) -> Result<Json<PrunedNetworks>, NetdError> {
    let f = PruneFilter::parse(q.get("filters"), "network prune")?;
    Ok(Json(PrunedNetworks {
        networks_deleted: d
            .prune_networks(|n| f.selects(n.created, &n.labels))
            .await?,
    }))
}

/// `POST /images/prune` (part of `docker system prune`): netd runs no images.
pub async fn images(Query(q): Q) -> Result<Json<Value>, NetdError> {
    Filters::parse(
        q.get("filters").map(String::as_str),
        "image prune",
        &["dangling", "until", "label", "label!"],
    )?;
    Ok(Json(json!({"ImagesDeleted": null, "SpaceReclaimed": 0})))
}

/// `POST /build/prune` (part of `docker system prune`): netd builds nothing.
pub async fn build_cache() -> Json<Value> {
    Json(json!({"CachesDeleted": null, "SpaceReclaimed": 0}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_timestamps_dates_and_durations() {
        let now = 1_700_000_000;
        assert_eq!(parse_until("1600000000", now).unwrap(), 1_600_000_000);
        assert_eq!(parse_until("1600000000.5", now).unwrap(), 1_600_000_000);
        assert_eq!(parse_until("24h", now).unwrap(), now - 86_400);
        assert_eq!(parse_until("1h30m", now).unwrap(), now - 5400);
        assert_eq!(parse_until("90s", now).unwrap(), now - 90);
        assert_eq!(
            parse_until("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_until("2000-02-29", now).unwrap(), 951_782_400);
        for bad in ["soon", "10x", "1h5", "2023-13-01"] {
            let e = parse_until(bad, now).unwrap_err().to_string();
            assert!(
                e.contains("invalid until") && e.contains("duration"),
                "{bad}: {e}"
            );
        }
        assert!(parse_until("", now).is_err());
    }

    #[test]
    fn prune_filters_select_as_dockers_do() {
        let labels: BTreeMap<String, String> = [("keep".into(), "yes".into())].into();
        let none = BTreeMap::new();
        let f = PruneFilter::parse(Some(&r#"{"label!":["keep"]}"#.to_string()), "x").unwrap();
        assert!(!f.selects(0, &labels) && f.selects(0, &none));
        let f = PruneFilter::parse(Some(&r#"{"label":["keep=yes"]}"#.to_string()), "x").unwrap();
        assert!(f.selects(0, &labels) && !f.selects(0, &none));
        let f = PruneFilter::parse(Some(&r#"{"until":["100"]}"#.to_string()), "x").unwrap();
        assert!(f.selects(99, &none) && !f.selects(100, &none));
        let e = PruneFilter::parse(Some(&r#"{"name":["x"]}"#.to_string()), "network prune")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid filter 'name'"), "{e}");
    }
}
