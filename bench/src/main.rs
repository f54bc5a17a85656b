//! `cargo xtask bench`: netd side by side with the datapaths its users would otherwise
//! run, in one lab topology each (a host namespace, a client namespace on its uplink, a
//! container namespace behind a bridge), with the same client and the same servers.
//!
//! Datapaths: netd (eBPF), Docker's iptables rules (nft and legacy backends), the same
//! rules in native nftables, plain routing without NAT (the limit), and the real peers:
//! dockerd with and without its userland proxy, netavark, CNI bridge+portmap. For each N
//! (published ports) every datapath is set up once, then measured round by round,
//! interleaved (A B C D A B C D ...), and medians with min-max are reported.
//!
//! Nothing touches the root namespace: every name carries the `ndb-<pid>` prefix and is
//! removed at the end (or by the next run, if this one dies).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod ctfull;
mod docker;
use docker::Dockerd;

#[derive(Parser, Debug)]
#[command(about = "netd vs iptables vs nftables vs plain routing, side by side")]
struct Opts {
    /// One round at N in {1, 1000}, short runs: a few minutes.
    #[arg(long)]
    quick: bool,
    /// Rounds per N (interleaved across datapaths).
    #[arg(long)]
    rounds: Option<usize>,
    /// Published-port counts to measure at.
    #[arg(long, value_delimiter = ',')]
    ports: Option<Vec<usize>>,
    /// Seconds per load run.
    #[arg(long)]
    secs: Option<f64>,
    /// Only these datapaths (netd, iptables-nft, iptables-legacy, nftables, dockerd,
    /// dockerd-no-proxy, netavark, cni-portmap, plain).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The real peers (dockerd, netavark, CNI portmap) publish one rule (and dockerd one
    /// proxy per port and family) at a time: one to two minutes per 1,000 ports here, to
    /// set up and remove. Above this N they are skipped, with the reason printed, so that
    /// a full run stays under 30 minutes and a quick one under 3 (default: 1000, and 100
    /// with --quick).
    #[arg(long)]
    peer_max_ports: Option<usize>,
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Measure nothing: print the tables and draw the plot again from a JSON file of
    /// an earlier run (into --out).
    #[arg(long)]
    replot: Option<PathBuf>,
    #[arg(long, env = "NETD_BIN")]
    netd: PathBuf,
    #[arg(long, env = "NETD_TESTER")]
    tester: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Dp {
    Netd,
    IptablesNft,
    IptablesLegacy,
    Nftables,
    Dockerd,
    DockerdNoProxy,
    Netavark,
    Cni,
    Plain,
}

impl Dp {
    const ALL: [Dp; 9] = [
        Dp::Netd,
        Dp::IptablesNft,
        Dp::IptablesLegacy,
        Dp::Nftables,
        Dp::Dockerd,
        Dp::DockerdNoProxy,
        Dp::Netavark,
        Dp::Cni,
        Dp::Plain,
    ];
    fn name(self) -> &'static str {
        match self {
            Dp::Netd => "netd",
            Dp::IptablesNft => "iptables-nft",
            Dp::IptablesLegacy => "iptables-legacy",
            Dp::Nftables => "nftables",
            Dp::Dockerd => "dockerd",
            Dp::DockerdNoProxy => "dockerd-no-proxy",
            Dp::Netavark => "netavark",
            Dp::Cni => "cni-portmap",
            Dp::Plain => "plain",
        }
    }

    /// Real peers: set up by their own tools, skipped (with the reason) if unavailable.
    fn is_peer(self) -> bool {
        matches!(
            self,
            Dp::Dockerd | Dp::DockerdNoProxy | Dp::Netavark | Dp::Cni
        )
    }
    fn is_docker(self) -> bool {
        matches!(self, Dp::Dockerd | Dp::DockerdNoProxy)
    }
    fn short(self) -> &'static str {
        match self {
            Dp::Netd => "nd",
            Dp::IptablesNft => "in",
            Dp::IptablesLegacy => "il",
            Dp::Nftables => "nf",
            Dp::Dockerd => "dk",
            Dp::DockerdNoProxy => "dn",
            Dp::Netavark => "nv",
            Dp::Cni => "cn",
            Dp::Plain => "pl",
        }
    }
}

/// Service ports in the container, published last (after N-1 filler ports), so a
/// linear rule chain walks all N rules before it matches them.
const P_RR: u16 = 30001;
const P_CRR: u16 = 30002;
const P_IPERF: u16 = 30003;
const P_UDP: u16 = 30004;
const P_MASQ: u16 = 40000;
const FILLER_BASE: u16 = 20000;
const HOST_IP: &str = "10.99.0.1";
const CLIENT_IP: &str = "10.99.0.2";
const CTR_NET: &str = "172.30.0";

fn prefix() -> String {
    format!("ndb-{}", std::process::id())
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !o.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs `args` in namespace `ns`, pinned to `cpu`.
fn in_ns(ns: &str, cpu: usize, args: &[&str]) -> Result<String> {
    let cpu = cpu.to_string();
    let mut full = vec!["netns", "exec", ns, "taskset", "-c", &cpu];
    full.extend_from_slice(args);
    run("ip", &full)
}

fn spawn_in_ns(ns: &str, cpu: usize, args: &[&str]) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns, "taskset", "-c", &cpu.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning a server")
}

