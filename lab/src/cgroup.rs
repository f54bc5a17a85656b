//! The lab's cgroup (v2): netd's socket programs go there, never on the cgroup2 root,
//! so they act only on processes the lab puts in it.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{Error, Result};

/// The first cgroup2 mount point (on these machines /sys/fs/cgroup/unified, beside the
/// v1 hierarchies).
pub fn cgroup2_root() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
}

pub fn create(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::path("creating cgroup", path, e))
}

/// Kills what is left in cgroup `path` (processes the lab put there) and removes it.
/// A cgroup goes only once its last process is gone, hence the short retries.
pub fn remove(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if let Ok(procs) = std::fs::read_to_string(path.join("cgroup.procs")) {
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) on a process inside a cgroup of the lab's own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let mut last = None;
    for _ in 0..20 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    match last {
        Some(e) => Err(Error::path("removing cgroup", path, e)),
        None => Ok(()),
    }
}
