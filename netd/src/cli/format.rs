//! Presentation: tables, port folding, templates, argument helpers.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::bail;
use serde_json::Value;

use crate::{api::types::Port, daemon::Stats};

/// KEY=VALUE pairs; `allow_bare` accepts KEY alone (labels) as KEY="".
pub(super) fn key_values(
    what: &str,
    items: &[String],
    allow_bare: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for it in items {
        let (k, v) = match it.split_once('=') {
            Some((k, v)) => (k, v),
            None if allow_bare => (it.as_str(), ""),
            None => bail!("invalid {what} {it:?}: expected KEY=VALUE"),
        };
        if k.is_empty() {
            bail!("invalid {what} {it:?}: the key is empty");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Percent-encodes a query value.
/// `--filter KEY=VALUE`s as Docker's `filters` query parameter (`&filters=...`, or
/// nothing); a key given twice keeps both values, as docker does.
pub(super) fn filters_param(args: &[String]) -> anyhow::Result<String> {
    let mut f: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                f.entry(k).or_default().insert(v, true);
            }
            _ => anyhow::bail!("invalid filter {a:?}: expected KEY=VALUE"),
        }
    }
    Ok(if f.is_empty() {
        String::new()
    } else {
        format!("&filters={}", enc(&serde_json::to_string(&f)?))
    })
}

pub(super) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `{{.Field}}` templates over a network row, as `docker network ls --format` does.
pub(super) fn render_template(tpl: &str, fields: &[(&str, String)]) -> String {
    let mut out = tpl.replace("\\t", "\t");
    for (k, v) in fields {
        out = out.replace(&format!("{{{{.{k}}}}}"), v);
    }
    out
}

/// `{{.A.B}}` paths over a JSON document, as `docker inspect -f` does for the common
/// case (strings bare, everything else as JSON, a missing path as `<no value>`).
pub(super) fn render_json_template(tpl: &str, doc: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut rest = tpl.replace("\\t", "\t");
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let path = rest[start + 2..start + len].trim().trim_start_matches('.');
        let v = path
            .split('.')
            .filter(|k| !k.is_empty())
            .try_fold(doc, |v, k| v.get(k));
        match v {
            Some(serde_json::Value::String(s)) => out.push_str(s),
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str("<no value>"),
        }
        rest = rest[start + len + 2..].to_string();
    }
    out.push_str(&rest);
    out
}

pub fn socket_path(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

/// `netd stats` counters for people: the events and map sizes, then every drop reason
/// with what it means, each table in the datapath's own order. Names the tables do not
/// know (a daemon of another version) are shown with the events.
pub(super) fn print_counters(st: &Stats) {
    use crate::datapath::counters::{drop_reason, event};
    let value = |name: &str| {
        st.counters
            .get(name)
            .map(|c| c.to_string())
            .unwrap_or_default()
    };
    let mut rows: Vec<Vec<String>> = event::NAMES
        .iter()
        .map(|n| vec![n.to_string(), value(n)])
        .collect();
    rows.extend(
        st.counters
            .keys()
            .filter(|k| !event::NAMES.contains(&k.as_str()))
            .filter(|k| !drop_reason::NAMES.contains(&k.as_str()))
            .map(|k| vec![k.clone(), value(k)]),
    );
    for (k, v) in [
        ("port_map_entries", st.port_map_entries as u64),
        ("endpoint_entries", st.endpoint_entries as u64),
        ("conntrack_entries", st.conntrack_entries),
        ("conntrack_capacity", st.conntrack_capacity as u64),
        ("conntrack_new_capacity", st.conntrack_new_capacity as u64),
        ("conntrack_insert_failures", st.conntrack_insert_failures),
    ] {
        rows.push(vec![k.to_string(), v.to_string()]);
    }
    print_table(&["COUNTER", "VALUE"], &rows);
    let drops: Vec<Vec<String>> = drop_reason::NAMES
        .iter()
        .zip(drop_reason::DOCS)
        .map(|(n, doc)| vec![n.to_string(), value(n), doc.trim().to_string()])
        .collect();
    println!();
    print_table(&["DROP REASON", "PACKETS", "MEANING"], &drops);
}

pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        // Padded by hand: a format width is capped at 65535, and a cell (a container's
        // ports) can be longer.
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i].saturating_sub(c.len()))))
            .collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub(super) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A container's ports as `docker ps` shows them: runs of consecutive mappings folded