/// Removes what an earlier, dead run left behind (its pid is gone).
fn sweep() {
    let Ok(rd) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("ndb-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            kill_ns(&name);
            let _ = ip(&["netns", "del", &name]);
        }
    }
    // dockerd's containers live in cgroups of the run's name, not in its namespaces.
    for parent in docker::stale_cgroup_parents() {
        docker::remove_cgroups(&parent);
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = n.strip_prefix("ndb-") {
                let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = n.strip_prefix("ndb-") {
                let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn kill_ns(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for p in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", p]).status();
        }
    }
}

/// One datapath's lab at one N.
struct Lab {
    dp: Dp,
    host: String,
    client: String,
    ctr: String,
    dir: PathBuf,
    daemon: Option<Child>,
    servers: Vec<Child>,
    /// Where the client sends: the published address, or the container (plain).
    target: String,
    netd_pid: Option<u32>,
    dockerd: Option<Dockerd>,
    /// The CNI bridge plugin's result, which portmap and DEL take back.
    cni_result: Option<Value>,
    /// More `netd daemon` flags.
    daemon_args: Vec<String>,
}

impl Lab {
    fn new(dp: Dp, opts: &Opts) -> Result<Lab> {
        let p = format!("{}-{}", prefix(), dp.short());
        let lab = Lab {
            dp,
            host: format!("{p}-host"),
            client: format!("{p}-client"),
            ctr: format!("{p}-c"),
            dir: std::env::temp_dir().join(&p),
            daemon: None,
            servers: Vec::new(),
            target: if dp == Dp::Plain {
                format!("{CTR_NET}.2")
            } else {
                HOST_IP.into()
            },
            netd_pid: None,
            dockerd: None,
            cni_result: None,
            daemon_args: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir)?;
        for ns in [&lab.host, &lab.client] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            &lab.host,
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "cl0",
            "netns",
            &lab.client,
        ])?;
        ip(&[
            "-n",
            &lab.host,
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            "up0",
        ])?;
        ip(&["-n", &lab.host, "link", "set", "up0", "up"])?;
        ip(&[
            "-n",
            &lab.client,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "cl0",
        ])?;
        ip(&["-n", &lab.client, "link", "set", "cl0", "up"])?;
        ip(&["-n", &lab.host, "route", "add", "default", "via", CLIENT_IP])?;
        in_ns(&lab.host, 0, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        if dp.is_docker() {
            // dockerd makes the container's namespace; it gets a name once it exists.
        } else if dp.is_peer() {
            // The peer's own tool makes the bridge and the veth.
            ip(&["netns", "add", &lab.ctr])?;
            ip(&["-n", &lab.ctr, "link", "set", "lo", "up"])?;
        } else if dp != Dp::Netd {
            // The hand-made bridge of PEERS.md.
            ip(&["netns", "add", &lab.ctr])?;
            ip(&["-n", &lab.ctr, "link", "set", "lo", "up"])?;
            ip(&["-n", &lab.host, "link", "add", "br0", "type", "bridge"])?;
            ip(&[
                "-n",
                &lab.host,
                "addr",
                "add",
                &format!("{CTR_NET}.1/24"),
                "dev",
                "br0",
            ])?;
            ip(&["-n", &lab.host, "link", "set", "br0", "up"])?;
            ip(&[
                "-n", &lab.host, "link", "add", "vc1", "type", "veth", "peer", "name", "eth0",
                "netns", &lab.ctr,
            ])?;
            ip(&["-n", &lab.host, "link", "set", "vc1", "master", "br0", "up"])?;
            ip(&[
                "-n",
                &lab.ctr,
                "addr",
                "add",
                &format!("{CTR_NET}.2/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &lab.ctr, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &lab.ctr,
                "route",
                "add",
                "default",
                "via",
                &format!("{CTR_NET}.1"),
            ])?;
            if dp == Dp::Plain {
                ip(&[
                    "-n",
                    &lab.client,
                    "route",
                    "add",
                    &format!("{CTR_NET}.0/24"),
                    "via",
                    HOST_IP,
                ])?;
            }
        }
        let _ = opts;
        Ok(lab)
    }

    fn netd(&self, args: &[&str]) -> Result<String> {
        let sock = self.dir.join("run/netd.sock");
        let mut full = vec!["-H", sock.to_str().unwrap_or_default()];
        full.extend_from_slice(args);
        run(&self.netd_bin(), &full)
    }

    fn bpf_dir(&self) -> String {
        format!("/sys/fs/bpf/{}-nd", prefix())
    }

    fn netd_bin(&self) -> String {
        std::env::var("NETD_BIN").unwrap_or_else(|_| "netd".into())
    }

    /// Starts the daemon (netd only).
    fn start_daemon(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("daemon.log"))?;
        let child = Command::new(self.netd_bin())
            .args(["daemon", "--netns", &self.host, "--cgroup", "none"])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .args(["--bpf-dir", &format!("/sys/fs/bpf/{}-nd", prefix())])
            .args(["--netns-prefix", &format!("{}-nd-c-", prefix())])
            .args(&self.daemon_args)
            // Info: the log says where the time of each `run` goes.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.netd_pid = Some(child.id());
        self.daemon = Some(child);
        for _ in 0..400 {
            if self.netd(&["ps"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!(
            "netd did not start: {}",
            std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
        )
    }

    /// Publishes N ports (N-1 fillers, then the service ports) and starts the servers.
    /// Returns the time publishing took.
    fn publish(&mut self, n: usize, tester: &Path) -> Result<Duration> {
        let t = tester.display().to_string();
        let servers = format!(
            "{t} serve-echo {P_RR} & {t} serve-crr {P_CRR} & {t} serve-udp {P_UDP} & exec iperf3 -s -p {P_IPERF}"
        );
        let fillers = n.saturating_sub(1) as u16;
        let took = match self.dp {
            Dp::Netd => {
                self.start_daemon()?;
                let mut args: Vec<String> = ["run", "-d", "--name", "srv"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if fillers > 0 {
                    args.push("-p".into());
                    args.push(format!(
                        "{}-{}:{}-{}",
                        FILLER_BASE + 1,
                        FILLER_BASE + fillers,
                        FILLER_BASE + 1,
                        FILLER_BASE + fillers
                    ));
                }
                for p in [P_RR, P_CRR, P_IPERF] {
                    args.push("-p".into());
                    args.push(format!("{p}:{p}"));
                }
                args.push("-p".into());
                args.push(format!("{P_UDP}:{P_UDP}/udp"));
                // Pinned like the other datapaths' servers.
                args.extend(
                    ["--", "taskset", "-c", "1", "sh", "-c", &servers]
                        .iter()
                        .map(|s| s.to_string()),
                );
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let t0 = Instant::now();
                self.netd(&refs)?;
                let took = t0.elapsed();
                let v: Value = serde_json::from_str(&self.netd(&["inspect", "srv"])?)?;
                self.ctr = v[0]["Netns"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("/run/netns/")
                    .to_string();
                took
            }
            Dp::Plain => {
                self.servers
                    .push(spawn_in_ns(&self.ctr, 1, &["sh", "-c", &servers])?);
                Duration::ZERO
            }
            Dp::Dockerd | Dp::DockerdNoProxy => self.docker_setup(fillers, tester)?,
            Dp::Netavark | Dp::Cni => {
                let took = self.peer_setup(fillers)?;
                self.servers
                    .push(spawn_in_ns(&self.ctr, 1, &["sh", "-c", &servers])?);
                took
            }
            dp => {
                self.servers
                    .push(spawn_in_ns(&self.ctr, 1, &["sh", "-c", &servers])?);
                let rules = if dp == Dp::Nftables {
                    nft_rules(fillers)
                } else {
                    iptables_rules(fillers)
                };
                let file = self.dir.join("rules");
                std::fs::write(&file, rules)?;
                let restore = match dp {
                    Dp::IptablesNft => "iptables-nft-restore",
                    Dp::IptablesLegacy => "iptables-legacy-restore",
                    _ => "nft",
                };
                let f = file.display().to_string();
                let args: Vec<&str> = if dp == Dp::Nftables {
                    vec![restore, "-f", &f]
                } else {
                    vec![restore, &f]
                };
                let t0 = Instant::now();
                in_ns(&self.host, 0, &args)?;
                t0.elapsed()
            }
        };
        // The client's masquerade target.
        self.servers.push(spawn_in_ns(
            &self.client,
            0,
            &[&t, "serve-crr", &P_MASQ.to_string()],
        )?);
        std::thread::sleep(Duration::from_millis(300));
        Ok(took)
    }

    /// dockerd: starts it (with or without the userland proxy), then `docker run -p` with
    /// the N ports as a user would write them (a range of fillers, then the service
    /// ports), the servers being the container's own command, pinned with --cpuset-cpus.
    /// Returns the time `docker run` took.
    fn docker_setup(&mut self, fillers: u16, tester: &Path) -> Result<Duration> {
        let image = docker::build_image(&shared_dir(), tester)?;
        let dk = Dockerd::start(
            &self.host,
            &self.dir,
            &format!("{}-{}", prefix(), self.dp.short()),
            self.dp == Dp::Dockerd,
            &image,
        )?;
        let t = docker::TESTER;
        let servers = format!(
            "{t} serve-echo {P_RR} & {t} serve-crr {P_CRR} & {t} serve-udp {P_UDP} & exec iperf3 -s -p {P_IPERF}"
        );
        let mut args: Vec<String> = ["run", "-d", "--name", "srv", "--cpuset-cpus", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if fillers > 0 {
            let (a, b) = (FILLER_BASE + 1, FILLER_BASE + fillers);
            args.push("-p".into());
            args.push(format!("{a}-{b}:{a}-{b}"));
        }
        for (p, proto) in published_ports(0) {
            args.push("-p".into());
            args.push(format!("{p}:{p}/{proto}"));
        }
        args.extend([docker::IMAGE.to_string(), "sh".into(), "-c".into(), servers]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let t0 = Instant::now();
        let out = dk.docker(&refs);
        let took = t0.elapsed();
        self.dockerd = Some(dk);
        out?;
        let pid = self
            .dockerd
            .as_ref()
            .map(|d| d.container_pid("srv"))
            .transpose()?
            .unwrap_or(0);
        self.ctr = format!("{}-{}-c", prefix(), self.dp.short());
        ip(&["netns", "attach", &self.ctr, &pid.to_string()])?;
        Ok(took)
    }

    /// netavark or CNI bridge+portmap: N port mappings, one per port (as N `-p` would
    /// give), set up by the tool itself inside the host namespace. Returns its time.
    fn peer_setup(&mut self, fillers: u16) -> Result<Duration> {
        let ports = published_ports(fillers);
        let netns_path = format!("/run/netns/{}", self.ctr);
        let t0;
        if self.dp == Dp::Netavark {
            let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
            let maps: Vec<Value> = ports
                .iter()
                .map(|(p, proto)| serde_json::json!({"host_ip": "", "container_port": p, "host_port": p, "range": 1, "protocol": proto}))
                .collect();
            let conf = serde_json::json!({
                "container_id": hex('a'), "container_name": "srv", "port_mappings": maps,
                "networks": {"pnet": {"static_ips": [format!("{CTR_NET}.2")], "aliases": ["srv"], "interface_name": "eth0"}},
                "network_info": {"pnet": {"name": "pnet", "id": hex('b'), "driver": "bridge", "network_interface": "pnv0",
                    "created": "2025-01-01T00:00:00Z", "subnets": [{"subnet": format!("{CTR_NET}.0/24"), "gateway": format!("{CTR_NET}.1")}],
                    "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}}}
            });
            let file = self.dir.join("nv.json");
            std::fs::write(&file, serde_json::to_vec(&conf)?)?;
            let cfg = self.dir.join("nv-config");
            std::fs::create_dir_all(&cfg)?;
            t0 = Instant::now();
            let o = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.host,
                    "/usr/lib/podman/netavark",
                    "--config",
                ])
                .arg(&cfg)
                .args(["setup", &netns_path])
                .stdin(std::fs::File::open(&file)?)
                .output()?;
            if !o.status.success() {
                bail!(
                    "netavark setup: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
        } else {
            t0 = Instant::now();
            let result = self.cni("ADD", "bridge", &self.cni_bridge_conf())?;
            let maps: Vec<Value> = ports
                .iter()
                .map(|(p, proto)| serde_json::json!({"hostPort": p, "containerPort": p, "protocol": proto}))
                .collect();
            let portmap = serde_json::json!({"cniVersion": "1.0.0", "name": "pcni", "type": "portmap",
                "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": maps}, "prevResult": result});
            self.cni("ADD", "portmap", &portmap)?;
            self.cni_result = Some(portmap);
        }
        Ok(t0.elapsed())
    }

    fn cni_bridge_conf(&self) -> Value {
        let data = self.dir.join("cni-ipam");
        serde_json::json!({"cniVersion": "1.0.0", "name": "pcni", "type": "bridge", "bridge": "pcni0",
            "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "subnet": format!("{CTR_NET}.0/24"), "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data}})
    }

    /// Runs CNI plugin `name` with `command` (ADD or DEL) in the host namespace.
    fn cni(&self, command: &str, name: &str, conf: &Value) -> Result<Value> {
        use std::io::Write;
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.host, &format!("/usr/lib/cni/{name}")])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "ndbsrv")
            .env("CNI_NETNS", format!("/run/netns/{}", self.ctr))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut i) = c.stdin.take() {
            i.write_all(&serde_json::to_vec(conf)?)?;
        }
        let o = c.wait_with_output()?;
        if !o.status.success() {
            bail!(
                "CNI {command} {name}: {} {}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }

    /// Time to remove everything published (the container, for the agents; the rules,
    /// for the hand-written rule sets).
    fn remove(&mut self) -> Result<Duration> {
        let t0 = Instant::now();
        match self.dp {
            Dp::Netd => {
                self.netd(&["rm", "-f", "srv"])?;
            }
            Dp::Dockerd | Dp::DockerdNoProxy => {
                if let Some(dk) = &self.dockerd {
                    dk.docker(&["rm", "-f", "srv"])?;
                }
            }
            Dp::IptablesNft | Dp::IptablesLegacy => {
                // One transaction, as a restore, that empties the container's chains.
                let file = self.dir.join("remove");
                std::fs::write(
                    &file,
                    "*nat\n-F DOCKER\n-A DOCKER -i br0 -j RETURN\nCOMMIT\n*filter\n-F DOCKER\nCOMMIT\n",
                )?;
                let restore = if self.dp == Dp::IptablesNft {
                    "iptables-nft-restore"
                } else {
                    "iptables-legacy-restore"
                };
                let t0 = Instant::now();
                in_ns(
                    &self.host,
                    0,
                    &[restore, "--noflush", &file.display().to_string()],
                )?;
                return Ok(t0.elapsed());
            }
            Dp::Nftables => {
                let file = self.dir.join("remove");
                std::fs::write(
                    &file,
                    "flush chain ip docker DOCKER\nflush chain ip docker FWD\n",
                )?;
                let t0 = Instant::now();
                in_ns(&self.host, 0, &["nft", "-f", &file.display().to_string()])?;
                return Ok(t0.elapsed());
            }
            Dp::Netavark => {
                let o = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &self.host,
                        "/usr/lib/podman/netavark",
                        "--config",
                    ])
                    .arg(self.dir.join("nv-config"))
                    .args(["teardown", &format!("/run/netns/{}", self.ctr)])
                    .stdin(std::fs::File::open(self.dir.join("nv.json"))?)
                    .output()?;
                if !o.status.success() {
                    bail!(
                        "netavark teardown: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                }
            }
            Dp::Cni => {
                if let Some(portmap) = self.cni_result.take() {
                    self.cni("DEL", "portmap", &portmap)?;
                    self.cni("DEL", "bridge", &self.cni_bridge_conf())?;
                }
            }
            Dp::Plain => return Ok(Duration::ZERO),
        }
        Ok(t0.elapsed())
    }

    /// Time to publish one more port with N already published.
    fn one_more(&self) -> Result<Duration> {
        let t0 = Instant::now();
        match self.dp {
            Dp::Netd => {
                self.netd(&[
                    "run", "-d", "--name", "extra", "-p", "31000:80", "--", "sleep", "600",
                ])?;
                let took = t0.elapsed();
                self.netd(&["rm", "-f", "extra"])?;
                Ok(took)
            }
            Dp::IptablesNft | Dp::IptablesLegacy => {
                let ipt = if self.dp == Dp::IptablesNft {
                    "iptables-nft"
                } else {
                    "iptables-legacy"
                };
                in_ns(
                    &self.host,
                    0,
                    &[
                        ipt,
                        "-t",
                        "nat",
                        "-A",
                        "DOCKER",
                        "!",
                        "-i",
                        "br0",
                        "-p",
                        "tcp",
                        "--dport",
                        "31000",
                        "-j",
                        "DNAT",
                        "--to-destination",
                        "172.30.0.2:80",
                    ],
                )?;
                in_ns(
                    &self.host,
                    0,
                    &[
                        ipt,
                        "-A",
                        "DOCKER",
                        "-d",
                        "172.30.0.2/32",
                        "!",
                        "-i",
                        "br0",
                        "-o",
                        "br0",
                        "-p",
                        "tcp",
                        "--dport",
                        "80",
                        "-j",
                        "ACCEPT",
                    ],
                )?;
                let took = t0.elapsed();
                Ok(took)
            }
            Dp::Nftables => {
                in_ns(
                    &self.host,
                    0,
                    &[
                        "nft",
                        "add",
                        "rule",
                        "ip",
                        "docker",
                        "DOCKER",
                        "iifname",
                        "!=",
                        "br0",
                        "tcp",
                        "dport",
                        "31000",
                        "dnat",
                        "to",
                        "172.30.0.2:80",
                    ],
                )?;
                Ok(t0.elapsed())
            }
            // As for netd: a container with one published port (Docker has no way to add
            // a port to a running container).
            Dp::Dockerd | Dp::DockerdNoProxy => {
                let dk = self
                    .dockerd
                    .as_ref()
                    .ok_or_else(|| anyhow!("dockerd is not running"))?;
                let t0 = Instant::now();
                dk.docker(&[
                    "run",
                    "-d",
                    "--name",
                    "extra",
                    "-p",
                    "31000:80",
                    docker::IMAGE,
                    "sleep",
                    "600",
                ])?;
                let took = t0.elapsed();
                dk.docker(&["rm", "-f", "extra"])?;
                Ok(took)
            }
            // netavark's and CNI's tools set up a whole container: no "one more port".
            Dp::Plain | Dp::Netavark | Dp::Cni => Ok(Duration::ZERO),
        }
    }

    /// The phases of netd's `run` of container `name`, from its log line, and the time
    /// of the port map updates among them (microseconds).
    fn netd_phases(&self, name: &str) -> Option<(String, f64)> {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).ok()?;
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(&format!("container {name} (")) && l.contains("created in"))?;
        let phases = line.split("created in ").nth(1)?.trim().to_string();
        let ports_us = phases
            .split(['(', ','])
            .map(str::trim)
            .find(|s| s.starts_with("ports/"))
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())?;
        Some((phases, ports_us))
    }

    fn flush_conntrack(&self) {
        match self.dp {
            Dp::Netd => {
                let _ = self.netd(&["conntrack", "flush"]);
            }
            _ => {
                let _ = in_ns(&self.host, 0, &["conntrack", "-F"]);
            }
        }
    }

    /// The agent's RSS, the memlock of netd's maps, and the RSS of dockerd's userland
    /// proxies, in bytes.
    fn memory(&self) -> (u64, u64, u64) {
        if let Some(dk) = &self.dockerd {
            let (agent, proxies) = dk.memory(&self.host);
            return (agent, 0, proxies);
        }
        let Some(pid) = self.netd_pid else {
            return (0, 0, 0);
        };
        let rss = rss_of(Path::new(&format!("/proc/{pid}")));
        let maps = run("bpftool", &["-j", "map", "show"])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            // One netd runs at a time in the bench: its maps are the NETD_* ones.
            .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("NETD_")))
            .map(|m| m["bytes_memlock"].as_u64().unwrap_or(0))
            .sum();
        (rss, maps, 0)
    }

    fn teardown(&mut self) {
        for mut s in self.servers.drain(..) {
            let _ = s.kill();
            let _ = s.wait();
        }
        if self.dp == Dp::Netd {
            let _ = self.netd(&["rm", "-f", "srv"]);
            let _ = self.netd(&["rm", "-f", "extra"]);
            if let Some(mut d) = self.daemon.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &d.id().to_string()])
                    .status();
                let _ = d.wait();
            }
            let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}-nd", prefix()));
        }
        if let Some(mut dk) = self.dockerd.take() {
            let _ = dk.docker(&["rm", "-f", "srv", "extra"]);
            dk.stop();
        }
        for ns in [&self.ctr, &self.client, &self.host] {
            if Path::new("/run/netns").join(ns).exists() {
                kill_ns(ns);
                let _ = ip(&["netns", "del", ns]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// VmRSS of the process at `proc_dir` (/proc/PID), in bytes.
fn rss_of(proc_dir: &Path) -> u64 {
    std::fs::read_to_string(proc_dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

/// Files every lab of this run shares (the dockerd image).
fn shared_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{}-shared", prefix()))
}

/// The ports every datapath publishes, in order: N-1 fillers, then the service ports,
/// so that a linear rule chain walks all N rules before it matches the measured ones.
fn published_ports(fillers: u16) -> Vec<(u16, &'static str)> {
    let mut ports: Vec<(u16, &str)> = (1..=fillers).map(|i| (FILLER_BASE + i, "tcp")).collect();
    ports.extend([
        (P_RR, "tcp"),
        (P_CRR, "tcp"),
        (P_IPERF, "tcp"),
        (P_UDP, "udp"),
    ]);
    ports
}

/// Docker's rules for the container's ports (shared/PEERS.md), as an iptables-restore
/// file: a DOCKER nat chain with one DNAT per port and one FORWARD accept per port.
fn iptables_rules(fillers: u16) -> String {
    let c = format!("{CTR_NET}.2");
    let mut nat = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n");
    nat += "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n";
    nat += "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n";
    let _ = writeln!(nat, "-A POSTROUTING -s {CTR_NET}.0/24 -o up0 -j MASQUERADE");
    nat += "-A DOCKER -i br0 -j RETURN\n";
    let mut fwd = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n");
    fwd += "-A FORWARD -i br0 -o br0 -j DROP\n";
    fwd += "-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    fwd += "-A FORWARD -o br0 -j DOCKER\n";
    fwd += "-A FORWARD -i br0 ! -o br0 -j ACCEPT\n";
    let ports = published_ports(fillers);
    for (p, proto) in ports {
        let _ = writeln!(
            nat,
            "-A DOCKER ! -i br0 -p {proto} --dport {p} -j DNAT --to-destination {c}:{p}"
        );
        let _ = writeln!(
            fwd,
            "-A DOCKER -d {c}/32 ! -i br0 -o br0 -p {proto} --dport {p} -j ACCEPT"
        );
    }
    format!("{nat}COMMIT\n{fwd}COMMIT\n")
}

/// The same rules in native nftables (one rule per port, linear, as Docker's are).
fn nft_rules(fillers: u16) -> String {
    let c = format!("{CTR_NET}.2");
    let mut dnat = String::new();
    let mut accept = String::new();
    let ports = published_ports(fillers);
    for (p, proto) in ports {
        // nft 1.0.6 wants a newline after a dnat statement.
        let _ = writeln!(
            dnat,
            "    iifname != \"br0\" {proto} dport {p} dnat to {c}:{p}"
        );
        let _ = writeln!(
            accept,
            "    ip daddr {c} iifname != \"br0\" oifname \"br0\" {proto} dport {p} accept"
        );
    }
    format!(
        "table ip docker {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat;\n    fib daddr type local jump DOCKER\n  }}\n  chain DOCKER {{\n{dnat}  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat;\n    ip saddr {CTR_NET}.0/24 oifname \"up0\" masquerade\n  }}\n  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    iifname \"br0\" oifname \"br0\" drop\n    oifname \"br0\" ct state established,related accept\n    oifname \"br0\" jump FWD\n    iifname \"br0\" oifname != \"br0\" accept\n  }}\n  chain FWD {{\n{accept}  }}\n}}\n"
    )
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Sample {
    rr_rate: f64,
    rr_p50_us: u64,
    rr_p99_us: u64,
    crr_rate: f64,
    crr_p50_us: u64,
    crr_p99_us: u64,
    crr_errors: u64,
    udp_rr_rate: f64,
    tput1_gbps: f64,
    tput2_gbps: f64,
    masq_crr_rate: f64,
}

fn tester_load(ns: &str, tester: &Path, kind: &str, addr: &str, secs: f64) -> Result<Value> {
    let out = in_ns(
        ns,
        0,
        &[
            &tester.display().to_string(),
            kind,
            addr,
            &format!("{secs}"),
        ],
    )?;
    serde_json::from_str(out.trim()).with_context(|| format!("tester output {out:?}"))
}

fn iperf(ns: &str, addr: &str, streams: usize, secs: f64) -> Result<f64> {
    let t = format!("{}", secs.ceil().max(1.0) as u64);
    let out = in_ns(
        ns,
        0,
        &[
            "iperf3",
            "-c",
            addr,
            "-p",
            &P_IPERF.to_string(),
            "-t",
            &t,
            "-P",
            &streams.to_string(),
            "-J",
        ],
    )?;
    let v: Value = serde_json::from_str(&out)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow!("iperf3 gave no result"))
}

fn measure(lab: &Lab, tester: &Path, secs: f64) -> Result<Sample> {
    let t = |p: u16| format!("{}:{p}", lab.target);
    let rr = tester_load(&lab.client, tester, "rr", &t(P_RR), secs)?;
    lab.flush_conntrack();
    // SYN retries after a conntrack flush stall for a second: let things settle.
    std::thread::sleep(Duration::from_millis(500));
    let crr = tester_load(&lab.client, tester, "crr", &t(P_CRR), secs)?;
    let udp = tester_load(&lab.client, tester, "udprr", &t(P_UDP), secs)?;
    let tput1 = iperf(&lab.client, &lab.target, 1, secs)?;
    let tput2 = iperf(&lab.client, &lab.target, 2, secs)?;
    lab.flush_conntrack();
    std::thread::sleep(Duration::from_millis(500));
    let masq = tester_load(
        &lab.ctr,
        tester,
        "crr",
        &format!("{CLIENT_IP}:{P_MASQ}"),
        secs,
    )?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    Ok(Sample {
        rr_rate: f(&rr, "rate"),
        rr_p50_us: u(&rr, "p50_us"),
        rr_p99_us: u(&rr, "p99_us"),
        crr_rate: f(&crr, "rate"),
        crr_p50_us: u(&crr, "p50_us"),
        crr_p99_us: u(&crr, "p99_us"),
        crr_errors: u(&crr, "errors"),
        udp_rr_rate: f(&udp, "rate"),
        tput1_gbps: tput1,
        tput2_gbps: tput2,
        masq_crr_rate: if lab.dp == Dp::Plain {
            0.0
        } else {
            f(&masq, "rate")
        },
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Cell {
    samples: Vec<Sample>,
    publish_ms: f64,
    one_more_ms: f64,
    remove_ms: f64,
    rss_bytes: u64,
    map_bytes: u64,
    /// dockerd's userland proxies.
    proxy_rss_bytes: u64,
    /// netd: where the time of the '+1 port' container went, from the daemon's log.
    one_more_phases: String,
    /// netd: of that, the time its port map updates took.
    one_more_ports_us: f64,
}

/// (median, min, max)
fn stats(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (m, s[0], s[s.len() - 1])
}

fn med(cell: &Cell, f: impl Fn(&Sample) -> f64) -> f64 {
    stats(&cell.samples.iter().map(f).collect::<Vec<_>>()).0
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    if let Some(file) = &opts.replot {
        return replot(file, &opts.out);
    }
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 5 });
    let ports = opts.ports.clone().unwrap_or(if opts.quick {
        vec![1, 1000]
    } else {
        vec![1, 100, 1000, 10000]
    });
    // Nine datapaths, five rounds, four N, and the peers' minutes of setup at N=1000 fit
    // in 30 minutes with 1 s per load run; medians of five rounds make up for it.
    let secs = opts.secs.unwrap_or(1.0);
    let peer_max_ports = opts
        .peer_max_ports
        .unwrap_or(if opts.quick { 100 } else { 1000 });
    let dps: Vec<Dp> = Dp::ALL
        .into_iter()
        .filter(|d| {
            opts.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|x| x == d.name()))
        })
        .collect();
    std::env::set_var("NETD_BIN", &opts.netd);
    sweep();
    std::fs::create_dir_all(&opts.out)?;
    let kernel = run("uname", &["-r"]).unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "netd bench: kernel {}, {cpus} CPUs, {rounds} round(s), N = {ports:?}, {secs} s per run; client on CPU 0, servers on CPU 1",
        kernel.trim()
    );
    for tool in [
        "iptables-nft",
        "iptables-legacy",
        "nft",
        "iperf3",
        "conntrack",
    ] {
        if let Ok(v) = run(tool, &["--version"]).or_else(|_| run(tool, &["-V"])) {
            println!("  {tool}: {}", v.lines().next().unwrap_or("").trim());
        }
    }
    for (tool, args) in [
        ("dockerd", &["--version"][..]),
        ("/usr/lib/podman/netavark", &["--version"][..]),
    ] {
        match run(tool, args) {
            Ok(v) => println!("  {tool}: {}", v.lines().next().unwrap_or("").trim()),
            Err(_) => println!("  {tool}: not installed (its datapath will be skipped)"),
        }
    }

    let total = (ports.len() * dps.len() * rounds) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: BTreeMap<(usize, Dp), Cell> = BTreeMap::new();
    for &n in &ports {
        let mut labs = Vec::new();
        for &dp in &dps {
            if dp.is_peer() && n > peer_max_ports {
                bar.println(format!(
                    "skipping {} at N={n}: it publishes one rule at a time (one to two minutes per 1,000 ports to set up and remove); raise --peer-max-ports to include it",
                    dp.name()
                ));
                bar.inc(rounds as u64);
                continue;
            }
            bar.set_message(format!("N={n}: setting up {}", dp.name()));
            let mut lab = Lab::new(dp, &opts)?;
            let took = match lab.publish(n, &opts.tester) {
                Ok(t) => t,
                // A real peer that cannot run here is skipped, and says why.
                Err(e) if dp.is_peer() => {
                    bar.println(format!("skipping {} at N={n}: {e:#}", dp.name()));
                    lab.teardown();
                    bar.inc(rounds as u64);
                    continue;
                }
                Err(e) => return Err(e.context(format!("{} at N={n}", dp.name()))),
            };
            let cell = results.entry((n, dp)).or_default();
            cell.publish_ms = took.as_secs_f64() * 1e3;
            cell.one_more_ms = lab
                .one_more()
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(f64::NAN);
            if dp == Dp::Netd {
                if let Some((phases, ports_us)) = lab.netd_phases("extra") {
                    cell.one_more_phases = phases;
                    cell.one_more_ports_us = ports_us;
                }
            }
            labs.push(lab);
        }
        for r in 0..rounds {
            for lab in &labs {
                bar.set_message(format!("N={n} round {}: {}", r + 1, lab.dp.name()));
                let s = measure(lab, &opts.tester, secs)
                    .with_context(|| format!("{} at N={n}", lab.dp.name()))?;
                results.entry((n, lab.dp)).or_default().samples.push(s);
                bar.inc(1);
            }
        }
        for mut lab in labs {
            let cell = results.entry((n, lab.dp)).or_default();
            let (rss, maps, proxies) = lab.memory();
            cell.rss_bytes = rss;
            cell.map_bytes = maps;
            cell.proxy_rss_bytes = proxies;
            bar.set_message(format!("N={n}: removing {}", lab.dp.name()));
            cell.remove_ms = lab
                .remove()
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(f64::NAN);
            lab.teardown();
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(shared_dir());
    report(&results, &ports, &dps, &opts.out)?;
    if dps.contains(&Dp::Netd) {
        println!("measuring API latency with a full conntrack table...");
        let c = ctfull::measure(&opts)?;
        print!("{}", ctfull::report(&c));
        let f = opts.out.join("api-latency.json");
        std::fs::write(&f, serde_json::to_vec_pretty(&c)?)?;
        println!("  (also in {})", f.display());
    }
    Ok(())
}

fn replot(file: &Path, out: &Path) -> Result<()> {
    #[derive(Deserialize)]
    struct Row {
        ports: usize,
        datapath: String,
        cell: Cell,
    }
    let rows: Vec<Row> = serde_json::from_slice(
        &std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
    )
    .with_context(|| format!("{} is not a bench JSON file", file.display()))?;
    let mut results = BTreeMap::new();
    for r in rows {
        let dp = Dp::ALL
            .into_iter()
            .find(|d| d.name() == r.datapath)
            .ok_or_else(|| anyhow!("unknown datapath {:?} in {}", r.datapath, file.display()))?;
        results.insert((r.ports, dp), r.cell);
    }
    let mut ports: Vec<usize> = results.keys().map(|(n, _)| *n).collect();
    ports.dedup();
    let mut dps: Vec<Dp> = results.keys().map(|(_, d)| *d).collect();
    dps.sort();
    dps.dedup();
    std::fs::create_dir_all(out)?;
    report(&results, &ports, &dps, out)
}

fn report(
    results: &BTreeMap<(usize, Dp), Cell>,
    ports: &[usize],
    dps: &[Dp],
    out: &Path,
) -> Result<()> {
    let get = |n: usize, dp: Dp| results.get(&(n, dp));
    let mut text = String::new();
    for &n in ports {
        let _ = writeln!(text, "\nN = {n} published ports: traffic (medians of the rounds, min-max of conn/s; /nft = against iptables-nft, /plain = against plain routing)");
        let _ = writeln!(
            text,
            "{:16} {:>8} {:>5} {:>6} {:>10} {:>14} {:>5} {:>6} {:>10} {:>8} {:>7} {:>7} {:>8}",
            "datapath",
            "rr/s",
            "/nft",
            "/plain",
            "rr p50/99",
            "conn/s",
            "/nft",
            "/plain",
            "conn p50/99",
            "udp rr/s",
            "Gb/s x1",
            "Gb/s x2",
            "masq c/s"
        );
        for &dp in dps {
            let Some(c) = get(n, dp) else { continue };
            let base = |d: Dp, f: &dyn Fn(&Sample) -> f64| {
                get(n, d).map(|b| med(b, f)).filter(|x| *x > 0.0)
            };
            let ratio = |mine: f64, d: Dp, f: &dyn Fn(&Sample) -> f64| {
                base(d, f)
                    .map(|b| format!("{:.2}", mine / b))
                    .unwrap_or_else(|| "-".into())
            };
            let rr = med(c, |s| s.rr_rate);
            let crr = med(c, |s| s.crr_rate);
            let (_, lo, hi) = stats(&c.samples.iter().map(|s| s.crr_rate).collect::<Vec<_>>());
            let masq = if dp == Dp::Plain {
                "-".to_string()
            } else {
                format!("{:.0}", med(c, |s| s.masq_crr_rate))
            };
            let _ = writeln!(
                text,
                "{:16} {:>8.0} {:>5} {:>6} {:>10} {:>14} {:>5} {:>6} {:>10} {:>8.0} {:>7.2} {:>7.2} {:>8}",
                dp.name(),
                rr,
                ratio(rr, Dp::IptablesNft, &|s| s.rr_rate),
                ratio(rr, Dp::Plain, &|s| s.rr_rate),
                format!("{:.0}/{:.0}", med(c, |s| s.rr_p50_us as f64), med(c, |s| s.rr_p99_us as f64)),
                format!("{crr:.0} ({lo:.0}-{hi:.0})"),
                ratio(crr, Dp::IptablesNft, &|s| s.crr_rate),
                ratio(crr, Dp::Plain, &|s| s.crr_rate),
                format!("{:.0}/{:.0}", med(c, |s| s.crr_p50_us as f64), med(c, |s| s.crr_p99_us as f64)),
                med(c, |s| s.udp_rr_rate),
                med(c, |s| s.tput1_gbps),
                med(c, |s| s.tput2_gbps),
                masq,
            );
        }
        let _ = writeln!(text, "\nN = {n}: control plane and memory (latencies in us; agent = netd, or dockerd+containerd+shims)");
        let _ = writeln!(
            text,
            "{:16} {:>11} {:>11} {:>11} {:>9} {:>11} {:>11}",
            "datapath",
            "publish ms",
            "+1 port ms",
            "remove ms",
            "agent MB",
            "proxies MB",
            "BPF maps MB"
        );
        let mb = |b: u64| {
            if b == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", b as f64 / 1e6)
            }
        };
        let ms = |v: f64, applies: bool| {
            if applies && v.is_finite() {
                format!("{v:.1}")
            } else {
                "-".to_string()
            }
        };
        for &dp in dps {
            let Some(c) = get(n, dp) else { continue };
            let _ = writeln!(
                text,
                "{:16} {:>11} {:>11} {:>11} {:>9} {:>11} {:>11}",
                dp.name(),
                ms(c.publish_ms, dp != Dp::Plain),
                ms(
                    c.one_more_ms,
                    !matches!(dp, Dp::Plain | Dp::Netavark | Dp::Cni)
                ),
                ms(c.remove_ms, dp != Dp::Plain),
                mb(c.rss_bytes),
                mb(c.proxy_rss_bytes),
                mb(c.map_bytes),
            );
        }
        if let Some(c) = get(n, Dp::Netd) {
            if !c.one_more_phases.is_empty() {
                let _ = writeln!(
                    text,
                    "netd '+1 port' is a whole container; of it, the port map update took {:.0} us. Phases: {}",
                    c.one_more_ports_us, c.one_more_phases
                );
            }
        }
    }
    print!("{text}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let json_path = out.join(format!("bench-{stamp}.json"));
    let raw: Vec<Value> = results
        .iter()
        .map(|((n, dp), c)| serde_json::json!({"ports": n, "datapath": dp.name(), "cell": c}))
        .collect();
    std::fs::write(&json_path, serde_json::to_string_pretty(&raw)?)?;
    std::fs::write(out.join("latest.txt"), &text)?;
    let svg = out.join("bench.svg");
    plot(results, ports, dps, &svg)?;
    println!(
        "\nraw samples: {}\nplot: {}",
        json_path.display(),
        svg.display()
    );
    Ok(())
}

fn plot(
    results: &BTreeMap<(usize, Dp), Cell>,
    ports: &[usize],
    dps: &[Dp],
    path: &Path,
) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(550);
    let colors = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        RGBColor(255, 140, 0),
        RGBColor(139, 69, 19),
        CYAN,
        RGBColor(128, 128, 0),
        BLACK,
    ];
    let xmax = *ports.iter().max().unwrap_or(&1) as f64;
    let xs = |n: usize| (n.max(1) as f64).log10();
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                f: &dyn Fn(&Cell) -> f64|
     -> Result<()> {
        let ymax = results
            .values()
            .map(f)
            .filter(|v| v.is_finite())
            .fold(1.0_f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..xmax.log10().max(1.0), 0.0..ymax)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("published ports (log10 N)")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, dp) in dps.iter().enumerate() {
            let pts: Vec<(f64, f64)> = ports
                .iter()
                .filter_map(|&n| results.get(&(n, *dp)).map(|c| (xs(n), f(c))))
                .filter(|(_, y)| y.is_finite())
                .collect();
            if pts.is_empty() {
                continue;
            }
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(dp.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    };
    draw(&left, "new connections per second", &|c| {
        med(c, |s| s.crr_rate)
    })?;
    // Publish times span 1 ms to a minute: a log scale keeps every datapath readable.
    draw(&right, "time to publish N ports (log10 ms)", &|c| {
        if c.publish_ms > 0.0 {
            c.publish_ms.log10().max(0.0)
        } else {
            f64::NAN
        }
    })?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
