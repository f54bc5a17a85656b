//! `--density`: what one more container costs as the host fills up. One netd in a lab,
//! user networks (embedded DNS, as Docker users run them), and containers made the way
//! users make them (`netd run -d --name cN --network denseK -- sleep ..`), one after
//! another, up to the largest count. A Linux bridge takes at most 1,024 ports (the
//! kernel's BR_MAX_PORTS; Docker's networks meet the same "exchange full"), so every
//! `PER_NETWORK` containers go on a network of their own. At each count, `PROBES` more
//! containers (each publishing one port) are timed end to end (the CLI's whole `netd
//! run`), and the daemon's own log line for each says where its time went (`created in
//! T us (checks .., store .., netns .., ..)`): the agent's time, and the store's part
//! of it (its phases named `store`). The agent's RSS is read at each count.
//!
//! Teardown: the daemon is stopped and `netd daemon --cleanup` removes every
//! container, namespace, link and pin (the lab checks that nothing is left).
use std::{path::Path, time::Instant};

use anyhow::{Context, Result};
use netd_lab::{cmd, Lab, LabName, LabOptions};
use serde::{Deserialize, Serialize};

use crate::{peers::UPLINK, rss::rss_of};

/// Containers timed at each count.
pub const PROBES: usize = 7;
/// Containers per network (a bridge's ports are limited to 1,024).
const PER_NETWORK: usize = 1000;

/// Network `k`'s name and subnet (a /16 each: 10.128.0.0/16, 10.129.0.0/16, ..).
fn network(k: usize) -> (String, String) {
    (format!("dense{k}"), format!("10.{}.0.0/16", 128 + k))
}
/// The first host port a probe publishes (one each).
const PROBE_PORT: u16 = 31000;

/// The figures at one count of containers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Point {
    /// Containers on the host before each probe (the first probe's count).
    pub containers: usize,
    /// `netd run` end to end (CLI start to exit), per probe, ms.
    pub end_to_end_ms: Vec<f64>,
    /// The agent's time for it (its `created in` line), per probe, ms.
    pub agent_ms: Vec<f64>,
    /// The store's part of the agent's time, per probe, ms.
    pub store_ms: Vec<f64>,
    /// The daemon's phases of the median probe, as it logged them.
    pub phases: String,
    /// The agent's resident memory after the probes, bytes.
    pub rss_bytes: u64,
    /// Mean time per container while filling up to this count, ms.
    pub fill_ms: f64,
}

/// The phases of the `created in` line of container `name`: (total us, store us, line).
fn phases(log: &str, name: &str) -> Option<(f64, f64, String)> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(&format!("container {name} (")) && l.contains("created in"))?;
    let phases = line.split("created in ").nth(1)?.trim().to_string();
    let total: f64 = phases.split_whitespace().next()?.parse().ok()?;
    let inner = phases.split_once('(')?.1.trim_end_matches(')');
    let store = inner
        .split(", ")
        .filter_map(|p| {
            let mut w = p.split_whitespace();
            let step = w.next()?;
            let us: f64 = w.next()?.parse().ok()?;
            (step == "store").then_some(us)
        })
        .sum();
    Some((total, store, phases))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The network of the container made when `have` exist, created with its first.
fn network_for(lab: &Lab, have: usize) -> Result<String> {
    let (name, subnet) = network(have / PER_NETWORK);
    if have.is_multiple_of(PER_NETWORK) {
        lab.cli(&["network", "create", "--subnet", &subnet, &name])?;
    }
    Ok(name)
}

/// Creates containers from `have` on up to `to`; returns how many there are now.
fn fill(lab: &Lab, have: usize, to: usize, progress: &dyn Fn(&str)) -> Result<usize> {
    for i in have..to {
        let name = format!("c{i}");
        let net = network_for(lab, i)?;
        lab.cli(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            "--",
            "sleep",
            "100000",
        ])?;
        if (i + 1).is_multiple_of(500) {
            progress(&format!("{} containers", i + 1));
        }
    }
    Ok(to)
}

