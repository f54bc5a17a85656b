//! `cargo xtask bench --ipv6`: a published port over IPv6 (issue #12), three ways, each
//! in a lab of its own shaped like the main bench's (a host namespace, a client on its
//! uplink, a container behind a bridge with its servers on CPU 1), IPv6 end to end:
//!
//! - netd: a `--ipv6` network with a fixed /64, the container published with `-p` (N-1
//!   filler ports and the service ports, as the main bench); eBPF DNAT66 at the uplink.
//! - ip6tables-nft: Docker's IPv6 rules on a hand-made bridge (peers/ip6tables.rs),
//!   the kernel's forwarding and conntrack.
//! - plain: no NAT, the client routes the container's /64 via the host and sends to the
//!   container's own address (the limit).
//!
//! The client (CPU 0) sends to `[fd00:199::1]:PORT` (the container for plain): TCP
//! request/response and connection rate with the tester, every way in turn each round
//! (interleaved), the connection tracking table emptied before each connection-rate run.
//! Medians with min-max, per N.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netd_lab::{
    cmd::{in_ns, ip},
    Lab, LabName, LabOptions, Uplink,
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    cell::stats,
    dp::{FILLER_BASE, P_CRR, P_IPERF, P_RR, P_UDP, UPLINK},
    measure::tester_load,
    peers::{fillers, hand_made_bridge, ip6tables, timed},
};

/// The uplink's IPv6 addresses (the e2e lab's): ports are published on the host's.
const HOST6: &str = "fd00:199::1";
const CLIENT6: &str = "fd00:199::2";
/// The hand-made bridge's /64 (ip6tables and plain): gateway ::1, container ::2.
const BRIDGE6: &str = "fd00:30::";
/// netd's network.
const NETD_SUBNET4: &str = "172.31.6.0/24";
const NETD_SUBNET6: &str = "fd00:31::/64";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Way {
    Netd,
    Ip6tablesNft,
    Plain,
}

impl Way {
    pub const ALL: [Way; 3] = [Way::Netd, Way::Ip6tablesNft, Way::Plain];

    pub fn name(self) -> &'static str {
        match self {
            Way::Netd => "netd",
            Way::Ip6tablesNft => "ip6tables-nft",
            Way::Plain => "plain",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Way::Netd => "6nd",
            Way::Ip6tablesNft => "6in",
            Way::Plain => "6pl",
        }
    }
}

/// The ways `--only` names (all without it); an unknown name is an error.
pub fn ways(only: Option<&[String]>) -> Result<Vec<Way>> {
    let Some(only) = only else {
        return Ok(Way::ALL.to_vec());
    };
    if let Some(bad) = only
        .iter()
        .find(|o| !Way::ALL.iter().any(|w| w.name() == *o))
    {
        let names: Vec<&str> = Way::ALL.iter().map(|w| w.name()).collect();
        bail!(
            "--only: with --ipv6 no datapath is called {bad:?} (there are {})",
            names.join(", ")
        );
    }
    Ok(Way::ALL
        .into_iter()
        .filter(|w| only.iter().any(|o| o == w.name()))
        .collect())
}

/// One way's figures of one round.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Round {
    pub rr_rate: f64,
    pub rr_p50_us: f64,
    pub rr_p99_us: f64,
    pub crr_rate: f64,
    pub crr_p50_us: f64,
    pub crr_p99_us: f64,
    pub crr_errors: f64,
}

/// One way at one N.
#[derive(Debug, Serialize)]
pub struct Figures {
    pub ports: usize,
    pub way: Way,
    /// Time to publish the N ports (netd's `run`, the ip6tables restore; 0 for plain).
    pub publish_ms: f64,
    pub rounds: Vec<Round>,
}

/// What the run needs from the command line.
pub struct Run<'a> {
    pub netd: &'a std::path::Path,
    pub tester: &'a std::path::Path,
    pub ways: &'a [Way],
    pub ports: &'a [usize],
    pub rounds: usize,
    pub secs: f64,
}

/// A way set up in its lab: where the client sends, and how to empty conntrack.
struct Setup {
    way: Way,
    /// The address the client sends to (no brackets).
    target: String,
    publish: Duration,
    lab: Lab,
}

impl Setup {
    fn flush_conntrack(&self) {
        let _ = match self.way {
            Way::Netd => self.lab.cli(&["conntrack", "flush"]).map(drop),
            Way::Ip6tablesNft | Way::Plain => {
                in_ns(&self.lab.host, Some(0), &["conntrack", "-F", "-f", "ipv6"]).map(drop)
            }
        };
    }
}

