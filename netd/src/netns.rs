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

/// Makes /run/netns a shared mount point (as `ip netns add` does), so bind mounts of
/// namespaces made here propagate to other mount namespaces.
fn prepare_run_dir() -> anyhow::Result<()> {
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
