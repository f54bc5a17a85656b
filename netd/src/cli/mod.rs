//! The `netd` command line, a client of the daemon's API.
//!
//! - `args`: the grammar (clap), one-line errors.
//! - `format`: tables, port folding, templates.
//! - `containers`: run/create.
//! - `network`: the `network` subcommands.
mod args;
mod attach;
mod containers;
mod docs;
mod format;
mod network;
mod trace;
mod version;

use hyper::Method;
use serde_json::Value;

use crate::{client::Client, model};

pub use args::*;

use crate::{
    api::types::{ContainerInspect, ContainerSummary, Flushed},
    daemon::{ConntrackRow, Stats},
};
use containers::{each, each_at_once, run_container};
use format::*;
use network::network;

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let client = Client::new(&socket_path(&cli.host));
    match cli.command {
        Command::Daemon(_) | Command::HoldTerminal { .. } => unreachable!("handled in main"),
        Command::Completion { shell } => docs::completion(shell),
        Command::ManPages { dir } => docs::man_pages(&dir)?,
        Command::Run(a) => return run_container(&client, a, true).await,
        Command::Create(a) => return run_container(&client, a, false).await,
        Command::Start { names } => {
            return each(&names, |n| {
                let c = &client;
                async move {
                    c.call(Method::POST, &format!("/containers/{n}/start"), None)
                        .await
                }
            })
            .await
        }
        Command::Restart { time, names } => {
            return each_at_once(&names, |n| {
                let c = &client;
                async move {
                    c.call(
                        Method::POST,
                        &format!("/containers/{n}/restart?t={time}"),
                        None,
                    )
                    .await
                }
            })
            .await
        }
        Command::Stop { time, names } => {
            return each_at_once(&names, |n| {
                let c = &client;
                async move {
                    c.call(
                        Method::POST,
                        &format!("/containers/{n}/stop?t={time}"),
                        None,
                    )
                    .await
                }
            })
            .await
        }
        Command::Ps {
            all,
            quiet,
            filter,
            last,
            latest,
            format,
        } => {
            let mut path = format!("/containers/json?all={}", all as u8);
            if let Some(n) = last {
                path += &format!("&limit={n}");
            }
            if latest {
                path += "&limit=1";
            }
            path += &filters_param(&filter)?;
            let list: Vec<ContainerSummary> = client.get(&path).await?;
            if format.as_deref() == Some("json") {
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
        }
        Command::Rm { force, names } => {
            return each(&names, |n| {
                let c = &client;
                async move {
                    c.call(
                        Method::DELETE,
                        &format!("/containers/{n}?force={}", force as u8),
                        None,
                    )
                    .await
                }
            })
            .await
        }
        Command::Port { name, private_port } => {
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
                        None => (p.as_str(), model::Proto::Tcp),
                    };
                    let port: u16 = port
                        .parse()
                        .map_err(|_| anyhow::anyhow!("invalid port {p:?}: PORT[/tcp|/udp]"))?;
                    let key = format!("{port}/{proto}");
                    let bindings = ports
                        .get(&key)
                        .and_then(Option::as_ref)
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| {
                            anyhow::anyhow!("no public port '{key}' published for {name}")
                        })?;
                    for b in bindings {
                        println!("{}", host_port(b));
                    }
                }
            }
        }
        Command::Logs { name } => {
            let logs = client
                .call(Method::GET, &format!("/containers/{name}/logs"), None)
                .await?;
            print!("{}", s(&logs));
        }
        Command::Inspect { format, names } => {
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
                        println!("{}", format::render_json_template(&tpl, v));
                    }
                }
                None => println!("{}", serde_json::to_string_pretty(&Value::Array(out))?),
            }
        }
        Command::Exec(a) => containers::exec_here(&client, a).await?,
        Command::Attach {
            no_stdin,
            detach_keys,
            name,
        } => return containers::attach(&client, &name, !no_stdin, &detach_keys).await,
        Command::Network { command } => return network(&client, command).await,
        Command::Version { format } => version::print(&client, format.as_deref()).await?,
        Command::Stats { format } => {
            let st: Stats = client.get("/netd/stats").await?;
            if format.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_counters(&st);
                let ports: Vec<Vec<String>> = st
                    .ports
                    .iter()
                    .map(|p| {
                        vec![
                            p.container.clone(),
                            p.mapping.clone(),
                            p.packets.to_string(),
                            p.bytes.to_string(),
                        ]
                    })
                    .collect();
                if !ports.is_empty() {
                    println!();
                    print_table(&["CONTAINER", "MAPPING", "PACKETS", "BYTES"], &ports);
                }
            }
        }
        Command::Conntrack {
            command:
                ConntrackCommand::Ls {
                    format,
                    proto,
                    addr,
                    port,
                },
        } => {
            // The daemon filters: the CLI never re-parses the addresses it formatted.
            let mut q = Vec::new();
            if let Some(p) = proto {
                q.push(format!("proto={p}"));
            }
            if let Some(a) = addr {
                q.push(format!("addr={a}"));
            }
            if let Some(p) = port {
                q.push(format!("port={p}"));
            }
            let list: Vec<ConntrackRow> = client
                .get(&format!("/netd/conntrack?{}", q.join("&")))
                .await?;
            if format.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|e| {
                        vec![
                            e.proto.to_string(),
                            e.src.to_string(),
                            e.dst.to_string(),
                            e.kind.clone(),
                            e.to_src.to_string(),
                            e.to_dst.to_string(),
                            e.tcp.clone(),
                            e.packets.to_string(),
                            e.bytes.to_string(),
                            e.idle_s.to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "PROTO", "SRC", "DST", "KIND", "TO SRC", "TO DST", "TCP", "PACKETS",
                        "BYTES", "IDLE(s)",
                    ],
                    &rows,
                );
            }
        }
        Command::Trace(a) => trace::trace(&client, a).await?,
        Command::Conntrack {
            command: ConntrackCommand::Flush { proto },
        } => {
            let path = match proto {
                Some(p) => format!("/netd/conntrack?proto={p}"),
                None => "/netd/conntrack".to_string(),
            };
            let v = client.call(Method::DELETE, &path, None).await?;
            let f: Flushed = serde_json::from_value(v)?;
            println!("{} entries removed", f.removed);
        }
    }
    Ok(0)
}

/// A binding's host side as `docker port` prints it: `0.0.0.0:8080`, `[::]:8080`
/// (Go's net.JoinHostPort).
fn host_port(b: &crate::api::types::PortBinding) -> String {
    if b.host_ip.contains(':') {
        format!("[{}]:{}", b.host_ip, b.host_port)
    } else {
        format!("{}:{}", b.host_ip, b.host_port)
    }
}