fn lab(way: Way, netd: &std::path::Path) -> Result<Lab> {
    let lab = Lab::create(LabOptions {
        name: LabName::Unique {
            tag: crate::TAG,
            suffix: Some(way.short().into()),
        },
        // The main bench's uplink with the e2e lab's IPv6 /64 on top.
        uplink: Uplink {
            host_ip6: Some(HOST6),
            client_ip6: Some(CLIENT6),
            ..UPLINK
        },
        // netd's socket programs are not what the bench measures.
        cgroup: false,
        netd: netd.to_path_buf(),
        ..Default::default()
    })?;
    for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        in_ns(&lab.host, Some(0), &["sysctl", "-qw", sysctl])?;
    }
    Ok(lab)
}

/// The container's servers: IPv6 (on [::]) request/response and connection rate.
fn servers(tester: &std::path::Path) -> String {
    let t = tester.display();
    format!("{t} serve-echo6 {P_RR} & exec {t} serve-crr6 {P_CRR}")
}

/// The hand-made bridge of the main bench with the /64 BRIDGE6 on top (addresses
/// without duplicate address detection, usable at once); the container's namespace.
fn bridge6(lab: &mut Lab) -> Result<String> {
    let ctr = hand_made_bridge(lab)?;
    let (gw, addr) = (format!("{BRIDGE6}1"), format!("{BRIDGE6}2/64"));
    let gw_cidr = format!("{gw}/64");
    ip(&[
        "-n", &lab.host, "addr", "add", &gw_cidr, "dev", "br0", "nodad",
    ])?;
    ip(&["-n", &ctr, "addr", "add", &addr, "dev", "eth0", "nodad"])?;
    ip(&["-n", &ctr, "-6", "route", "add", "default", "via", &gw])?;
    Ok(ctr)
}

