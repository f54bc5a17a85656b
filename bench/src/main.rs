//! `cargo xtask bench`: netd side by side with the datapaths its users would otherwise
//! run, each in a lab of its own (netd-lab: a host namespace, a client namespace on its
//! uplink, a container namespace behind a bridge), with the same client and servers.
//!
//! Datapaths (peers/, one file each behind `trait Datapath`): netd (eBPF), Docker's
//! iptables rules (nft and legacy backends), the same rules in native nftables, plain
//! routing without NAT (the limit), and the real peers: dockerd with and without its
//! userland proxy, netavark, CNI bridge+portmap. For each N (published ports) every
//! datapath is set up once, then measured round by round, interleaved (A B C D A B C D
//! ...), and medians with min-max are reported (report.rs, plot.rs). netd also reports
//! its API latency with a full conntrack table (api_latency.rs, ct_table.rs).
//! Special modes measure one thing alone: `--dns` (dns.rs), `--overlay` (overlay.rs),
//! `--ipv6` (ipv6.rs), `--density` (density.rs).
//!
//! Nothing touches the root namespace: every name carries the `ndb-<pid>` prefix and is
//! removed at the end (or by the next run, if this one dies).
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use netd_lab::{cmd, Lab, LabName, LabOptions};

mod api_latency;
mod cell;
mod ct_table;
mod density;
mod dns;
mod dp;
mod ipv6;
mod measure;
mod overlay;
mod peers;
mod plot;
mod report;
mod restart;
mod rss;

use cell::Cell;
use peers::{Datapath, Dp, Env, P_MASQ, P_MASQ_UDP, UPLINK};

/// Tag of every name the bench makes (`ndb-PID-...`).
pub(crate) const TAG: &str = "ndb";

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
    /// dockerd-no-proxy, dockerd-netd, netavark, cni-portmap, plain).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The real peers (dockerd, netavark, CNI portmap) publish one rule (and dockerd one
    /// proxy per port and family) at a time: one to two minutes per 1,000 ports here, to
    /// set up and remove. Above this N they are skipped, with the reason printed, so that
    /// a full run stays under 30 minutes and a quick one under 3 (default: 1000, and 100
    /// with --quick).
    #[arg(long)]
    peer_max_ports: Option<usize>,
    /// Measure name resolution instead of traffic: netd's embedded DNS against
    /// Docker's and aardvark-dns, from a container, with dnsperf (`dns.rs`).
    #[arg(long)]
    dns: bool,
    /// Measure overlay networks instead: container to container across two nodes,
    /// netd's overlay against the kernel's VXLAN bridge with static FDB entries and
    /// the plain underlay (`overlay.rs`).
    #[arg(long, conflicts_with = "dns")]
    overlay: bool,
    /// Measure a published port over IPv6 instead: netd's DNAT66 against Docker's
    /// ip6tables rules (nft backend) and plain IPv6 routing, request/response and
    /// connection rate at N=1 and 10,000 (N=1 with --quick; `ipv6.rs`). --only takes
    /// netd, ip6tables-nft, plain here.
    #[arg(long, conflicts_with_all = ["dns", "overlay"])]
    ipv6: bool,
    /// Measure what one more container costs as the host fills up instead: one netd,
    /// containers on one user network up to the largest of --containers, probed at
    /// each (`density.rs`).
    #[arg(long, conflicts_with_all = ["dns", "overlay", "ipv6"])]
    density: bool,
    /// --density: the container counts to probe at (default 100,1000,5000; 100,1000
    /// with --quick).
    #[arg(long, value_delimiter = ',', requires = "density")]
    containers: Option<Vec<usize>>,
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

/// One datapath set up in its lab. Dropping it stops the datapath's own processes,
/// then removes the lab.
struct Setup {
    dp: Box<dyn Datapath>,
    lab: Lab,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.dp.teardown(&mut self.lab);
    }
}

