//! Named network namespaces (/run/netns/NAME), as `ip netns` makes them.
use std::path::Path;

use crate::{cmd, Result};

const NETNS_DIR: &str = "/run/netns";

/// Every named namespace on the machine.
pub fn list() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Named namespaces whose name starts with `prefix`.
pub fn with_prefix(prefix: &str) -> Vec<String> {
    list()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

pub fn exists(ns: &str) -> bool {
    Path::new(NETNS_DIR).join(ns).exists()
}

/// Creates namespace `ns` with its loopback up.
pub fn create(ns: &str) -> Result<()> {
    cmd::ip(&["netns", "add", ns])?;
    cmd::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Kills every process inside namespace `ns`. Only for namespaces the lab made: all
/// their processes were started by it, or by the daemon it runs.
pub fn kill_processes(ns: &str) {
    if let Ok(pids) = cmd::ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            if let Ok(p) = pid.parse::<i32>() {
                // SAFETY: plain kill(2) on a pid found inside a namespace of the lab's own.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
}

/// Kills what runs in `ns`, then deletes it.
pub fn delete(ns: &str) -> Result<()> {
    kill_processes(ns);
    cmd::ip(&["netns", "del", ns])?;
    Ok(())
}

/// Links of namespace `ns`, by name (a veth's `@peer` suffix removed).
pub fn links(ns: &str) -> Vec<String> {
    cmd::ip(&["-n", ns, "-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}
