//! The `netd` command line: Docker's words, so users need nothing new.
use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

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
    /// Create a container's network sandbox without starting its command.
    Create(RunArgs),
    /// Start created or stopped containers.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop containers (SIGTERM, then SIGKILL after --time seconds).
    Stop {
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
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
    Port {
        name: String,
        /// PRIVATE_PORT[/PROTO]: only that port's bindings, as `docker port`.
        private_port: Option<String>,
    },
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
    /// Run in the background and print the container id (run only).
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when its command exits.
    #[arg(long)]
    pub rm: bool,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// NETWORK, host, none or container:NAME.
    #[arg(long, visible_alias = "net")]
    pub network: Option<String>,
    /// Static address (networks created with --subnet only).
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    /// Extra names for the container on its network.
    #[arg(long = "alias", visible_alias = "network-alias")]
    pub aliases: Vec<String>,
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
    /// The command (after `--`, or as the first argument that is not an option). Without
    /// one, the container is a sandbox for `netd exec`.
    #[arg(trailing_var_arg = true)]
    pub cmd: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create {
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        ip_range: Option<String>,
        /// NAME=IP: an address the network must not hand out.
        #[arg(long)]
        aux_address: Vec<String>,
        /// No traffic leaves the network, nothing gets in.
        #[arg(long)]
        internal: bool,
        /// Docker's --attachable: recorded and shown (every netd network takes containers).
        #[arg(long)]
        attachable: bool,
        /// KEY[=VALUE]
        #[arg(long)]
        label: Vec<String>,
        /// Driver option KEY=VALUE (com.docker.network.bridge.*, com.docker.network.driver.mtu).
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        no_trunc: bool,
        /// KEY=VALUE: driver, id, label, name, scope, type (custom|builtin).
        #[arg(short, long)]
        filter: Vec<String>,
        /// `json`, `table`, or a template such as '{{.Name}} {{.Driver}}'.
        #[arg(long)]
        format: Option<String>,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network no container uses.
    Prune {
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network.
    Connect {
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
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
        addr: Option<Ipv4Addr>,
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

/// KEY=VALUE pairs; `allow_bare` accepts KEY alone (labels) as KEY="".
fn key_values(
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
fn enc(s: &str) -> String {
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
fn render_template(tpl: &str, fields: &[(&str, String)]) -> String {
    let mut out = tpl.replace("\\t", "\t");
    for (k, v) in fields {
        out = out.replace(&format!("{{{{.{k}}}}}"), v);
    }
    out
}

pub fn socket_path(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

/// `netd stats` counters for people: the events and map sizes, then every drop reason
/// with what it means, each table in the datapath's own order. Names the tables do not
/// know (a daemon of another version) are shown with the events.
fn print_counters(v: &Value) {
    use crate::datapath::counters::{drop_reason, event};
    let counters = v["counters"].as_object().cloned().unwrap_or_default();
    let value = |name: &str| {
        counters
            .get(name)
            .map(|c| c.to_string())
            .unwrap_or_default()
    };
    let mut rows: Vec<Vec<String>> = event::NAMES
        .iter()
        .map(|n| vec![n.to_string(), value(n)])
        .collect();
    rows.extend(
        counters
            .keys()
            .filter(|k| !event::NAMES.contains(&k.as_str()))
            .filter(|k| !drop_reason::NAMES.contains(&k.as_str()))
            .map(|k| vec![k.clone(), value(k)]),
    );
    for k in [
        "port_map_entries",
        "endpoint_entries",
        "conntrack_entries",
        "conntrack_capacity",
        "conntrack_new_capacity",
        "conntrack_insert_failures",
    ] {
        rows.push(vec![k.to_string(), v[k].to_string()]);
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

fn print_table(header: &[&str], rows: &[Vec<String>]) {
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

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A container's ports as `docker ps` shows them: runs of consecutive mappings folded
/// into one range (`0.0.0.0:8000-8010->80-90/tcp`).
fn ports_of(c: &Value) -> Vec<String> {
    let mut ps: Vec<(String, String, u64, u64)> = c["Ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let n = |k: &str| p[k].as_u64().unwrap_or(0);
                    (
                        s(&p["IP"]),
                        s(&p["Type"]),
                        n("PublicPort"),
                        n("PrivatePort"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
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
        out.push(if j == i {
            format!("{ip}:{h0}->{c0}/{proto}")
        } else {
            format!("{ip}:{h0}-{h1}->{c0}-{c1}/{proto}")
        });
        i = j + 1;
    }
    out
}

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

/// Runs `op` for each name, printing the name on success and one error line per failure
/// (Docker's behaviour for rm/start/stop of several containers).
async fn each<F, Fut>(names: &[String], op: F) -> anyhow::Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut failed = false;
    for n in names {
        match op(n.clone()).await {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {}", one_line(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

async fn run_container(client: &Client, a: RunArgs, start: bool) -> anyhow::Result<i32> {
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
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: 0,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    if a.rm && a.detach && a.cmd.is_empty() {
        bail!("--rm needs a command: a sandbox without one never exits");
    }
    let req = model::RunRequest {
        name: a.name.clone(),
        hostname: a.hostname.clone(),
        network: a.network.clone(),
        ip: a.ip,
        aliases: a.aliases.clone(),
        ports,
        cmd: a.cmd.clone(),
        start,
        auto_remove: a.rm,
    };
    let c = client
        .call(Method::POST, "/netd/run", Some(serde_json::to_value(&req)?))
        .await?;
    let id = s(&c["Id"]);
    if !start || a.detach || a.cmd.is_empty() {
        println!("{id}");
        return Ok(0);
    }
    // Attached: wait for the command to finish, then show its output.
    loop {
        let c = match client
            .call(Method::GET, &format!("/containers/{id}/json"), None)
            .await
        {
            Ok(c) => c,
            // --rm removed it already: the output went with it.
            Err(_) if a.rm => return Ok(0),
            Err(e) => return Err(e),
        };
        if s(&c["State"]["Status"]) != "running" {
            match client
                .call(Method::GET, &format!("/containers/{id}/logs"), None)
                .await
            {
                Ok(logs) => print!("{}", s(&logs)),
                // --rm may have removed it (and its log) in the meantime.
                Err(_) if a.rm => {}
                Err(e) => return Err(e),
            }
            return Ok(c["State"]["ExitCode"].as_i64().unwrap_or(0) as i32);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn network(client: &Client, cmd: NetworkCommand) -> anyhow::Result<i32> {
    match cmd {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            aux_address,
            internal,
            attachable,
            label,
            opt,
            name,
        } => {
            let aux = key_values("aux-address", &aux_address, false)?;
            let labels = key_values("label", &label, true)?;
            let options = key_values("option", &opt, false)?;
            let mut cfg = serde_json::Map::new();
            for (k, v) in [
                ("Subnet", subnet),
                ("Gateway", gateway),
                ("IPRange", ip_range),
            ] {
                if let Some(v) = v {
                    cfg.insert(k.into(), v.into());
                }
            }
            if !aux.is_empty() {
                cfg.insert("AuxiliaryAddresses".into(), json!(aux));
            }
            let body = json!({
                "Name": name, "Driver": driver, "Internal": internal, "Attachable": attachable,
                "CheckDuplicate": true,
                "IPAM": {"Driver": "default", "Config": if cfg.is_empty() { vec![] } else { vec![Value::Object(cfg)] }},
                "Options": options, "Labels": labels,
            });
            let v = client
                .call(Method::POST, "/networks/create", Some(body))
                .await?;
            // As the docker CLI does: the warning on stderr, the id on stdout.
            if let Some(w) = v["Warning"].as_str().filter(|w| !w.is_empty()) {
                eprintln!("WARNING: {w}");
            }
            println!("{}", s(&v["Id"]));
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => {
            let filters = key_values("filter", &filter, false)?;
            let mut path = "/networks".to_string();
            if !filters.is_empty() {
                let mut f: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
                for (k, v) in filters {
                    f.entry(k).or_default().insert(v, true);
                }
                path = format!("/networks?filters={}", enc(&serde_json::to_string(&f)?));
            }
            let v = client.call(Method::GET, &path, None).await?;
            let list = v.as_array().cloned().unwrap_or_default();
            let id = |n: &Value| -> String {
                let id = s(&n["Id"]);
                if no_trunc {
                    id
                } else {
                    id.chars().take(12).collect()
                }
            };
            match format.as_deref() {
                Some("json") => {
                    for n in &list {
                        println!("{}", serde_json::to_string(n)?);
                    }
                }
                _ if quiet => {
                    for n in &list {
                        println!("{}", id(n));
                    }
                }
                Some(tpl) if tpl != "table" => {
                    for n in &list {
                        let fields = [
                            ("ID", id(n)),
                            ("Name", s(&n["Name"])),
                            ("Driver", s(&n["Driver"])),
                            ("Scope", s(&n["Scope"])),
                            ("Internal", s(&n["Internal"])),
                            ("CreatedAt", s(&n["Created"])),
                        ];
                        println!("{}", render_template(tpl, &fields));
                    }
                }
                _ => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|n| {
                            vec![
                                id(n),
                                s(&n["Name"]),
                                s(&n["Driver"]),
                                s(&n["Scope"]),
                                s(&n["IPAM"]["Config"][0]["Subnet"]),
                            ]
                        })
                        .collect();
                    print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"], &rows);
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(
                    client
                        .call(Method::GET, &format!("/networks/{n}"), None)
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
        }
        NetworkCommand::Rm { names } => {
            return each(&names, |n| async move {
                client
                    .call(Method::DELETE, &format!("/networks/{n}"), None)
                    .await
            })
            .await
        }
        NetworkCommand::Prune { force } => {
            if !force {
                eprint!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let v = client.call(Method::POST, "/networks/prune", None).await?;
            let deleted = v["NetworksDeleted"].as_array().cloned().unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for d in deleted {
                    println!("{}", s(&d));
                }
            }
        }
        NetworkCommand::Connect {
            ip,
            aliases,
            network,
            container,
        } => {
            let mut ec = json!({"Aliases": aliases});
            if let Some(ip) = ip {
                ec["IPAMConfig"] = json!({"IPv4Address": ip.to_string()});
            }
            let body = json!({"Container": container, "EndpointConfig": ec});
            client
                .call(
                    Method::POST,
                    &format!("/networks/{network}/connect"),
                    Some(body),
                )
                .await?;
        }
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => {
            let body = json!({"Container": container, "Force": force});
            client
                .call(
                    Method::POST,
                    &format!("/networks/{network}/disconnect"),
                    Some(body),
                )
                .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_fold_into_ranges_like_docker_ps() {
        let p = |ip: &str, h: u16, c: u16, t: &str| json!({"IP": ip, "PublicPort": h, "PrivatePort": c, "Type": t});
        let c = json!({"Ports": [
            p("0.0.0.0", 8002, 82, "tcp"), p("0.0.0.0", 8000, 80, "tcp"), p("0.0.0.0", 8001, 81, "tcp"),
            p("0.0.0.0", 9000, 90, "tcp"), p("0.0.0.0", 8003, 83, "udp"), p("127.0.0.1", 8004, 84, "tcp"),
        ]});
        assert_eq!(
            ports_of(&c),
            vec![
                "0.0.0.0:8000-8002->80-82/tcp",
                "0.0.0.0:9000->90/tcp",
                "0.0.0.0:8003->83/udp",
                "127.0.0.1:8004->84/tcp"
            ]
        );
    }
}