/// A lab for datapath `dp`, its N ports published and the servers up; and how long
/// publishing took.
fn set_up(dp: Dp, n: usize, opts: &Opts, env: &Env) -> Result<(Setup, Duration)> {
    let mut lab = Lab::create(LabOptions {
        name: LabName::Unique {
            tag: TAG,
            suffix: Some(dp.short().into()),
        },
        uplink: UPLINK,
        // netd's socket programs are not what the bench measures.
        cgroup: false,
        netd: opts.netd.clone(),
        // Info: netd's log says where the time of each `run` goes.
        daemon_env: vec![("RUST_LOG".into(), "info".into())],
        ..Default::default()
    })?;
    cmd::in_ns(
        &lab.host,
        Some(0),
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
    )?;
    let dp = peers::open(dp, &mut lab, env)?;
    let mut s = Setup { dp, lab };
    let took = s.dp.publish(&mut s.lab, n)?;
    // The client's server that the container connects out to (masquerade).
    let client = s.lab.client.clone();
    let tester = opts.tester.display().to_string();
    s.lab.spawn_in(
        &client,
        Some(0),
        &[&tester, "serve-crr", &P_MASQ.to_string()],
    )?;
    s.lab.spawn_in(
        &client,
        Some(0),
        &[&tester, "serve-udp", &P_MASQ_UDP.to_string()],
    )?;
    measure::reuse_time_wait(&client)?;
    measure::reuse_time_wait(s.dp.container_ns())?;
    std::thread::sleep(Duration::from_millis(300));
    Ok((s, took))
}

fn ms(d: Result<Duration>) -> f64 {
    d.map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
}

/// The datapaths `--only` names (all without it); an unknown name is an error.
fn datapaths(only: Option<&[String]>) -> Result<Vec<Dp>> {
    let Some(only) = only else {
        return Ok(Dp::ALL.to_vec());
    };
    if let Some(bad) = only
        .iter()
        .find(|o| !Dp::ALL.iter().any(|d| d.name() == *o))
    {
        let names: Vec<&str> = Dp::ALL.iter().map(|d| d.name()).collect();
        bail!(
            "--only: no datapath is called {bad:?} (there are {})",
            names.join(", ")
        );
    }
    Ok(Dp::ALL
        .into_iter()
        .filter(|d| only.iter().any(|o| o == d.name()))
        .collect())
}

/// Removes what dead runs of the bench left: the lab's names, and dockerd's cgroups.
fn sweep() {
    netd_lab::sweep::sweep_once(TAG);
    netd_lab::dockerd::sweep_stale_cgroups(TAG);
}

fn print_versions() {
    for tool in [
        "iptables-nft",
        "iptables-legacy",
        "nft",
        "iperf3",
        "conntrack",
    ] {
        if let Ok(v) = cmd::run(tool, &["--version"]).or_else(|_| cmd::run(tool, &["-V"])) {
            println!("  {tool}: {}", v.lines().next().unwrap_or("").trim());
        }
    }
    for (tool, args) in [
        ("dockerd", &["--version"][..]),
        ("/usr/lib/podman/netavark", &["--version"][..]),
    ] {
        match cmd::run(tool, args) {
            Ok(v) => println!("  {tool}: {}", v.lines().next().unwrap_or("").trim()),
            Err(_) => println!("  {tool}: not installed (its datapath will be skipped)"),
        }
    }
}

/// `--dns`: the DNS comparison alone.
fn dns_only(opts: &Opts, secs: f64) -> Result<()> {
    let env = Env {
        tester: opts.tester.clone(),
        shared: std::env::temp_dir().join(netd_lab::sweep::unique_name(TAG, Some("shared"))),
    };
    std::fs::create_dir_all(&env.shared)?;
    let servers = dns::Server::ALL;
    println!("DNS: {} s per run, dnsperf on CPU 0", secs);
    let all = dns::measure(&servers, &opts.netd, &env, secs);
    let _ = std::fs::remove_dir_all(&env.shared);
    print!("{}", dns::report(&all, &servers));
    let rows: Vec<&dns::DnsFigures> = all.iter().flatten().flatten().collect();
    let f = opts.out.join("dns.json");
    std::fs::write(&f, serde_json::to_vec_pretty(&rows)?)?;
    println!("  (also in {})", f.display());
    Ok(())
}

/// `--overlay`: the cross-node comparison alone.
fn overlay_only(opts: &Opts, rounds: usize, secs: f64) -> Result<()> {
    println!("overlay: {rounds} round(s), {secs} s per run, client on CPU 0, servers on CPU 1");
    let all = overlay::measure(&opts.tester, rounds, secs)?;
    print!("{}", overlay::report(&all));
    let f = opts.out.join("overlay.json");
    std::fs::write(&f, serde_json::to_vec_pretty(&all)?)?;
    println!("  (also in {})", f.display());
    Ok(())
}

/// `--ipv6`: a published port over IPv6 alone.
fn ipv6_only(opts: &Opts, rounds: usize, secs: f64) -> Result<()> {
    let ways = ipv6::ways(opts.only.as_deref())?;
    let ports = opts
        .ports
        .clone()
        .unwrap_or(if opts.quick { vec![1] } else { vec![1, 10000] });
    println!(
        "IPv6 published port: {rounds} round(s), N = {ports:?}, {secs} s per run, client on CPU 0, servers on CPU 1"
    );
    let run = ipv6::Run {
        netd: &opts.netd,
        tester: &opts.tester,
        ways: &ways,
        ports: &ports,
        rounds,
        secs,
    };
    let all = ipv6::measure(&run, |what| eprintln!("  {what}"))?;
    print!("{}", ipv6::report(&all));
    let f = opts.out.join("ipv6.json");
    std::fs::write(&f, serde_json::to_vec_pretty(&all)?)?;
    println!("  (also in {})", f.display());
    Ok(())
}

