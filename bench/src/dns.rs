//! `cargo xtask bench --dns`: container name resolution, netd's embedded DNS against
//! Docker's (a real dockerd) and aardvark-dns (netavark's, as Podman runs it). Each
//! server answers queries from a container on a user network for another container's
//! name, and for a name it forwards to an upstream (dnsmasq in the client namespace).
//! dnsperf (Debian) sends the queries from inside the querying container's namespace:
//! queries per second with 4 clients x 64 in flight, and latency percentiles from its
//! per-query report with one query in flight.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use netd_lab::{cmd, dockerd::Dockerd, Lab, LabName, LabOptions};
use serde::Serialize;

use crate::peers::{
    docker::{start_dockerd, IMAGE},
    Env, CLIENT_IP, UPLINK,
};

const NETAVARK: &str = "/usr/lib/podman/netavark";
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
/// The user network of every server.
const SUBNET: &str = "172.31.7.0/24";
const GATEWAY: &str = "172.31.7.1";
/// What dnsmasq answers for the forwarded name.
const FORWARDED: &str = "fwd.bench.test";
const FORWARDED_IP: &str = "192.0.2.7";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Server {
    Netd,
    Dockerd,
    Aardvark,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::Netd, Server::Dockerd, Server::Aardvark];

    fn name(self) -> &'static str {
        match self {
            Server::Netd => "netd",
            Server::Dockerd => "dockerd",
            Server::Aardvark => "aardvark-dns",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Server::Netd => "dnd",
            Server::Dockerd => "ddk",
            Server::Aardvark => "dav",
        }
    }
}

/// One server's figures for one name.
#[derive(Clone, Debug, Serialize)]
pub struct DnsFigures {
    pub server: Server,
    /// "container" or "forwarded".
    pub name: &'static str,
    pub qps: f64,
    /// Of the throughput run.
    pub lost_pct: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Answers other than NOERROR in the latency run (should be none).
    pub errors: usize,
    /// CPU time (user + system) the server process spent per answered query in the
    /// throughput run, microseconds: how much of a host each server costs, whatever the
    /// load tool on this machine can send.
    pub cpu_us_per_query: f64,
}

/// A server set up in its lab, ready to be queried.
struct Setup {
    /// `nsenter --net=PATH`: the querying container's namespace.
    netns: PathBuf,
    /// Where queries go.
    server: &'static str,
    /// The name of the container that is asked for.
    target: &'static str,
    /// The process that answers (netd's daemon, dockerd, aardvark-dns).
    server_pid: Option<u32>,
    dockerd: Option<Dockerd>,
    netavark_cfg: Option<PathBuf>,
    lab: Lab,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(cfg) = &self.netavark_cfg {
            for (name, _) in AARDVARK_CTRS {
                let _ = netavark(&self.lab, cfg, "teardown", name);
            }
        }
        if let Some(mut dk) = self.dockerd.take() {
            dk.stop();
        }
        // The host namespace's resolv.conf (aardvark's upstream).
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.lab.host));
    }
}

/// Measures every server in `servers`, `secs` seconds per run.
pub fn measure(
    servers: &[Server],
    netd: &Path,
    env: &Env,
    secs: f64,
) -> Vec<Result<Vec<DnsFigures>>> {
    servers
        .iter()
        .map(|s| {
            let setup =
                set_up(*s, netd, env).with_context(|| format!("setting up {}", s.name()))?;
            let mut out = Vec::new();
            for (label, qname) in [("container", setup.target), ("forwarded", FORWARDED)] {
                let file = setup.lab.dir.join(format!("q-{label}.txt"));
                std::fs::write(&file, format!("{qname} A\n"))?;
                let cpu0 = setup.server_pid.and_then(cpu_ticks);
                let (qps, lost_pct, answered) = throughput(&setup, &file, secs)?;
                let cpu1 = setup.server_pid.and_then(cpu_ticks);
                let cpu_us_per_query = match (cpu0, cpu1) {
                    (Some(a), Some(b)) if answered > 0.0 => {
                        (b - a) as f64 * 1e6 / ticks_per_sec() / answered
                    }
                    _ => f64::NAN,
                };
                let (p50_us, p99_us, errors) = latency(&setup, &file, secs)?;
                out.push(DnsFigures {
                    server: *s,
                    name: label,
                    qps,
                    lost_pct,
                    p50_us,
                    p99_us,
                    errors,
                    cpu_us_per_query,
                });
            }
            Ok(out)
        })
        .collect()
}

