//! The `netd` command line: Docker's words, so users need nothing new.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::{client::Client, daemon::DaemonArgs, model};

#[derive(Parser, Debug)]
#[command(
    name = "netd",
    version,
    about = "Container networking with an eBPF datapath"
)]
pub struct Cli {
    /// Daemon socket (PATH or unix://PATH).
    #[arg(
        short = 'H',
        long = "host",
        env = "NETD_HOST",
        global = true,
        default_value = "/run/netd/netd.sock"
    )]
    pub host: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent (owns the kernel state, serves the API).
    Daemon(DaemonArgs),
    /// Create a container's network sandbox and run a command in it.
    Run(RunArgs),
    /// List containers.
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
        /// `json` for scripts.
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove containers.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List a container's published ports.
    Port { name: String },
    /// Show a container's output.
    Logs { name: String },
    /// Show containers as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command inside a container's network namespace.
    Exec {
        name: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Manage networks.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Datapath counters.
    Stats {
        #[arg(long)]
        format: Option<String>,
    },
    /// The eBPF connection tracking table.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Publish a port: [ip:][hostPort[-end]:]containerPort[-end][/tcp|/udp]; a missing
    /// host port gets a free one.
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// Publish every --expose'd port on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// A port the container serves: port[-end][/tcp|/udp].
    #[arg(long)]
    pub expose: Vec<String>,
    /// The command to run (after `--`, or as the first argument that is not an option).
    #[arg(trailing_var_arg = true)]
    pub cmd: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// List networks.
    Ls {
        #[arg(long)]
        format: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConntrackCommand {
    /// List tracked flows (one line per direction).
    Ls {
        #[arg(long)]
        format: Option<String>,
        /// Only this protocol (tcp, udp, icmp).
        #[arg(short, long)]
        proto: Option<String>,
        /// Only entries with this address anywhere in their tuples.
        #[arg(long)]
        addr: Option<std::net::Ipv4Addr>,
        /// Only entries with this port anywhere in their tuples.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Remove tracked flows (all, or one protocol's).
    Flush {
        #[arg(short, long)]
        proto: Option<String>,
    },
}

fn proto_arg(p: &Option<String>) -> anyhow::Result<Option<&'static str>> {
    match p.as_deref() {
        None => Ok(None),
        Some("tcp") => Ok(Some("tcp")),
        Some("udp") => Ok(Some("udp")),
        Some("icmp") => Ok(Some("icmp")),
        Some(other) => bail!("unknown protocol {other:?}: use tcp, udp or icmp"),
    }
}

pub fn socket_path(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn ports_of(c: &Value) -> Vec<String> {
    c["Ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{}:{}->{}/{}",
                        s(&p["IP"]),
                        p["PublicPort"],
                        p["PrivatePort"],
                        s(&p["Type"])
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let client = Client::new(&socket_path(&cli.host));
    match cli.command {
        Command::Daemon(_) => unreachable!("handled in main"),
        Command::Run(a) => {
            if a.cmd.is_empty() {
                bail!("\"netd run\" requires a command: netd run [OPTIONS] -- CMD [ARG...]");
            }
            if let Some(n) = &a.name {
                model::validate_name(n)?;
            }
            let mut ports = Vec::new();
            for spec in &a.publish {
                ports.extend(model::parse_publish(spec)?);
            }
            let mut exposed = Vec::new();
            for spec in &a.expose {
                exposed.extend(model::parse_expose(spec)?);
            }
            if a.publish_all {
                // Docker: -P publishes each exposed port not already published.
                for (port, proto) in exposed {
                    if !ports
                        .iter()
                        .any(|m| m.container_port == port && m.proto == proto)
                    {
                        ports.push(model::PortMapping {
                            host_ip: std::net::Ipv4Addr::UNSPECIFIED,
                            host_port: 0,
                            container_port: port,
                            proto,
                        });
                    }
                }
            }
            let req = model::RunRequest {
                name: a.name.clone(),
                ports,
                cmd: a.cmd.clone(),
            };
            let c = client
                .call(Method::POST, "/netd/run", Some(serde_json::to_value(&req)?))
                .await?;
            let id = s(&c["Id"]);
            if a.detach {
                println!("{id}");
                return Ok(0);
            }
            // Attached: wait for the command to finish, then show its output.
            loop {
                let c = client
                    .call(Method::GET, &format!("/containers/{id}/json"), None)
                    .await?;
                if s(&c["State"]) != "running" {
                    let logs = client
                        .call(Method::GET, &format!("/containers/{id}/logs"), None)
                        .await?;
                    print!("{}", s(&logs));
                    let status = s(&c["Status"]);
                    let code = status
                        .trim_start_matches("Exited (")
                        .trim_end_matches(')')
                        .parse()
                        .unwrap_or(0);
                    return Ok(code);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
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
                    println!("{}", &s(&c["Id"])[..12]);
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            s(&c["Id"]).chars().take(12).collect(),
                            s(&c["Command"]),
                            s(&c["Status"]),
                            s(&c["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]),
                            ports_of(c).join(", "),
                            s(&c["Names"][0]).trim_start_matches('/').to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    &["CONTAINER ID", "COMMAND", "STATUS", "IP", "PORTS", "NAMES"],
                    &rows,
                );
            }
        }
        Command::Rm { force, names } => {
            let mut failed = false;
            for n in names {
                match client
                    .call(
                        Method::DELETE,
                        &format!("/containers/{n}?force={}", force as u8),
                        None,
                    )
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error: {e:#}");
                        failed = true;
                    }
                }
            }
            return Ok(if failed { 1 } else { 0 });
        }
        Command::Port { name } => {
            let c = client
                .call(Method::GET, &format!("/containers/{name}/json"), None)
                .await?;
            for p in c["Ports"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{}/{} -> {}:{}",
                    p["PrivatePort"],
                    s(&p["Type"]),
                    s(&p["IP"]),
                    p["PublicPort"]
                );
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
            let c = client
                .call(Method::GET, &format!("/containers/{name}/json"), None)
                .await?;
            let ns = s(&c["Netns"]);
            let f = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
            // The CLI runs a current-thread runtime: this thread is the process.
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the container's namespace")?;
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
            bail!("running {:?}: {err}", cmd[0]);
        }
        Command::Network {
            command: NetworkCommand::Ls { format },
        } => {
            let v = client.call(Method::GET, "/networks", None).await?;
            if format.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|n| {
                        vec![
                            s(&n["Id"]).chars().take(12).collect(),
                            s(&n["Name"]),
                            s(&n["Driver"]),
                            s(&n["IPAM"]["Config"][0]["Subnet"]),
                            s(&n["Options"]["com.docker.network.bridge.name"]),
                        ]
                    })
                    .collect();
                print_table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE"], &rows);
            }
        }
        Command::Stats { format } => {
            let v = client.call(Method::GET, "/netd/stats", None).await?;
            if format.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut rows: Vec<Vec<String>> = v["counters"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| vec![k.clone(), v.to_string()])
                            .collect()
                    })
                    .unwrap_or_default();
                for k in ["port_map_entries", "endpoint_entries", "conntrack_entries"] {
                    rows.push(vec![k.to_string(), v[k].to_string()]);
                }
                print_table(&["COUNTER", "VALUE"], &rows);
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

/// Turns anything the daemon or the CLI rejects into `Error: <one line>`.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

pub fn parse_args() -> Result<Cli, i32> {
    match Cli::try_parse() {
        Ok(c) => Ok(c),
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    Err(
                        if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                            2
                        } else {
                            0
                        },
                    )
                }
                _ => {
                    // clap explains over several lines; users get the first, which names
                    // the problem, plus a pointer to --help.
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or("invalid arguments");
                    eprintln!("{first} (see 'netd --help')");
                    Err(2)
                }
            }
        }
    }
}
