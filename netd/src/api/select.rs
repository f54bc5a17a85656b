//! Which containers `GET /containers/json` lists: Docker's `all`, `limit`, `latest` and
//! filters, newest first.
use std::collections::HashMap;
use std::sync::Arc;

use super::filters::{query_flag, Filters};
use crate::{
    error::NetdError,
    model::{self, Container, ContainerState, Network, Proto},
};

/// Docker's container filters netd honours.
const KNOWN: &[&str] = &[
    "before", "expose", "exited", "id", "label", "name", "network", "publish", "since", "status",
];

/// Docker's filters netd cannot honour: refused, with the reason, so that no one acts
/// on a list they did not ask for.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("ancestor", "netd runs no images"),
    ("health", "netd containers have no health checks"),
    ("volume", "netd containers have no volumes"),
    ("isolation", "isolation modes are a Windows feature"),
    ("is-task", "netd has no swarm"),
];

const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

fn invalid(msg: String) -> NetdError {
    NetdError::InvalidArgument(msg)
}

/// The query of `GET /containers/json`.
pub struct ListQuery {
    pub all: bool,
    pub limit: Option<usize>,
    pub filters: Filters,
}

impl ListQuery {
    pub fn parse(q: &HashMap<String, String>) -> Result<ListQuery, NetdError> {
        let limit = match q.get("limit").map(String::as_str) {
            None | Some("") | Some("-1") | Some("0") => None,
            Some(n) => Some(
                n.parse()
                    .map_err(|_| invalid(format!("invalid limit {n:?}: a number")))?,
            ),
        };
        Ok(ListQuery {
            all: query_flag(q.get("all")),
            // API < 1.25's `latest` is `limit=1`.
            limit: if query_flag(q.get("latest")) {
                Some(1)
            } else {
                limit
            },
            filters: Filters::parse_with(
                q.get("filters").map(String::as_str),
                "containers",
                KNOWN,
                UNSUPPORTED,
            )?,
        })
    }
}

/// Ports given to `publish=` / `expose=`: `80`, `80/udp`, `8000-8080/tcp`.
fn ports(f: &Filters, key: &str) -> Result<Vec<(u16, Proto)>, NetdError> {
    let mut out = Vec::new();
    for v in f.values(key) {
        let p = model::parse_expose(v)
            .map_err(|e| invalid(format!("invalid filter '{key}={v}': {e}")))?;
        out.extend(p);
    }
    Ok(out)
}

/// Whether a container serving `of` passes a publish/expose filter asking for `want`.
fn serves(want: &[(u16, Proto)], mut of: impl Iterator<Item = (u16, Proto)>) -> bool {
    want.is_empty() || of.any(|p| want.contains(&p))
}