/// `PROBES` timed containers at the current count.
fn probe(lab: &Lab, have: &mut usize, probes: &mut usize) -> Result<Point> {
    let mut p = Point {
        containers: *have,
        ..Default::default()
    };
    let mut lines = Vec::new();
    for _ in 0..PROBES {
        let name = format!("probe{probes}");
        let port = format!("{}:80", PROBE_PORT + *probes as u16);
        let net = network_for(lab, *have)?;
        let t0 = Instant::now();
        lab.cli(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            "-p",
            &port,
            "--",
            "sleep",
            "100000",
        ])?;
        p.end_to_end_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        *probes += 1;
        *have += 1;
        let log = lab.daemon_log();
        let (total, store, line) = phases(&log, &name)
            .with_context(|| format!("no `created in` line for {name} in the daemon's log"))?;
        p.agent_ms.push(total / 1e3);
        p.store_ms.push(store / 1e3);
        lines.push((total, line));
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    p.phases = lines[lines.len() / 2].1.clone();
    p.rss_bytes = lab
        .daemon_pid()
        .map(|pid| rss_of(Path::new(&format!("/proc/{pid}"))))
        .unwrap_or(0);
    Ok(p)
}

/// Fills one lab's host up to each of `counts` (ascending) and probes there. The
/// daemon's log (a `created in` line per container) is copied to `log`.
pub fn measure(
    netd: &Path,
    counts: &[usize],
    log: &Path,
    progress: &dyn Fn(&str),
) -> Result<Vec<Point>> {
    let mut lab = Lab::create(LabOptions {
        name: LabName::Unique {
            tag: crate::TAG,
            suffix: Some("dense".into()),
        },
        uplink: UPLINK,
        cgroup: false,
        netd: netd.to_path_buf(),
        // Info: the daemon's `created in` lines.
        daemon_env: vec![("RUST_LOG".into(), "info".into())],
        ..Default::default()
    })?;
    cmd::in_ns(&lab.host, None, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    lab.start_daemon()?;
    let (mut have, mut probes) = (0, 0);
    let mut out = Vec::new();
    let result = (|| -> Result<()> {
        for &n in counts {
            let t0 = Instant::now();
            let from = have;
            have = fill(&lab, have, n.max(have), progress)?;
            let fill_ms = t0.elapsed().as_secs_f64() * 1e3 / (have - from).max(1) as f64;
            progress(&format!("{have} containers: probing"));
            let mut p = probe(&lab, &mut have, &mut probes)?;
            p.fill_ms = fill_ms;
            progress(
                report(std::slice::from_ref(&p))
                    .lines()
                    .nth(2)
                    .unwrap_or(""),
            );
            out.push(p);
        }
        Ok(())
    })();
    progress(&format!(
        "removing {have} containers (daemon stopped, netd daemon --cleanup)"
    ));
    // `rm` of each would take the daemon's removal path thousands of times; the
    // explicit cleanup removes what the instance made in one pass.
    lab.stop_daemon(libc::SIGTERM);
    let _ = std::fs::write(log, lab.daemon_log());
    let t0 = Instant::now();
    let closed = lab.close();
    progress(&format!(
        "cleanup and teardown took {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    result?;
    closed?;
    Ok(out)
}

pub fn report(points: &[Point]) -> String {
    let mut s = format!(
        "density: one more `netd run -d -p PORT:80` on a user network ({PER_NETWORK} containers per network), {PROBES} probes each, median (min-max)\n"
    );
    s += &format!(
        "{:>7}  {:>22}  {:>22}  {:>20}  {:>8}  {:>8}\n",
        "N", "end to end ms", "agent ms", "store ms", "RSS MB", "fill ms"
    );
    let cell = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.1} ({:.1}-{:.1})", median(v), lo, hi)
    };
    for p in points {
        s += &format!(
            "{:>7}  {:>22}  {:>22}  {:>20}  {:>8.1}  {:>8.1}\n",
            p.containers,
            cell(&p.end_to_end_ms),
            cell(&p.agent_ms),
            cell(&p.store_ms),
            p.rss_bytes as f64 / 1048576.0,
            p.fill_ms
        );
    }
    for p in points {
        s += &format!("  N={}: {}\n", p.containers, p.phases);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phases_line_gives_total_and_store() {
        let log = "x\n[INFO netd] container probe3 (0123456789ab) 10.128.0.9: created in 9000 us (checks 100 us, store 2000 us, netns 3000 us, ports/1 10 us, dns 90 us, process 800 us, store 3000 us)\n";
        let (total, store, line) = phases(log, "probe3").unwrap();
        assert_eq!(total, 9000.0);
        assert_eq!(store, 5000.0);
        assert!(line.starts_with("9000 us (checks"));
        assert!(phases(log, "probe30").is_none());
    }
}
