//! netd's restart window: from the SIGTERM to the old agent until the new one serves
//! its API, with the datapath of N published ports in place, and whether any new
//! connection to a published port failed meanwhile (none may: the programs and maps
//! stay pinned through the restart). Each restart is timed alone; the lab polls the
//! socket every 5 ms, so the figures include up to that and one CLI call.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use netd_lab::Lab;
use serde::{Deserialize, Serialize};

/// Restarts measured per N.
pub const RESTARTS: usize = 5;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartWindow {
    /// SIGTERM to the new agent answering, per restart.
    pub window_ms: Vec<f64>,
    /// SIGTERM to the old agent's exit, per restart.
    pub stop_ms: Vec<f64>,
    /// New connections to a published port during the restarts, and failures.
    pub connections: u64,
    pub failed: u64,
}

/// Restarts the lab's agent `RESTARTS` times, a new connection to published `port`
/// (a server that answers a byte) starting every 10 ms from the client all along.
pub fn measure(lab: &mut Lab, tester: &std::path::Path, port: u16) -> Result<RestartWindow> {
    let secs = (RESTARTS * 2 + 1).to_string();
    let target = format!("{}:{port}", lab.uplink.host_ip);
    let load = Command::new("ip")
        .args(["netns", "exec", &lab.client])
        .arg(tester)
        .args(["connect-every", &target, &secs, "10", "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the connection stream")?;
    let mut out = RestartWindow::default();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..RESTARTS {
        let t0 = Instant::now();
        lab.stop_daemon(libc::SIGTERM);
        out.stop_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        lab.start_daemon().context("restarting netd")?;
        out.window_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let o = load.wait_with_output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("the connection stream said {:?}", o.stdout))?;
    out.connections = v["ok"].as_u64().unwrap_or(0) + v["failed"].as_u64().unwrap_or(0);
    out.failed = v["failed"].as_u64().unwrap_or(0);
    Ok(out)
}