/// The selected containers, newest first. The store keeps containers in the order they
/// were made, so that order (not a one-second creation time) decides.
pub fn containers<'a>(
    q: &ListQuery,
    cs: &'a [Arc<Container>],
    nets: &[Network],
) -> Result<Vec<&'a Container>, NetdError> {
    let f = &q.filters;
    for s in f.values("status") {
        if !STATUSES.contains(&s.as_str()) {
            return Err(invalid(format!(
                "invalid filter 'status={s}': one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let exited: Vec<i32> = f
        .values("exited")
        .iter()
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(format!("invalid filter 'exited={v}': a number")))
        })
        .collect::<Result<_, _>>()?;
    // before/since name a container: by name first, then by id prefix, as Docker.
    let position = |key: &str| -> Result<Option<usize>, NetdError> {
        let Some(v) = f.values(key).first() else {
            return Ok(None);
        };
        cs.iter()
            .position(|c| c.name == *v)
            .or_else(|| cs.iter().position(|c| c.id.starts_with(v.as_str())))
            .map(Some)
            .ok_or_else(|| NetdError::NotFound(format!("No such container: {v}")))
    };
    let (before, since) = (position("before")?, position("since")?);
    let (published, exposed) = (ports(f, "publish")?, ports(f, "expose")?);
    // As Docker: a limit, or a status or exit code to match, looks at stopped
    // containers too.
    let all = q.all || q.limit.is_some() || f.contains("status") || f.contains("exited");

    let mut out = Vec::new();
    for (i, c) in cs.iter().enumerate().rev() {
        let name = format!("/{}", c.name);
        let own_ports = || c.ports.iter().map(|p| (p.container_port, p.proto));
        // A network by name, or by a prefix of its id.
        let on_network = |v: &String| {
            c.attachments.iter().any(|a| {
                a.network.starts_with(v.as_str())
                    || nets.iter().any(|n| n.id == a.network && n.name == *v)
            })
        };
        let keep = (all || c.state == ContainerState::Running)
            && f.regex_match("id", &[&c.id])?
            // Docker's names start with '/'; `name=^web$` means the name as typed.
            && f.regex_match("name", &[&name, &c.name])?
            && f.labels_match("label", &c.labels)
            && (!f.contains("network") || f.values("network").iter().any(on_network))
            && (!f.contains("status") || f.values("status").contains(&c.state.to_string()))
            && (exited.is_empty()
                || (c.state == ContainerState::Exited
                    && exited.contains(&c.exit_code.unwrap_or(0))))
            && before.is_none_or(|b| i < b)
            && since.is_none_or(|s| i > s)
            && serves(&published, own_ports())
            && serves(&exposed, own_ports().chain(c.exposed.iter().copied()));
        if keep {
            out.push(&**c);
            if q.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_attachment, PortMapping};

    fn container(name: &str, state: ContainerState, net: &str) -> Container {
        Container {
            id: format!("{name:0<64}"),
            name: name.into(),
            hostname: None,
            mode: model::NetMode::Bridge,
            netns: None,
            attachments: vec![model::Attachment {
                network: format!("{net:0<64}"),
                ..test_attachment()
            }],
            ports: vec![],
            cmd: vec![],
            state,
            pid: None,
            pid_start: None,
            exit_code: (state == ContainerState::Exited).then_some(3),
            auto_remove: false,
            created: 0,
            started: None,
            finished: None,
            labels: Default::default(),
            exposed: vec![],
            origin: Default::default(),
            dns: Default::default(),
            links: Vec::new(),
            config: Default::default(),
        }
    }

    fn names(query: &[(&str, &str)], cs: &[Container]) -> Result<Vec<String>, NetdError> {
        let cs: Vec<Arc<Container>> = cs.iter().cloned().map(Arc::new).collect();
        let cs = &cs[..];
        let q: HashMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let q = ListQuery::parse(&q)?;
        Ok(containers(&q, cs, &[])?
            .iter()
            .map(|c| c.name.clone())
            .collect())
    }

    #[test]
    fn filters_select_like_docker() {
        let mut cs = vec![
            container("c1", ContainerState::Running, "aa"),
            container("c3", ContainerState::Exited, "bb"),
            container("c30", ContainerState::Running, "bb"),
            container("web", ContainerState::Created, "aa"),
        ];
        cs[0].labels.insert("team".into(), "blue".into());
        cs[2].ports.push(PortMapping {
            host_ip: "0.0.0.0".parse().unwrap(),
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        });
        cs[3].exposed.push((53, Proto::Udp));
        // Newest first; only running ones without all.
        assert_eq!(names(&[], &cs).unwrap(), ["c30", "c1"]);
        assert_eq!(
            names(&[("all", "1")], &cs).unwrap(),
            ["web", "c30", "c3", "c1"]
        );
        let f = |json: &str| names(&[("all", "1"), ("filters", json)], &cs);
        assert_eq!(f(r#"{"name":["c3"]}"#).unwrap(), ["c30", "c3"]);
        assert_eq!(f(r#"{"name":["^c3$"]}"#).unwrap(), ["c3"]);
        assert_eq!(f(r#"{"name":["^/c3$"]}"#).unwrap(), ["c3"]);
        assert_eq!(f(r#"{"name":["c[01]"]}"#).unwrap(), ["c1"]);
        assert_eq!(f(r#"{"label":["team=blue"]}"#).unwrap(), ["c1"]);
        assert_eq!(f(r#"{"network":["bb"]}"#).unwrap(), ["c30", "c3"]);
        assert_eq!(
            f(r#"{"status":["exited","created"]}"#).unwrap(),
            ["web", "c3"]
        );
        assert_eq!(f(r#"{"exited":["3"]}"#).unwrap(), ["c3"]);
        assert_eq!(f(r#"{"publish":["80"]}"#).unwrap(), ["c30"]);
        assert_eq!(f(r#"{"expose":["50-60/udp"]}"#).unwrap(), ["web"]);
        assert_eq!(f(r#"{"expose":["80/tcp"]}"#).unwrap(), ["c30"]);
        assert_eq!(f(r#"{"before":["c30"]}"#).unwrap(), ["c3", "c1"]);
        assert_eq!(f(r#"{"since":["c3"]}"#).unwrap(), ["web", "c30"]);
        assert_eq!(f(r#"{"id":["^c1"]}"#).unwrap(), ["c1"]);
        // A status filter alone looks at stopped containers; limit and latest too.
        assert_eq!(
            names(&[("filters", r#"{"status":["exited"]}"#)], &cs).unwrap(),
            ["c3"]
        );
        assert_eq!(names(&[("limit", "2")], &cs).unwrap(), ["web", "c30"]);
        assert_eq!(names(&[("latest", "1")], &cs).unwrap(), ["web"]);
        for (bad, why) in [
            (r#"{"bogus":["1"]}"#, "invalid filter 'bogus'"),
            (r#"{"ancestor":["busybox"]}"#, "not supported by netd"),
            (
                r#"{"status":["sleeping"]}"#,
                "invalid filter 'status=sleeping'",
            ),
            (r#"{"exited":["x"]}"#, "invalid filter 'exited=x'"),
            (r#"{"publish":["http"]}"#, "invalid filter 'publish=http'"),
            (r#"{"name":["("]}"#, "not a regular expression"),
        ] {
            let e = f(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert_eq!(f(r#"{"before":["nosuch"]}"#).unwrap_err().status(), 404);
        assert!(names(&[("limit", "x")], &cs).is_err());
    }
}
