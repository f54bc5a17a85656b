//! Resident memory of a process.
use std::path::Path;

/// VmRSS of the process at `proc_dir` (/proc/PID), in bytes.
pub fn rss_of(proc_dir: &Path) -> u64 {
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
