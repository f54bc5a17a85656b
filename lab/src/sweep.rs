//! Names that say which process made them, and the sweep of what dead runs left.
//!
//! Every name a lab makes starts with `TAG-PID-`: the tag says which harness (tests,
//! bench), the pid which process. Parallel runs never collide, and a later run can tell
//! by the pid being dead that an earlier run crashed and sweep what it left: only names
//! of its own tag, only for dead pids, so a run that is still going is never touched.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
};

use crate::{cgroup, netns};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Where pinned maps and links go (bpffs).
pub const BPFFS: &str = "/sys/fs/bpf";

/// A fresh name for a lab of this process: `TAG-PID-SUFFIX`, or `TAG-PID-N` with a
/// counter when no suffix is given.
pub fn unique_name(tag: &str, suffix: Option<&str>) -> String {
    let pid = std::process::id();
    match suffix {
        Some(s) => format!("{tag}-{pid}-{s}"),
        None => format!("{tag}-{pid}-{}", COUNTER.fetch_add(1, Ordering::SeqCst)),
    }
}

/// The pid in `name` if it is a name of `tag` (`TAG-PID-...` or `TAG-PID`).
pub fn owner_pid(tag: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(tag)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A name of `tag` whose process is gone.
pub fn is_stale(tag: &str, name: &str) -> bool {
    owner_pid(tag, name).is_some_and(|p| !pid_alive(p))
}

fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes what dead runs of `tag` left: named namespaces (and what runs in them),
/// bpffs directories, cgroups and temporary directories. Returns what it removed.
pub fn sweep_stale(tag: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for ns in netns::list() {
        if is_stale(tag, &ns) && netns::delete(&ns).is_ok() {
            removed.push(format!("namespace {ns}"));
        }
    }
    // /etc/netns holds the resolv.conf and hosts netd writes for container namespaces.
    for dir in [
        PathBuf::from(BPFFS),
        std::env::temp_dir(),
        PathBuf::from("/etc/netns"),
    ] {
        for (name, path) in entries(&dir) {
            if is_stale(tag, &name) && std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path.display().to_string());
            }
        }
    }
    if let Some(root) = cgroup::cgroup2_root() {
        for (name, path) in entries(&root) {
            if is_stale(tag, &name) && cgroup::remove(&path).is_ok() {
                removed.push(path.display().to_string());
            }
        }
    }
    removed
}

/// [`sweep_stale`] once per tag and process: every lab of a test binary calls this,
/// and the first one does the work.
pub fn sweep_once(tag: &str) {
    let first = SWEPT
        .lock()
        .map(|mut s| s.insert(tag.to_string()))
        .unwrap_or(false);
    if first {
        sweep_stale(tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_names_of_its_tag() {
        assert_eq!(owner_pid("ndt", "ndt-123-0-host"), Some(123));
        assert_eq!(owner_pid("ndt", "ndt-123"), Some(123));
        assert_eq!(owner_pid("ndb", "ndb-77-nd-c-srv"), Some(77));
        // Another tag that starts with the same letters, a name without a pid, a
        // name of someone else.
        assert_eq!(owner_pid("ndt", "ndtx-123-0"), None);
        assert_eq!(owner_pid("ndt", "ndt-abc-0"), None);
        assert_eq!(owner_pid("ndt", "netd-lab-host"), None);
        assert_eq!(owner_pid("ndt", "xndt-1-0"), None);
    }

    #[test]
    fn a_name_of_a_live_process_is_never_stale() {
        let me = unique_name("ndt", None);
        assert!(!is_stale("ndt", &me), "{me}");
        assert!(!is_stale("ndb", &me), "another tag: {me}");
        let a = unique_name("ndt", None);
        assert_ne!(me, a, "two labs of one process share a name");
        assert_eq!(
            unique_name("ndb", Some("nd")),
            format!("ndb-{}-nd", std::process::id())
        );
    }
}
