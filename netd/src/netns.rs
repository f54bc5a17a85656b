//! Named network namespaces under /run/netns, made the way iproute2 makes them, so that
//! `ip netns exec NAME` works on what netd creates.
use std::{
    fs::{self, File, OpenOptions},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

pub const NETNS_RUN_DIR: &str = "/run/netns";

pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// A namespace by name under /run/netns (netd's own), or by absolute path (one a
/// container runtime made: /proc/PID/ns/net, /var/run/docker/netns/..., a CNI_NETNS).
pub fn resolve(ns: &str) -> PathBuf {
    if ns.starts_with('/') {
        PathBuf::from(ns)
    } else {
        path_of(ns)
    }
}

/// Whether the namespace `ns` (a name or an absolute path, see `resolve`) exists.
pub fn exists(ns: &str) -> bool {
    resolve(ns).exists()
}

/// The inode of the namespace `ns` (a name or an absolute path): its identity, which
/// outlives the path a runtime named it by.
pub fn inode(ns: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(resolve(ns)).ok().map(|m| m.ino())
}

/// Of the namespaces `wanted` (inodes), those that a process other than this one is in
/// or that a mount (`ip netns add`, a runtime's bind mount) names. A namespace in
/// neither is kept alive only by what this process holds in it.
pub fn held_by_others(wanted: &std::collections::HashSet<u64>) -> std::collections::HashSet<u64> {
    let mut held = std::collections::HashSet::new();
    let me = std::process::id().to_string();
    for pid in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = pid.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Every thread: a process's main thread may have left while others stayed.
        for task in fs::read_dir(pid.path().join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(ino) = nsfs_inode(&task.path().join("ns/net")) {
                if wanted.contains(&ino) {
                    held.insert(ino);
                }
            }
        }
    }
    // Mount points of nsfs show their namespace as their root: "net:[INODE]".
    for line in fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let mut f = line.split_whitespace();
        if let Some(ino) = f.nth(3).and_then(parse_nsfs_name) {
            if wanted.contains(&ino) {
                held.insert(ino);
            }
        }
    }
    held
}

fn nsfs_inode(link: &Path) -> Option<u64> {
    parse_nsfs_name(fs::read_link(link).ok()?.to_str()?)
}

/// The inode in "net:[4026532281]".
fn parse_nsfs_name(s: &str) -> Option<u64> {
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Makes /run/netns a shared mount point (as `ip netns add` does), so bind mounts of
/// namespaces made here propagate to other mount namespaces.
fn prepare_run_dir() -> anyhow::Result<()> {
    // Once per process: MS_REC walks every namespace mounted there, a cost per
    // namespace that would grow with the namespaces.
    static PREPARED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if PREPARED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = |flags| {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            flags,
            None::<&str>,
        )
    };
    if shared(MsFlags::MS_SHARED | MsFlags::MS_REC).is_err() {
        mount(
            Some(NETNS_RUN_DIR),
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context("bind-mounting /run/netns")?;
        shared(MsFlags::MS_SHARED | MsFlags::MS_REC).context("making /run/netns shared")?;
    }
    PREPARED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Creates a new, empty network namespace named `name`.
pub fn create(name: &str) -> anyhow::Result<()> {
    prepare_run_dir()?;
    let path = path_of(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    // unshare() moves the calling thread: do it on a throwaway thread so no runtime
    // thread ever changes namespace.
    let p = path.clone();
    let r = std::thread::spawn(move || -> anyhow::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &p,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("bind-mounting the new namespace")?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow!("namespace thread panicked"))?;
    if r.is_err() {
        let _ = fs::remove_file(&path);
    }
    r
}

/// Removes the namespace `name`; the kernel frees it once no process is left in it.
pub fn delete(name: &str) -> anyhow::Result<()> {
    let path = path_of(name);
    if !path.exists() {
        return Ok(());
    }
    let _ = umount2(&path, MntFlags::MNT_DETACH);
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

pub fn open(ns: &str) -> anyhow::Result<File> {
    let path = resolve(ns);
    File::open(&path).with_context(|| format!("opening network namespace {}", path.display()))
}

/// Moves the calling thread into `file`'s network namespace. Only for threads that are
/// not runtime workers (or before the runtime starts).
pub fn enter(file: &File) -> anyhow::Result<()> {
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")
}

/// Runs `f` on a fresh thread inside namespace `name` (a name or a path, see `resolve`)
/// and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let file = open(name)?;
    std::thread::spawn(move || {
        enter(&file)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("namespace thread panicked"))?
}
