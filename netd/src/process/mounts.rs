//! Mount namespaces for what netd runs in a container's network namespace: the
//! template every container process starts from (the daemon's mounts without the one
//! per network namespace under /run/netns), the /etc/netns files bound over /etc, and a
//! procfs of its own for writing a namespace's sysctls.
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context};

/// The files of /etc that a namespace's processes see replaced, as `ip netns exec` does.
const ETC_FILES: [&str; 2] = ["resolv.conf", "hosts"];

/// (source, target) pairs to bind-mount for namespace `netns`: /etc/netns/NAME/FILE over
/// /etc/FILE, for the files that exist. Only names (under /run/netns) have such files.
pub fn etc_binds(netns: &str) -> Vec<(PathBuf, PathBuf)> {
    let name = netns
        .strip_prefix(crate::netns::NETNS_RUN_DIR)
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or(netns);
    if name.is_empty() || name.contains('/') {
        return Vec::new();
    }
    ETC_FILES
        .iter()
        .map(|f| {
            (
                Path::new(crate::dns::files::ETC_NETNS).join(name).join(f),
                Path::new("/etc").join(f),
            )
        })
        .filter(|(src, dst)| src.exists() && dst.exists())
        .collect()
}

/// A mount namespace of the calling thread's own (a single-threaded process's, or a
/// thread that unshared CLONE_FS) where `binds` cover /etc's files.
pub fn enter_binds(binds: &[(PathBuf, PathBuf)]) -> anyhow::Result<()> {
    use nix::mount::{mount, MsFlags};
    if binds.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    // SAFETY: raw syscalls on constant strings.
    unsafe { slave_without_netns_mounts() }.context("a mount namespace of its own")?;
    for (src, dst) in binds {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("binding {} over {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// Makes the calling thread's (new) mount namespace a slave of the one it was copied
/// from, so its mounts never propagate back to the host's, and drops its copy of
/// /run/netns: that copy holds a mount per network namespace on the host and, as a
/// slave, would receive every later one, so that each container's process would hold
/// as many mounts as there are containers (kernel memory and namespace creation time
/// growing with the square of the containers). Nothing in a container uses them.
///
/// # Safety
/// Only raw syscalls: callable between fork and exec.
pub(super) unsafe fn slave_without_netns_mounts() -> std::io::Result<()> {
    // SAFETY: plain syscalls on NUL-terminated strings that outlive the calls.
    unsafe {
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // Not a mount point (no namespace made yet, or a template without it): fine.
        libc::umount2(c"/run/netns".as_ptr(), libc::MNT_DETACH);
    }
    Ok(())
}

/// A mount namespace like the daemon's without /run/netns, made once and kept open: a
/// process netd starts enters it before it makes its own, so making its own copies the
/// host's few mounts, not one per container (see `slave_without_netns_mounts`). None if
/// it cannot be made (the process then copies the daemon's and drops the extra mounts).
pub fn template() -> Option<&'static File> {
    static TEMPLATE: std::sync::OnceLock<Option<File>> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            // unshare() moves the calling thread: a throwaway one.
            let made = std::thread::spawn(|| -> std::io::Result<File> {
                // SAFETY: plain syscalls; this thread's filesystem context is its own
                // after unshare(CLONE_FS).
                unsafe {
                    if libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    slave_without_netns_mounts()?;
                }
                File::open("/proc/thread-self/ns/mnt")
            })
            .join();
            match made {
                Ok(Ok(f)) => Some(f),
                Ok(Err(e)) => {
                    log::warn!("a mount namespace for container processes: {e}");
                    None
                }
                Err(_) => None,
            }
        })
        .as_ref()
}

/// The template as a path another process can open (None if there is none).
pub fn template_path() -> Option<String> {
    template().map(|f| format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()))
}

/// Runs `f` on a fresh thread inside network namespace `ns`, with a procfs of its own
/// on /proc (in a mount namespace copied from the template), and returns its result.
///
/// Why not the daemon's /proc: every network namespace's /proc/sys/net entries hang in
/// the one procfs's dentry cache under the same parents and names, and the kernel walks
/// that chain on each lookup, so that a sysctl write in a new namespace costs in
/// proportion to the namespaces on the host (2 ms at 5,000). A procfs of its own starts
/// with an empty cache and goes with the thread.
pub fn with_own_proc<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let netns = crate::netns::open(ns)?;
    let template = template().map(|t| t.as_raw_fd());
    std::thread::spawn(move || {
        // SAFETY: plain syscalls on this thread's own filesystem context (CLONE_FS is
        // unshared first) and on fds that outlive the calls.
        unsafe {
            if libc::unshare(libc::CLONE_FS) != 0 {
                return Err(std::io::Error::last_os_error()).context("unshare(CLONE_FS)");
            }
            if let Some(t) = template {
                if libc::setns(t, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error()).context("entering the template");
                }
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
            }
            slave_without_netns_mounts().context("a mount namespace of its own")?;
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error()).context("mounting a procfs");
            }
        }
        f()
    })
    .join()
    .map_err(|_| anyhow!("namespace thread panicked"))?
}
