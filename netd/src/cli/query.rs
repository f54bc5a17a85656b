//! The commands that read containers: ps, port, logs, inspect.
use hyper::Method;
use serde_json::Value;

use super::format::{self, filters_param, ports_of, print_table, s};
use crate::{
    api::types::{ContainerInspect, ContainerSummary, PortBinding},
    client::Client,
    model,
};

/// `netd ps`: Docker's columns, `-q` ids, `--format json` the API's list.
pub async fn ps(
    client: &Client,
    all: bool,
    quiet: bool,
    filter: &[String],
    last: Option<usize>,
    latest: bool,
    format: Option<&str>,
) -> anyhow::Result<()> {
    let mut path = format!("/containers/json?all={}", all as u8);
    if let Some(n) = last {
        path += &format!("&limit={n}");
    }
    if latest {
        path += "&limit=1";
    }
    path += &filters_param(filter)?;
    let list: Vec<ContainerSummary> = client.get(&path).await?;
    if format == Some("json") {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if quiet {
        for c in &list {
            println!("{}", &c.id[..12.min(c.id.len())]);
        }
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|c| {
                let ips: Vec<&str> = c
                    .network_settings
                    .networks
                    .values()
                    .map(|n| n.ip_address.as_str())
                    .collect();
                vec![
                    c.id.chars().take(12).collect(),
                    c.command.clone(),
                    c.status.clone(),
                    c.host_config.network_mode.clone(),
                    ips.join(","),
                    ports_of(&c.ports).join(", "),
                    c.names
                        .first()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        print_table(
            &[
                "CONTAINER ID",
                "COMMAND",
                "STATUS",
                "NETWORK",
                "IP",
                "PORTS",
                "NAMES",
            ],
            &rows,
        );
    }
    Ok(())
}

/// `netd port NAME [PORT[/PROTO]]`, as `docker port` prints it.
pub async fn port(client: &Client, name: &str, private_port: Option<&str>) -> anyhow::Result<()> {
    let c: ContainerInspect = client.get(&format!("/containers/{name}/json")).await?;
    let ports = c.network_settings.ports;
    match private_port {
        None => {
            // In port order, as docker sorts its lines (the keys sort as text).
            let mut lines: Vec<(u16, &str, String)> = Vec::new();
            for (key, bindings) in &ports {
                let num = key.split('/').next().and_then(|p| p.parse().ok());
                for b in bindings.iter().flatten() {
                    let line = format!("{key} -> {}", host_port(b));
                    lines.push((num.unwrap_or(0), key, line));
                }
            }
            lines.sort();
            for (_, _, line) in lines {
                println!("{line}");
            }
        }
        Some(p) => {
            // Docker's key is PORT/PROTO; a bare port means tcp.
            let (port, proto) = match p.split_once('/') {
                Some((port, proto)) => (port, proto.parse()?),
                None => (p, model::Proto::Tcp),
            };
            let port: u16 = port
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid port {p:?}: PORT[/tcp|/udp]"))?;
            let key = format!("{port}/{proto}");
            let bindings = ports
                .get(&key)
                .and_then(Option::as_ref)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| anyhow::anyhow!("no public port '{key}' published for {name}"))?;
            for b in bindings {
                println!("{}", host_port(b));
            }
        }
    }
    Ok(())
}

pub async fn logs(client: &Client, name: &str) -> anyhow::Result<()> {
    let logs = client
        .call(Method::GET, &format!("/containers/{name}/logs"), None)
        .await?;
    print!("{}", s(&logs));
    Ok(())
}

/// `netd inspect [-f TEMPLATE] NAME...`: the API's documents, or the template per one.
pub async fn inspect(
    client: &Client,
    format: Option<&str>,
    names: &[String],
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for n in names {
        out.push(
            client
                .call(Method::GET, &format!("/containers/{n}/json"), None)
                .await?,
        );
    }
    match format {
        Some(tpl) => {
            for v in &out {
                println!("{}", format::render_json_template(tpl, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(out))?),
    }
    Ok(())
}

/// A binding's host side as `docker port` prints it: `0.0.0.0:8080`, `[::]:8080`
/// (Go's net.JoinHostPort).
fn host_port(b: &PortBinding) -> String {
    if b.host_ip.contains(':') {
        format!("[{}]:{}", b.host_ip, b.host_port)
    } else {
        format!("{}:{}", b.host_ip, b.host_port)
    }
}
