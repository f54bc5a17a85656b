//! The command line's grammar: Docker's words and flags, so users need nothing new.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use clap::{Parser, Subcommand};

use crate::{daemon::DaemonArgs, model::IpProto};

#[derive(Parser, Debug)]
#[command(
    name = "netd",
    version = crate::version::SHORT,
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
    Daemon(Box<DaemonArgs>),
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
    /// Stop containers (as `stop`) and start them again.
    Restart {
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List containers, newest first.
    #[command(visible_aliases = ["ls", "list"])]
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
        /// KEY=VALUE, Docker's: id, name, label, network, status, exited, before, since,
        /// publish, expose (name and id are regular expressions).
        #[arg(short, long)]
        filter: Vec<String>,
        /// The N most recently created containers, running or not.
        #[arg(short = 'n', long)]
        last: Option<usize>,
        /// The most recently created container.
        #[arg(short, long)]
        latest: bool,
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
        /// A template over the inspect JSON, as `docker inspect -f`:
        /// '{{.NetworkSettings.SandboxKey}}'.
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command inside a container's network namespace, in this process (so with
    /// this terminal: -i and -t are what it does anyway).
    Exec(ExecArgs),
    /// Attach this terminal to a container run with -i or -t (the detach keys leave it
    /// running).
    Attach {
        /// Do not send this terminal's input.
        #[arg(long)]
        no_stdin: bool,
        /// The keys that leave the container running (Docker's notation).
        #[arg(long, default_value = crate::model::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        name: String,
    },
    /// Manage networks.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// This client's and the daemon's release, commit and layouts.
    Version {
        /// `json` for scripts.
        #[arg(long)]
        format: Option<String>,
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
    /// Stream the datapath's decisions, one line per packet (IPv4 and IPv6): program, interface,
    /// addresses as the packet left (after NAT), verdict and drop reason. The datapath
    /// records packets only while a trace runs.
    Trace(TraceArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell (e.g.
    /// `netd completion bash > /etc/bash_completion.d/netd`).
    Completion { shell: clap_complete::Shell },
    /// Write netd's man pages into DIR (for packaging).
    #[command(hide = true)]
    ManPages { dir: std::path::PathBuf },
    /// Keeps a `-t` container's terminal while no agent does (started by the agent).
    #[command(hide = true)]
    HoldTerminal {
        #[arg(long)]
        run_dir: std::path::PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        start: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Accepted for Docker's `exec -it`: stdin is this process's.
    #[arg(short, long)]
    pub interactive: bool,
    /// Accepted for Docker's `exec -it`: the terminal is this process's.
    #[arg(short, long)]
    pub tty: bool,
    /// KEY=VALUE on top of this environment.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// The working directory.
    #[arg(short, long)]
    pub workdir: Option<std::path::PathBuf>,
    /// UID[:GID] or NAME[:GROUP].
    #[arg(short, long)]
    pub user: Option<String>,
    pub name: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// Only this protocol (tcp, udp, icmp).
    #[arg(short, long)]
    pub proto: Option<IpProto>,
    /// Only packets with this address (IPv4 or IPv6) as source or destination.
    #[arg(long)]
    pub addr: Option<std::net::IpAddr>,
    /// Only packets with this port as source or destination.
    #[arg(long)]
    pub port: Option<u16>,
    /// Stop after this many packets.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// `json`: the daemon's JSON lines as they come.
    #[arg(long, value_parser = ["json"])]
    pub format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container id (run only).
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the command's stdin open (attached to this terminal's in the foreground;
    /// for `netd attach` later with -d).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a pseudo-terminal (in the foreground: this terminal, raw).
    #[arg(short, long)]
    pub tty: bool,
    /// The keys that leave an attached container running (Docker's notation).
    #[arg(long, default_value = crate::model::DEFAULT_DETACH_KEYS)]
    pub detach_keys: String,
    /// Remove the container when its command exits.
    #[arg(long)]
    pub rm: bool,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// NETWORK, host, none or container:NAME; again for each further network, or in
    /// Docker's long form name=N,alias=A,ip=IP,ip6=IP,mac-address=MAC,
    /// link-local-ip=IP,driver-opt=K=V,gw-priority=N.
    #[arg(long, visible_alias = "net")]
    pub network: Vec<String>,
    /// The container's MAC on its first network (e.g. 92:d0:c6:0a:29:33).
    #[arg(long)]
    pub mac_address: Option<String>,
    /// A sysctl of the container's network namespace: net.*=VALUE (an interface's goes
    /// in the long form's driver-opt=com.docker.network.endpoint.sysctls=...).
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Static address (networks created with --subnet only).
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    /// Static IPv6 address (networks created with --ipv6 and an IPv6 --subnet only).
    #[arg(long)]
    pub ip6: Option<Ipv6Addr>,
    /// A further link-local address on the container's interface (169.254.0.0/16,
    /// or fe80::/10 on a network with IPv6).
    #[arg(long)]
    pub link_local_ip: Vec<IpAddr>,
    /// Extra names for the container on its network.
    #[arg(long = "alias", visible_alias = "network-alias")]
    pub aliases: Vec<String>,
    /// A DNS server for names netd does not know (queried from the container).
    #[arg(long)]
    pub dns: Vec<String>,
    /// A search domain for the container's resolv.conf.
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// A resolv.conf option (ndots:2, timeout:1, ...).
    #[arg(long = "dns-option", visible_alias = "dns-opt")]
    pub dns_options: Vec<String>,
    /// Link to another container: NAME[:ALIAS].
    #[arg(long)]
    pub link: Vec<String>,
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
    /// Metadata KEY[=VALUE], as `docker run --label` (`ps --filter label=...`).
    #[arg(short, long)]
    pub label: Vec<String>,
    /// The command (after `--`, or as the first argument that is not an option). Without
    /// one, the container is a sandbox for `netd exec`.
    #[arg(trailing_var_arg = true)]
    pub cmd: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct NetworkCreateArgs {
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Dual stack: an IPv6 subnet too (a /64 of this host's ULA pool without an
    /// IPv6 --subnet).
    #[arg(long)]
    pub ipv6: bool,
    /// IPv4 on the network (Docker 28's --ipv4); `--ipv4=false --ipv6` makes an
    /// IPv6-only network.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ipv4: bool,
    /// CIDR; one IPv4 and one IPv6 (an overlay network takes several IPv4 ones).
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Gateway address; one per subnet (the subnet that holds it).
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Where automatic addresses come from (CIDR); one per subnet.
    #[arg(long)]
    pub ip_range: Vec<String>,
    /// NAME=IP: an address the network must not hand out (in any of its IPv4 subnets).
    #[arg(long)]
    pub aux_address: Vec<String>,
    /// The IPAM driver: netd has Docker's `default` only.
    #[arg(long, default_value = "default")]
    pub ipam_driver: String,
    /// An IPAM option KEY=VALUE: com.docker.network.ipam.serial=true|false (hand out
    /// addresses in turn rather than the lowest free).
    #[arg(long)]
    pub ipam_opt: Vec<String>,
    /// local (bridge) or global (overlay); Docker's swarm scope is refused.
    #[arg(long)]
    pub scope: Option<String>,
    /// No traffic leaves the network, nothing gets in.
    #[arg(long)]
    pub internal: bool,
    /// Docker's --attachable: recorded and shown (every netd network takes containers).
    #[arg(long)]
    pub attachable: bool,
    /// KEY[=VALUE]
    #[arg(long)]
    pub label: Vec<String>,
    /// Driver option KEY=VALUE (com.docker.network.bridge.*, com.docker.network.driver.mtu).
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
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
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

/// `network connect`'s options, as Docker's.
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    #[arg(long)]
    pub ip6: Option<Ipv6Addr>,
    /// A further link-local address on the container's interface (169.254.0.0/16,
    /// or fe80::/10 on a network with IPv6).
    #[arg(long)]
    pub link_local_ip: Vec<IpAddr>,
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Link to another container: NAME[:ALIAS].
    #[arg(long)]
    pub link: Vec<String>,
    /// An endpoint driver option KEY=VALUE: com.docker.network.endpoint.ifname,
    /// com.docker.network.endpoint.sysctls.
    #[arg(long)]
    pub driver_opt: Vec<String>,
    /// The endpoint with the highest gives the container its default routes.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub gw_priority: i32,
    pub network: String,
    pub container: String,
}

#[derive(Subcommand, Debug)]
pub enum ConntrackCommand {
    /// List tracked flows (one line per direction).
    Ls {
        #[arg(long)]
        format: Option<String>,
        /// Only this protocol (tcp, udp, icmp).
        #[arg(short, long)]
        proto: Option<IpProto>,
        /// Only entries with this address (IPv4 or IPv6) anywhere in their tuples.
        #[arg(long)]
        addr: Option<std::net::IpAddr>,
        /// Only entries with this port anywhere in their tuples.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Remove tracked flows (all, or one protocol's).
    Flush {
        #[arg(short, long)]
        proto: Option<IpProto>,
    },
}

/// Turns anything the daemon or the CLI rejects into `Error: <one line>`.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Docker's management form of container commands (`docker container ls`,
/// `docker container stop ...`, as the tutorials write them) as netd's short one
/// (`netd ps`, `netd stop ...`): `container` is dropped where it is the command.
pub fn management_form(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "-H" || a == "--host" {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        if a == "container" && i + 1 < args.len() {
            args.remove(i);
        }
        break;
    }
    args
}

/// The command line, with the daemon's flags noted as given there (so its config file
/// can tell a flag from a default).
fn parse_noting_daemon_flags() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let m = Cli::command().try_get_matches_from(management_form(std::env::args_os().collect()))?;
    let mut cli = Cli::from_arg_matches(&m)?;
    if let (Command::Daemon(args), Some(("daemon", sub))) = (&mut cli.command, m.subcommand()) {
        crate::daemon::config_file::note_command_line(args, sub);
    }
    Ok(cli)
}

pub fn parse_args() -> Result<Cli, i32> {
    match parse_noting_daemon_flags() {
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

    fn argv(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn dockers_management_form_is_the_short_one() {
        assert_eq!(
            management_form(argv("netd container ls -a")),
            argv("netd ls -a")
        );
        assert_eq!(
            management_form(argv("netd -H /s container stop a b")),
            argv("netd -H /s stop a b")
        );
        assert_eq!(
            management_form(argv("netd run --name container")),
            argv("netd run --name container")
        );
        assert_eq!(
            management_form(argv("netd container")),
            argv("netd container")
        );
        let cli = Cli::try_parse_from(management_form(argv("netd container attach web"))).unwrap();
        assert!(matches!(cli.command, Command::Attach { .. }));
    }
}