/// netd's daemon, a `--ipv6` network, and `netd run -p` of the N ports with the servers
/// as the container's command; the time `run` took.
fn netd_publish(lab: &mut Lab, n: usize, tester: &std::path::Path) -> Result<Duration> {
    lab.start_daemon()?;
    lab.cli(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        NETD_SUBNET4,
        "--subnet",
        NETD_SUBNET6,
        "bench6",
    ])?;
    let mut args: Vec<String> = ["run", "-d", "--name", "srv", "--network", "bench6"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let fillers = fillers(n);
    if fillers > 0 {
        let (a, b) = (FILLER_BASE + 1, FILLER_BASE + fillers);
        args.extend(["-p".into(), format!("{a}-{b}:{a}-{b}")]);
    }
    // The main bench's service ports (only rr and crr are measured here).
    for p in [P_RR, P_CRR, P_IPERF] {
        args.extend(["-p".into(), format!("{p}:{p}")]);
    }
    args.extend(["-p".into(), format!("{P_UDP}:{P_UDP}/udp")]);
    let servers = servers(tester);
    args.extend(
        ["--", "taskset", "-c", "1", "sh", "-c", &servers]
            .iter()
            .map(|s| s.to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    timed(|| lab.cli(&refs).map(drop).map_err(Into::into))
}

fn set_up(way: Way, n: usize, run: &Run) -> Result<Setup> {
    let mut lab = lab(way, run.netd)?;
    let ctr6 = format!("{BRIDGE6}2");
    let (target, publish) = match way {
        Way::Netd => (HOST6.to_string(), netd_publish(&mut lab, n, run.tester)?),
        Way::Ip6tablesNft => {
            let ctr = bridge6(&mut lab)?;
            lab.spawn_in(&ctr, Some(1), &["sh", "-c", &servers(run.tester)])?;
            let subnet = format!("{BRIDGE6}/64");
            let took = ip6tables::publish(&lab, fillers(n), &ctr6, &subnet)?;
            (HOST6.to_string(), took)
        }
        Way::Plain => {
            let ctr = bridge6(&mut lab)?;
            lab.spawn_in(&ctr, Some(1), &["sh", "-c", &servers(run.tester)])?;
            let net = format!("{BRIDGE6}/64");
            ip(&["-n", &lab.client, "-6", "route", "add", &net, "via", HOST6])?;
            (ctr6, Duration::ZERO)
        }
    };
    let s = Setup {
        way,
        target,
        publish,
        lab,
    };
    wait_serving(&s, run.tester)?;
    Ok(s)
}

/// Waits (up to 5 s) until a connection from the client through the way's datapath
/// gets its answer: the servers are up and the path works before anything is timed.
fn wait_serving(s: &Setup, tester: &std::path::Path) -> Result<()> {
    let at = format!("[{}]:{P_CRR}", s.target);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ok = tester_load(&s.lab.client, tester, "crr", &at, 0.05)
            .is_ok_and(|v| v["ops"].as_u64().unwrap_or(0) > 0);
        if ok {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{}: no TCP connection from the client to {at} within 5 s",
                s.way.name()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn round(s: &Setup, tester: &std::path::Path, secs: f64) -> Result<Round> {
    let at = |p: u16| format!("[{}]:{p}", s.target);
    let rr = tester_load(&s.lab.client, tester, "rr", &at(P_RR), secs)?;
    s.flush_conntrack();
    // SYN retries after a conntrack flush stall for a second: let things settle.
    std::thread::sleep(Duration::from_millis(500));
    let crr = tester_load(&s.lab.client, tester, "crr", &at(P_CRR), secs)?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Round {
        rr_rate: f(&rr, "rate"),
        rr_p50_us: f(&rr, "p50_us"),
        rr_p99_us: f(&rr, "p99_us"),
        crr_rate: f(&crr, "rate"),
        crr_p50_us: f(&crr, "p50_us"),
        crr_p99_us: f(&crr, "p99_us"),
        crr_errors: f(&crr, "errors"),
    })
}

/// For each N: every way set up, `rounds` rounds interleaved, torn down.
pub fn measure(run: &Run, progress: impl Fn(&str)) -> Result<Vec<Figures>> {
    let mut out = Vec::new();
    for &n in run.ports {
        let mut setups = Vec::new();
        for &way in run.ways {
            progress(&format!("N={n}: setting up {}", way.name()));
            let s = set_up(way, n, run).with_context(|| format!("{} at N={n}", way.name()))?;
            out.push(Figures {
                ports: n,
                way,
                publish_ms: s.publish.as_secs_f64() * 1e3,
                rounds: Vec::new(),
            });
            setups.push(s);
        }
        let first = out.len() - setups.len();
        for r in 0..run.rounds {
            for (i, s) in setups.iter().enumerate() {
                progress(&format!("N={n} round {}: {}", r + 1, s.way.name()));
                let fig = round(s, run.tester, run.secs)
                    .with_context(|| format!("{} at N={n}, round {}", s.way.name(), r + 1))?;
                out[first + i].rounds.push(fig);
            }
        }
        progress(&format!("N={n}: removing the labs"));
        drop(setups);
    }
    Ok(out)
}

/// The table: per N, one row per way, medians over the rounds with min-max of the
/// rates, and each rate against ip6tables' and plain routing's.
pub fn report(all: &[Figures]) -> String {
    let mut ports: Vec<usize> = all.iter().map(|f| f.ports).collect();
    ports.dedup();
    let mut t = String::new();
    for n in ports {
        let rows: Vec<&Figures> = all.iter().filter(|f| f.ports == n).collect();
        let med =
            |f: &Figures, g: fn(&Round) -> f64| stats(&f.rounds.iter().map(g).collect::<Vec<_>>());
        let base = |w: Way, g: fn(&Round) -> f64| {
            rows.iter()
                .find(|f| f.way == w)
                .map(|f| med(f, g).0)
                .filter(|x| *x > 0.0)
        };
        let ratio = |mine: f64, w: Way, g: fn(&Round) -> f64| {
            base(w, g)
                .map(|b| format!("{:.2}", mine / b))
                .unwrap_or_else(|| "-".into())
        };
        t += &format!("\nIPv6, N = {n} published ports (medians of the rounds, min-max; /ip6t = against ip6tables-nft, /plain = against plain routing)\n");
        t += &format!(
            "{:14} {:>20} {:>6} {:>6} {:>10} {:>20} {:>6} {:>6} {:>11} {:>7} {:>11}\n",
            "datapath",
            "rr/s",
            "/ip6t",
            "/plain",
            "rr p50/99",
            "conn/s",
            "/ip6t",
            "/plain",
            "conn p50/99",
            "errors",
            "publish ms"
        );
        for f in &rows {
            let (rr, rr_lo, rr_hi) = med(f, |r| r.rr_rate);
            let (crr, crr_lo, crr_hi) = med(f, |r| r.crr_rate);
            let publish = if f.way == Way::Plain {
                "-".to_string()
            } else {
                format!("{:.1}", f.publish_ms)
            };
            t += &format!(
                "{:14} {:>20} {:>6} {:>6} {:>10} {:>20} {:>6} {:>6} {:>11} {:>7.0} {:>11}\n",
                f.way.name(),
                format!("{rr:.0} ({rr_lo:.0}-{rr_hi:.0})"),
                ratio(rr, Way::Ip6tablesNft, |r| r.rr_rate),
                ratio(rr, Way::Plain, |r| r.rr_rate),
                format!(
                    "{:.0}/{:.0}",
                    med(f, |r| r.rr_p50_us).0,
                    med(f, |r| r.rr_p99_us).0
                ),
                format!("{crr:.0} ({crr_lo:.0}-{crr_hi:.0})"),
                ratio(crr, Way::Ip6tablesNft, |r| r.crr_rate),
                ratio(crr, Way::Plain, |r| r.crr_rate),
                format!(
                    "{:.0}/{:.0}",
                    med(f, |r| r.crr_p50_us).0,
                    med(f, |r| r.crr_p99_us).0
                ),
                med(f, |r| r.crr_errors).0,
                publish,
            );
        }
    }
    t
}