fn set_up(server: Server, netd: &Path, env: &Env) -> Result<Setup> {
    let mut lab = Lab::create(LabOptions {
        name: LabName::Unique {
            tag: crate::TAG,
            suffix: Some(server.short().into()),
        },
        uplink: UPLINK,
        cgroup: false,
        netd: netd.to_path_buf(),
        ..Default::default()
    })?;
    cmd::in_ns(&lab.host, None, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    // The upstream every server forwards other names to.
    let client = lab.client.clone();
    lab.spawn_in(
        &client,
        Some(1),
        &[
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={CLIENT_IP}"),
            &format!("--address=/{FORWARDED}/{FORWARDED_IP}"),
            "--cache-size=10000",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    match server {
        Server::Netd => {
            lab.start_daemon()?;
            lab.cli(&["network", "create", "--subnet", SUBNET, "dnsnet"])?;
            lab.cli(&[
                "run",
                "-d",
                "--name",
                "web",
                "--network",
                "dnsnet",
                "--",
                "sleep",
                "3600",
            ])?;
            lab.cli(&[
                "run",
                "-d",
                "--name",
                "cli",
                "--network",
                "dnsnet",
                "--dns",
                CLIENT_IP,
                "--",
                "sleep",
                "3600",
            ])?;
            let key = lab.cli(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "cli"])?;
            Ok(Setup {
                netns: PathBuf::from(key.trim()),
                server: "127.0.0.11",
                target: "web",
                server_pid: lab.daemon_pid(),
                dockerd: None,
                netavark_cfg: None,
                lab,
            })
        }
        Server::Dockerd => {
            let dk = start_dockerd(&lab, false, env)?;
            dk.docker(&["network", "create", "--subnet", SUBNET, "dnsnet"])?;
            dk.docker(&[
                "run",
                "-d",
                "--name",
                "web",
                "--network",
                "dnsnet",
                IMAGE,
                "sleep",
                "3600",
            ])?;
            dk.docker(&[
                "run",
                "-d",
                "--name",
                "cli",
                "--network",
                "dnsnet",
                "--dns",
                CLIENT_IP,
                IMAGE,
                "sleep",
                "3600",
            ])?;
            let pid = dk.container_pid("cli")?;
            Ok(Setup {
                netns: PathBuf::from(format!("/proc/{pid}/ns/net")),
                server: "127.0.0.11",
                target: "web",
                server_pid: dk.pid(),
                dockerd: Some(dk),
                netavark_cfg: None,
                lab,
            })
        }
        Server::Aardvark => {
            if !Path::new(AARDVARK).exists() {
                bail!("{AARDVARK} is not installed (Debian: aardvark-dns)");
            }
            // aardvark forwards to the upstreams of its own namespace's resolv.conf,
            // which `ip netns exec` takes from /etc/netns/HOST/.
            let etc = Path::new("/etc/netns").join(&lab.host);
            std::fs::create_dir_all(&etc)?;
            std::fs::write(etc.join("resolv.conf"), format!("nameserver {CLIENT_IP}\n"))?;
            let cfg = lab.dir.join("nv-config");
            std::fs::create_dir_all(&cfg)?;
            let mut query_ns = PathBuf::new();
            for (name, ip) in AARDVARK_CTRS {
                let ns = lab.add_namespace(name)?;
                let conf = netavark_conf(name, ip);
                std::fs::write(lab.dir.join(format!("nv-{name}.json")), conf.to_string())?;
                netavark(&lab, &cfg, "setup", name)?;
                query_ns = PathBuf::from(format!("/run/netns/{ns}"));
            }
            let server_pid = std::fs::read_to_string(cfg.join("aardvark-dns/aardvark.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            Ok(Setup {
                netns: query_ns,
                server: GATEWAY,
                target: "web",
                server_pid,
                dockerd: None,
                netavark_cfg: Some(cfg),
                lab,
            })
        }
    }
}

/// The two containers of aardvark's network: the one asked for, then the one asking.
const AARDVARK_CTRS: [(&str, &str); 2] = [("web", "172.31.7.2"), ("cli", "172.31.7.3")];

fn netavark_conf(name: &str, ip: &str) -> serde_json::Value {
    let id = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let cid = if name == "web" { id('a') } else { id('c') };
    serde_json::json!({
        "container_id": cid, "container_name": name,
        "networks": {"dnsnet": {"static_ips": [ip], "aliases": [name], "interface_name": "eth0"}},
        "network_info": {"dnsnet": {"name": "dnsnet", "id": id('b'), "driver": "bridge",
            "network_interface": "pdns0", "created": "2025-01-01T00:00:00Z",
            "subnets": [{"subnet": SUBNET, "gateway": GATEWAY}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": true,
            "ipam_options": {"driver": "host-local"}}}
    })
}

/// `netavark setup|teardown` for container `name` of the lab.
fn netavark(lab: &Lab, cfg: &Path, command: &str, name: &str) -> Result<()> {
    let o = std::process::Command::new("ip")
        .args([
            "netns", "exec", &lab.host, NETAVARK, "-a", AARDVARK, "--config",
        ])
        .arg(cfg)
        .args([command, &format!("/run/netns/{}-{name}", lab.name)])
        .stdin(std::fs::File::open(
            lab.dir.join(format!("nv-{name}.json")),
        )?)
        .output()?;
    if !o.status.success() {
        bail!(
            "netavark {command}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// dnsperf from the querying container, pinned to CPU 0; its stdout.
fn dnsperf(s: &Setup, file: &Path, secs: f64, args: &[&str]) -> Result<String> {
    let net = format!("--net={}", s.netns.display());
    let secs = format!("{}", secs.max(1.0).round() as u64);
    let file = file.display().to_string();
    let mut full = vec![
        net.as_str(),
        "taskset",
        "-c",
        "0",
        "dnsperf",
        "-s",
        s.server,
        "-d",
        &file,
        "-l",
        &secs,
        "-t",
        "2",
    ];
    full.extend_from_slice(args);
    Ok(cmd::run("nsenter", &full)?)
}

/// utime + stime of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (in parentheses, which may hold spaces): state is the
    // 3rd field, utime the 14th and stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Queries per second, the lost share and the queries answered, 4 clients with 64
/// queries in flight.
fn throughput(s: &Setup, file: &Path, secs: f64) -> Result<(f64, f64, f64)> {
    let out = dnsperf(s, file, secs, &["-c", "4", "-q", "64"])?;
    let field = |name: &str| -> Result<f64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("dnsperf printed no {name:?}: {out}"))
    };
    let sent = field("Queries sent:")?;
    let done = field("Queries completed:")?;
    let qps = field("Queries per second:")?;
    Ok((
        qps,
        if sent > 0.0 {
            100.0 * (sent - done) / sent
        } else {
            0.0
        },
        done,
    ))
}

/// p50 and p99 (microseconds) of one query in flight, and the answers not NOERROR.
fn latency(s: &Setup, file: &Path, secs: f64) -> Result<(f64, f64, usize)> {
    let out = dnsperf(s, file, secs, &["-c", "1", "-q", "1", "-v"])?;
    let mut lat = Vec::new();
    let mut errors = 0;
    // `> NOERROR web A 0.000123`
    for l in out.lines().filter_map(|l| l.strip_prefix("> ")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"NOERROR") {
            errors += 1;
        }
        if let Some(v) = f.last().and_then(|v| v.parse::<f64>().ok()) {
            lat.push(v * 1e6);
        }
    }
    if lat.is_empty() {
        bail!("dnsperf reported no answers: {out}");
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    Ok((pct(0.50), pct(0.99), errors))
}

/// The table.
pub fn report(all: &[Result<Vec<DnsFigures>>], servers: &[Server]) -> String {
    let mut t = String::from(
        "DNS from a container (qps: 4 clients x 64 in flight; latency: one in flight, us)\n",
    );
    t += &format!(
        "{:<14}{:<11}{:>10}{:>8}{:>9}{:>9}{:>8}{:>12}\n",
        "server", "name", "qps", "lost%", "p50", "p99", "errors", "cpu us/q"
    );
    for (s, r) in servers.iter().zip(all) {
        match r {
            Ok(rows) => {
                for f in rows {
                    t += &format!(
                        "{:<14}{:<11}{:>10.0}{:>8.2}{:>9.0}{:>9.0}{:>8}{:>12.1}\n",
                        s.name(),
                        f.name,
                        f.qps,
                        f.lost_pct,
                        f.p50_us,
                        f.p99_us,
                        f.errors,
                        f.cpu_us_per_query
                    );
                }
            }
            Err(e) => {
                t += &format!(
                    "{:<14}skipped: {}\n",
                    s.name(),
                    format!("{e:#}").replace('\n', " ")
                )
            }
        }
    }
    t
}