/// `--density`: the cost of one more container as the host fills up.
fn density_only(opts: &Opts) -> Result<()> {
    let mut counts = opts.containers.clone().unwrap_or(if opts.quick {
        vec![100, 1000]
    } else {
        vec![100, 1000, 5000]
    });
    counts.sort_unstable();
    println!("density: containers up to {:?}", counts.last());
    let log = opts.out.join("density-daemon.log");
    let all = density::measure(&opts.netd, &counts, &log, &|what| eprintln!("  {what}"))?;
    print!("{}", density::report(&all));
    let f = opts.out.join("density.json");
    std::fs::write(&f, serde_json::to_vec_pretty(&all)?)?;
    println!("  (also in {})", f.display());
    Ok(())
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    if let Some(file) = &opts.replot {
        return report::replot(file, &opts.out);
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
    if (opts.dns || opts.overlay || opts.density) && opts.only.is_some() {
        bail!("--only picks datapaths of the traffic and --ipv6 benches; --dns, --overlay and --density always measure all theirs");
    }
    sweep();
    std::fs::create_dir_all(&opts.out)?;
    if opts.dns {
        return dns_only(&opts, secs.max(if opts.quick { 2.0 } else { 5.0 }));
    }
    if opts.overlay {
        return overlay_only(&opts, rounds, secs.max(if opts.quick { 1.0 } else { 3.0 }));
    }
    if opts.density {
        return density_only(&opts);
    }
    if opts.ipv6 {
        return ipv6_only(&opts, rounds, secs.max(if opts.quick { 1.0 } else { 2.0 }));
    }
    let dps = datapaths(opts.only.as_deref())?;
    let env = Env {
        tester: opts.tester.clone(),
        shared: std::env::temp_dir().join(netd_lab::sweep::unique_name(TAG, Some("shared"))),
    };
    let kernel = cmd::run("uname", &["-r"]).unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "netd bench: kernel {}, {cpus} CPUs, {rounds} round(s), N = {ports:?}, {secs} s per run; client on CPU 0, servers on CPU 1",
        kernel.trim()
    );
    print_versions();

    let total = (ports.len() * dps.len() * rounds) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: BTreeMap<(usize, Dp), Cell> = BTreeMap::new();
    for &n in &ports {
        let mut setups = Vec::new();
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
            let (mut s, took) = match set_up(dp, n, &opts, &env) {
                Ok(s) => s,
                // A real peer that cannot run here is skipped, and says why.
                Err(e) if dp.is_peer() => {
                    bar.println(format!("skipping {} at N={n}: {e:#}", dp.name()));
                    bar.inc(rounds as u64);
                    continue;
                }
                Err(e) => return Err(e.context(format!("{} at N={n}", dp.name()))),
            };
            let cell = results.entry((n, dp)).or_default();
            cell.publish_ms = took.as_secs_f64() * 1e3;
            cell.one_more_ms = ms(s.dp.one_more(&mut s.lab));
            setups.push(s);
        }
        for r in 0..rounds {
            for s in &setups {
                let dp = s.dp.dp();
                bar.set_message(format!("N={n} round {}: {}", r + 1, dp.name()));
                let sample = measure::measure(&s.lab, s.dp.as_ref(), &opts.tester, secs)
                    .with_context(|| format!("{} at N={n}", dp.name()))?;
                results.entry((n, dp)).or_default().samples.push(sample);
                bar.inc(1);
            }
        }
        for mut s in setups {
            let dp = s.dp.dp();
            let cell = results.entry((n, dp)).or_default();
            let mem = s.dp.memory(&s.lab);
            cell.rss_bytes = mem.agent;
            cell.map_bytes = mem.maps;
            cell.proxy_rss_bytes = mem.proxies;
            bar.set_message(format!("N={n}: {} figures of its own", dp.name()));
            s.dp.extra_figures(&mut s.lab, cell)
                .with_context(|| format!("{} at N={n}", dp.name()))?;
            bar.set_message(format!("N={n}: removing {}", dp.name()));
            cell.remove_ms = ms(s.dp.remove(&mut s.lab));
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&env.shared);
    report::report(&results, &ports, &dps, &opts.out)
}
