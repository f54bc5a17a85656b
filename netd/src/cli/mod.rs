//! The `netd` command line, a client of the daemon's API.
//!
//! - `args`: the grammar (clap), one-line errors.
//! - `format`: tables, port folding, templates.
//! - `containers`: run/create.
//! - `network`: the `network` subcommands.
mod args;
mod containers;
mod format;
mod network;

use anyhow::{bail, Context};
use hyper::Method;
use serde_json::Value;

use crate::{client::Client, model};

pub use args::*;
use containers::{each, run_container};
use format::*;
use network::network;

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let client = Client::new(&socket_path(&cli.host));
    match cli.command {
        Command::Daemon(_) => unreachable!("handled in main"),
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
        Command::Stop { time, names } => {
            return each(&names, |n| {
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
        Command::Ps { all, quiet, format } => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/containers/json?all={}", all as u8),
                    None,
                )
                .await?;
            let list = v.as_array().cloned().unwrap_or_default();
            if format.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if quiet {
                for c in &list {
                    println!("{}", s(&c["Id"]).chars().take(12).collect::<String>());
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        let ips: Vec<String> = c["NetworkSettings"]["Networks"]
                            .as_object()
                            .map(|m| m.values().map(|n| s(&n["IPAddress"])).collect())
                            .unwrap_or_default();
                        vec![
                            s(&c["Id"]).chars().take(12).collect(),
                            s(&c["Command"]),
                            s(&c["Status"]),
                            s(&c["HostConfig"]["NetworkMode"]),
                            ips.join(","),
                            ports_of(c).join(", "),
                            s(&c["Names"][0]).trim_start_matches('/').to_string(),
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
            let v = client
                .call(Method::GET, &format!("/containers/{name}/json"), None)
                .await?;
            let c: crate::api::types::ContainerInspect = serde_json::from_value(v)?;
            let ports = c.network_settings.ports;
            match private_port {
                None => {
                    for (key, bindings) in &ports {
                        for b in bindings {
                            println!("{key} -> {}:{}", b.host_ip, b.host_port);
                        }
                    }
                }
                Some(p) => {
                    // Docker's key is PORT/PROTO; a bare port means tcp.
                    let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
                    let port: u16 = port
                        .parse()
                        .map_err(|_| anyhow::anyhow!("invalid port {p:?}: PORT[/tcp|/udp]"))?;
                    let proto: model::Proto = proto.parse()?;
                    let key = format!("{port}/{proto}");
                    let bindings = ports.get(&key).filter(|b| !b.is_empty()).ok_or_else(|| {
                        anyhow::anyhow!("no public port '{key}' published for {name}")
                    })?;
                    for b in bindings {
                        println!("{}:{}", b.host_ip, b.host_port);
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
        Command::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(
                    client
                        .call(Method::GET, &format!("/containers/{n}/json"), None)
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
        }
        Command::Exec { name, cmd } => {
            let v = client
                .call(Method::GET, &format!("/containers/{name}/json"), None)
                .await?;
            let c: crate::api::types::ContainerInspect = serde_json::from_value(v)?;
            let ns = &c.netns;
            let f = std::fs::File::open(ns).with_context(|| format!("opening {ns}"))?;
            // The CLI runs a current-thread runtime: this thread is the process.
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the container's namespace")?;
            // With --hostname, the command runs in a UTS namespace of its own: join the
            // process's (without one, that is the host's, which changes nothing).
            if c.state.pid != 0 {
                if let Ok(uts) = std::fs::File::open(format!("/proc/{}/ns/uts", c.state.pid)) {
                    let _ = nix::sched::setns(uts, nix::sched::CloneFlags::CLONE_NEWUTS);
                }
            }
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
            bail!("running {:?}: {err}", cmd[0]);
        }
        Command::Network { command } => return network(&client, command).await,
        Command::Stats { format } => {
            let v = client.call(Method::GET, "/netd/stats", None).await?;
            if format.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_counters(&v);
                let ports: Vec<Vec<String>> = v["ports"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        vec![
                            s(&p["container"]),
                            s(&p["mapping"]),
                            s(&p["packets"]),
                            s(&p["bytes"]),
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
            let proto = proto_arg(&proto)?;
            let v = client.call(Method::GET, "/netd/conntrack", None).await?;
            let fields = ["src", "dst", "to_src", "to_dst"];
            let keep = |e: &Value| {
                proto.is_none_or(|p| e["proto"] == p)
                    && addr.is_none_or(|a| {
                        fields
                            .iter()
                            .any(|f| s(&e[*f]).split(':').next() == Some(&a.to_string()))
                    })
                    && port.is_none_or(|p| {
                        fields
                            .iter()
                            .any(|f| s(&e[*f]).rsplit(':').next() == Some(&p.to_string()))
                    })
            };
            let list: Vec<Value> = v
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(keep)
                .collect();
            if format.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&Value::Array(list))?);
            } else {
                let cols = [
                    "proto", "src", "dst", "kind", "to_src", "to_dst", "tcp", "packets", "bytes",
                    "idle_s",
                ];
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|e| cols.iter().map(|k| s(&e[*k])).collect())
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
        Command::Conntrack {
            command: ConntrackCommand::Flush { proto },
        } => {
            let path = match proto_arg(&proto)? {
                Some(p) => format!("/netd/conntrack?proto={p}"),
                None => "/netd/conntrack".to_string(),
            };
            let v = client.call(Method::DELETE, &path, None).await?;
            println!("{} entries removed", v["removed"]);
        }
    }
    Ok(0)
}
