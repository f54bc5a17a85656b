//! Docker's `filters` query parameter, and what each list endpoint accepts. A filter
//! netd does not know is an error (400), never ignored: `docker rm -f $(docker ps -q
//! --filter ...)` must not remove everything because a filter was dropped.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::NetdError;

/// Filter name -> the values asked for (any of them matches).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `{"name":{"x":true}}` or the older `{"name":["x"]}`; `allowed` are the
    /// filters this endpoint knows.
    pub fn parse(raw: Option<&str>, what: &str, allowed: &[&str]) -> Result<Filters, NetdError> {
        Self::parse_with(raw, what, allowed, &[])
    }

    /// As [`Filters::parse`]; `unsupported` are Docker's filters netd knows of but cannot
    /// honour, each with the reason the error gives.
    pub fn parse_with(
        raw: Option<&str>,
        what: &str,
        allowed: &[&str],
        unsupported: &[(&str, &str)],
    ) -> Result<Filters, NetdError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(Filters::default());
        };
        let v: Value = serde_json::from_str(raw)
            .map_err(|e| NetdError::InvalidArgument(format!("invalid filters {raw:?}: {e}")))?;
        let Value::Object(m) = v else {
            return Err(NetdError::InvalidArgument(format!(
                "invalid filters {raw:?}: not a JSON object"
            )));
        };
        let mut out = BTreeMap::new();
        for (k, vals) in m {
            if let Some((_, why)) = unsupported.iter().find(|(u, _)| *u == k) {
                return Err(NetdError::InvalidArgument(format!(
                    "filter '{k}' is not supported by netd: {why}"
                )));
            }
            if !allowed.contains(&k.as_str()) {
                return Err(NetdError::InvalidArgument(format!(
                    "invalid filter '{k}' for {what} (netd knows: {})",
                    allowed.join(", ")
                )));
            }
            let list = match vals {
                Value::Object(o) => o
                    .into_iter()
                    .filter(|(_, b)| b.as_bool().unwrap_or(false))
                    .map(|(s, _)| s)
                    .collect(),
                Value::Array(a) => a
                    .into_iter()
                    .map(|s| match s {
                        Value::String(s) => Ok(s),
                        other => Err(NetdError::InvalidArgument(format!(
                            "invalid value {other} for filter '{k}': not a string"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(NetdError::InvalidArgument(format!(
                        "invalid value {other} for filter '{k}'"
                    )))
                }
            };
            out.insert(k, list);
        }
        Ok(Filters(out))
    }

    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Docker's `Match`: the key is absent, or one of its values, a regular expression,
    /// matches somewhere in one of `sources` (`name=^web` is a name starting "web").
    pub fn regex_match(&self, key: &str, sources: &[&str]) -> Result<bool, NetdError> {
        let Some(values) = self.0.get(key) else {
            return Ok(true);
        };
        for v in values {
            let re = regex::Regex::new(v).map_err(|_| {
                NetdError::InvalidArgument(format!(
                    "invalid filter '{key}={v}': not a regular expression"
                ))
            })?;
            if sources.iter().any(|s| re.is_match(s)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Docker's `MatchKVList`: every value of `key` (`k` or `k=v`) is in `labels`.
    pub fn labels_match(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(key).iter().all(|v| label_matches(labels, v))
    }

    /// Whether every filter has a value that `matches` accepts.
    pub fn all(
        &self,
        mut matches: impl FnMut(&str, &str) -> Result<bool, NetdError>,
    ) -> Result<bool, NetdError> {
        for (k, vals) in &self.0 {
            let mut any = false;
            for v in vals {
                if matches(k, v)? {
                    any = true;
                    break;
                }
            }
            if !any && !vals.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Docker's `label` filter: `key` or `key=value`.
pub fn label_matches(labels: &BTreeMap<String, String>, v: &str) -> bool {
    match v.split_once('=') {
        Some((k, val)) => labels.get(k).is_some_and(|x| x == val),
        None => labels.contains_key(v),
    }
}

/// A boolean query parameter (`all`, `force`, `latest`) as Docker reads it: anything
/// but "", "0", "no", "false" and "none" is true.
pub fn query_flag(v: Option<&String>) -> bool {
    v.is_some_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        )
    })
}

/// A boolean filter value as Docker accepts it.
pub fn bool_value(filter: &str, v: &str) -> Result<bool, NetdError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(NetdError::InvalidArgument(format!(
            "invalid value {v:?} for filter '{filter}': true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_and_unknown_filters() {
        let f = Filters::parse(
            Some(r#"{"name":{"web":true},"status":["running"]}"#),
            "containers",
            &["name", "status"],
        )
        .unwrap();
        assert_eq!(f.0["name"], vec!["web".to_string()]);
        assert_eq!(f.0["status"], vec!["running".to_string()]);
        let e = Filters::parse(Some(r#"{"ancestor":["x"]}"#), "containers", &["name"]).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("ancestor"), "{e}");
        assert!(Filters::parse(Some("{nope"), "containers", &["name"]).is_err());
        let e = Filters::parse_with(
            Some(r#"{"ancestor":["x"]}"#),
            "containers",
            &["name"],
            &[("ancestor", "netd runs no images")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'ancestor' is not supported by netd: netd runs no images"),
            "{e}"
        );
        assert_eq!(Filters::parse(None, "x", &[]).unwrap(), Filters::default());
    }

    #[test]
    fn query_flags_read_like_docker() {
        for (v, want) in [("1", true), ("true", true), ("yes", true), ("0", false)] {
            assert_eq!(query_flag(Some(&v.to_string())), want, "{v}");
        }
        for v in ["false", "no", "None", ""] {
            assert!(!query_flag(Some(&v.to_string())), "{v}");
        }
        assert!(!query_flag(None));
    }

    #[test]
    fn docker_matching_rules() {
        let f = Filters::parse(Some(r#"{"name":["c3","^/web$"]}"#), "c", &["name"]).unwrap();
        assert!(f.regex_match("name", &["/c3"]).unwrap());
        assert!(
            f.regex_match("name", &["/c30"]).unwrap(),
            "unanchored, as Docker"
        );
        assert!(f.regex_match("name", &["/web"]).unwrap());
        assert!(!f.regex_match("name", &["/web2"]).unwrap());
        assert!(f.regex_match("id", &["anything"]).unwrap(), "absent key");
        let bad = Filters::parse(Some(r#"{"name":["("]}"#), "c", &["name"]).unwrap();
        assert!(bad.regex_match("name", &["x"]).is_err());
        let labels: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let f = Filters::parse(Some(r#"{"label":["a","b=2"]}"#), "c", &["label"]).unwrap();
        assert!(f.labels_match("label", &labels));
        let f = Filters::parse(Some(r#"{"label":["a","c"]}"#), "c", &["label"]).unwrap();
        assert!(!f.labels_match("label", &labels), "every label must match");
    }

    #[test]
    fn all_filters_must_match_any_of_their_values() {
        let f = Filters::parse(
            Some(r#"{"name":["a","b"],"status":["running"]}"#),
            "c",
            &["name", "status"],
        )
        .unwrap();
        let yes = f
            .all(|k, v| {
                Ok(match k {
                    "name" => v == "b",
                    _ => v == "running",
                })
            })
            .unwrap();
        assert!(yes);
        let no = f.all(|k, v| Ok(k == "name" && v == "a")).unwrap();
        assert!(!no);
    }
}