/// into one range (`0.0.0.0:8000-8010->80-90/tcp`).
pub(super) fn ports_of(ports: &[Port]) -> Vec<String> {
    // Exposed, unpublished ports come last, as `80/tcp`.
    let exposed: Vec<String> = ports
        .iter()
        .filter(|p| p.public_port.is_none())
        .map(|p| format!("{}/{}", p.private_port, p.proto))
        .collect();
    let mut ps: Vec<(String, String, u64, u64)> = ports
        .iter()
        .filter_map(|p| {
            Some((
                p.ip.clone().unwrap_or_default(),
                p.proto.clone(),
                p.public_port? as u64,
                p.private_port as u64,
            ))
        })
        .collect();
    ps.sort();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ps.len() {
        let (ip, proto, h0, c0) = ps[i].clone();
        let mut j = i;
        while j + 1 < ps.len() {
            let (nip, nproto, nh, nc) = &ps[j + 1];
            let (_, _, h, c) = &ps[j];
            if *nip == ip && *nproto == proto && *nh == h + 1 && *nc == c + 1 {
                j += 1;
            } else {
                break;
            }
        }
        let (h1, c1) = (ps[j].2, ps[j].3);
        // Go's JoinHostPort, as Docker 27+ prints them: `[::]:8080`.
        let ip = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        out.push(if j == i {
            format!("{ip}:{h0}->{c0}/{proto}")
        } else {
            format!("{ip}:{h0}-{h1}->{c0}-{c1}/{proto}")
        });
        i = j + 1;
    }
    out.extend(exposed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_templates_follow_json_paths() {
        let v = serde_json::json!({"NetworkSettings": {"SandboxKey": "/run/netns/x",
            "Networks": {"a": {"IPPrefixLen": 24}}}});
        assert_eq!(
            render_json_template("{{.NetworkSettings.SandboxKey}}", &v),
            "/run/netns/x"
        );
        assert_eq!(
            render_json_template("len={{ .NetworkSettings.Networks.a.IPPrefixLen }}!", &v),
            "len=24!"
        );
        assert_eq!(render_json_template("{{.Nope}}", &v), "<no value>");
    }

    #[test]
    fn ports_fold_into_ranges_like_docker_ps() {
        let p = |ip: &str, h: u16, c: u16, t: &str| Port {
            ip: Some(ip.into()),
            public_port: Some(h),
            private_port: c,
            proto: t.into(),
        };
        let c = [
            p("0.0.0.0", 8002, 82, "tcp"),
            p("0.0.0.0", 8000, 80, "tcp"),
            p("0.0.0.0", 8001, 81, "tcp"),
            p("0.0.0.0", 9000, 90, "tcp"),
            p("0.0.0.0", 8003, 83, "udp"),
            Port {
                private_port: 53,
                proto: "udp".into(),
                ..Default::default()
            },
            p("127.0.0.1", 8004, 84, "tcp"),
            p("::", 8000, 80, "tcp"),
            p("::", 8001, 81, "tcp"),
        ];
        assert_eq!(
            ports_of(&c),
            vec![
                "0.0.0.0:8000-8002->80-82/tcp",
                "0.0.0.0:9000->90/tcp",
                "0.0.0.0:8003->83/udp",
                "127.0.0.1:8004->84/tcp",
                "[::]:8000-8001->80-81/tcp",
                "53/udp"
            ]
        );
    }
}
