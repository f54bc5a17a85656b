//! netd: its daemon in the lab's host namespace, one container with N published ports.
use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, Result};
use netd_lab::{cmd::run, Lab};
use serde_json::Value;

use super::{
    fillers, servers_script, timed, Datapath, Dp, Env, Memory, FILLER_BASE, P_CRR, P_IPERF, P_RR,
    P_UDP,
};
use crate::{api_latency, cell::Cell, ct_table::CtTable, rss::rss_of};

pub struct Netd {
    ctr: String,
    env: Env,
}

impl Netd {
    pub fn new(env: &Env) -> Netd {
        Netd {
            ctr: String::new(),
            env: env.clone(),
        }
    }

    /// The phases of netd's `run` of container `name`, from its log line, and the time
    /// of the port map updates among them (microseconds).
    fn phases(lab: &Lab, name: &str) -> Option<(String, f64)> {
        let log = lab.daemon_log();
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

    /// API latency with an empty and with a full conntrack table, the daemon running
    /// with a short GC interval so that GC runs during the calls. The daemon is
    /// restarted for it (it keeps its container and pins) and afterwards with its
    /// usual arguments again, the table emptied of what the bench put in it.
    fn api_under_pressure(&self, lab: &mut Lab) -> Result<api_latency::ApiLatency> {
        let usual = lab.extra_daemon_args.clone();
        lab.stop_daemon(libc::SIGTERM);
        lab.extra_daemon_args.extend([
            "--ct-gc-interval".to_string(),
            api_latency::GC_INTERVAL.as_secs().to_string(),
        ]);
        let measured = lab
            .start_daemon()
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                // What the traffic rounds left (closed flows wait out their timeout).
                lab.cli(&["conntrack", "flush"])?;
                let mut table = CtTable::open(&lab.bpf_dir)?;
                let sock = lab.socket();
                let period = api_latency::pace(&sock)?;
                let empty = api_latency::calls(&sock, period, || table.len())?;
                let mine = table.fill()?;
                let full = api_latency::calls(&sock, period, || table.len());
                // Before anything else: with the table full, `rm` would walk it all.
                table.remove(&mine);
                Ok(api_latency::ApiLatency::new(
                    table.capacity(),
                    period,
                    empty,
                    full?,
                ))
            });
        lab.stop_daemon(libc::SIGTERM);
        lab.extra_daemon_args = usual;
        lab.start_daemon()?;
        measured
    }
}

impl Datapath for Netd {
    fn dp(&self) -> Dp {
        Dp::Netd
    }

    fn container_ns(&self) -> &str {
        &self.ctr
    }

    /// Starts the daemon, then `netd run -p` with the N ports (a range of fillers, then
    /// the service ports), the servers being the container's command, pinned like the
    /// other datapaths' servers. Returns the time `netd run` took.
    fn publish(&mut self, lab: &mut Lab, n: usize) -> Result<Duration> {
        lab.start_daemon()?;
        let mut args: Vec<String> = ["run", "-d", "--name", "srv"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let fillers = fillers(n);
        if fillers > 0 {
            let (a, b) = (FILLER_BASE + 1, FILLER_BASE + fillers);
            args.push("-p".into());
            args.push(format!("{a}-{b}:{a}-{b}"));
        }
        for p in [P_RR, P_CRR, P_IPERF] {
            args.push("-p".into());
            args.push(format!("{p}:{p}"));
        }
        args.push("-p".into());
        args.push(format!("{P_UDP}:{P_UDP}/udp"));
        let servers = servers_script(&self.env.tester.display().to_string());
        args.extend(
            ["--", "taskset", "-c", "1", "sh", "-c", &servers]
                .iter()
                .map(|s| s.to_string()),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let took = timed(|| lab.cli(&refs).map(drop).map_err(Into::into))?;
        let v: Value = serde_json::from_str(&lab.cli(&["inspect", "srv"])?)?;
        self.ctr = v[0]["Netns"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("/run/netns/")
            .to_string();
        Ok(took)
    }

    /// A whole container with one published port: neither netd nor Docker can add a
    /// port to a running container.
    fn one_more(&mut self, lab: &mut Lab) -> Result<Duration> {
        let took = timed(|| {
            lab.cli(&[
                "run", "-d", "--name", "extra", "-p", "31000:80", "--", "sleep", "600",
            ])?;
            Ok(())
        })?;
        lab.cli(&["rm", "-f", "extra"])?;
        Ok(took)
    }

    fn flush_conntrack(&self, lab: &Lab) {
        let _ = lab.cli(&["conntrack", "flush"]);
    }

    /// The daemon's RSS, and the memlock of the maps pinned under this lab's bpffs
    /// directory (other netd instances on the machine have maps of the same names).
    fn memory(&self, lab: &Lab) -> Memory {
        let Some(pid) = lab.daemon_pid() else {
            return Memory::default();
        };
        let ids: BTreeSet<u64> = CtTable::pinned_map_ids(&lab.bpf_dir);
        let maps = run("bpftool", &["-j", "map", "show"])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
            .map(|m| m["bytes_memlock"].as_u64().unwrap_or(0))
            .sum();
        Memory {
            agent: rss_of(std::path::Path::new(&format!("/proc/{pid}"))),
            maps,
            proxies: 0,
        }
    }

    fn extra_figures(&mut self, lab: &mut Lab, cell: &mut Cell) -> Result<()> {
        if let Some((phases, ports_us)) = Self::phases(lab, "extra") {
            cell.one_more_phases = phases;
            cell.one_more_ports_us = ports_us;
        }
        cell.api = Some(
            self.api_under_pressure(lab)
                .context("netd's API latency under a full conntrack table")?,
        );
        cell.restart = Some(
            crate::restart::measure(lab, &self.env.tester, P_CRR)
                .context("netd's restart window")?,
        );
        Ok(())
    }

    fn remove(&mut self, lab: &mut Lab) -> Result<Duration> {
        timed(|| Ok(lab.cli(&["rm", "-f", "srv"]).map(drop)?))
    }
}
