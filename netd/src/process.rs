//! Starting a container's command inside its namespace and watching it.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::Stdio,
};

use anyhow::Context;

/// The files of /etc that a namespace's processes see replaced, as `ip netns exec` does.
const ETC_FILES: [&str; 2] = ["resolv.conf", "hosts"];

/// (source, target) pairs to bind-mount for namespace `netns`: /etc/netns/NAME/FILE over
/// /etc/FILE, for the files that exist. Only names (under /run/netns) have such files.
pub fn etc_binds(netns: &str) -> Vec<(std::ffi::CString, std::ffi::CString)> {
    let name = netns
        .strip_prefix(crate::netns::NETNS_RUN_DIR)
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or(netns);
    if name.is_empty() || name.contains('/') {
        return Vec::new();
    }
    ETC_FILES
        .iter()
        .filter_map(|f| {
            let src = Path::new(crate::dns::files::ETC_NETNS).join(name).join(f);
            let dst = Path::new("/etc").join(f);
            if !src.exists() || !dst.exists() {
                return None;
            }
            use std::os::unix::ffi::OsStrExt;
            Some((
                std::ffi::CString::new(src.as_os_str().as_bytes()).ok()?,
                std::ffi::CString::new(dst.as_os_str().as_bytes()).ok()?,
            ))
        })
        .collect()
}

/// A private mount namespace where `binds` cover /etc's files (async-signal-safe: only
/// raw syscalls on memory prepared by the caller, so it may run between fork and exec).
pub fn enter_etc_binds(binds: &[(std::ffi::CString, std::ffi::CString)]) -> std::io::Result<()> {
    if binds.is_empty() {
        return Ok(());
    }
    // SAFETY: plain syscalls on NUL-terminated strings that outlive the calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        slave_without_netns_mounts()?;
        for (src, dst) in binds {
            if libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
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
unsafe fn slave_without_netns_mounts() -> std::io::Result<()> {
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
fn mount_template() -> Option<&'static File> {
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

/// Starts `cmd` in network namespace `netns` (None: the daemon's own, for --network
/// host), detached from netd's session so it outlives a daemon restart; stdout and
/// stderr go to `log`. It sees the namespace's /etc/netns files over /etc and gets `env`
/// (the `--link` variables) on top of netd's environment.
pub fn spawn_in_netns(
    netns: Option<&str>,
    hostname: Option<&str>,
    cmd: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<(u32, tokio::process::Child)> {
    let hostname = hostname.map(std::ffi::CString::new).transpose()?;
    let binds = netns.map(etc_binds).unwrap_or_default();
    let (prog, args) = cmd.split_first().context("empty command")?;
    let ns = match netns {
        Some(n) => Some(crate::netns::open(n)?),
        None => None,
    };
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut c = std::process::Command::new(prog);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0);
    let fd = ns.as_ref().map(|f| f.as_raw_fd());
    let template = match binds.is_empty() {
        true => None,
        false => mount_template().map(|f| f.as_raw_fd()),
    };
    // Entering a mount namespace moves the process to its root: back to where it was.
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| std::ffi::CString::new(d.into_os_string().into_encoded_bytes()).ok());
    // SAFETY: only async-signal-safe calls between fork and exec (setns, unshare, chdir
    // and sethostname via libc, on memory prepared before the fork).
    unsafe {
        c.pre_exec(move || {
            if let Some(fd) = fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(t) = template {
                if libc::setns(t, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(d) = &cwd {
                    libc::chdir(d.as_ptr());
                }
            }
            enter_etc_binds(&binds)?;
            // --hostname: a UTS namespace of its own; `netd exec` joins it by pid.
            if let Some(h) = &hostname {
                if libc::unshare(libc::CLONE_NEWUTS) != 0
                    || libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(c)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("starting {prog:?}"))?;
    let pid = child.id().context("child has no pid")?;
    drop(ns);
    Ok((pid, child))
}

/// Start time of a process (field 22 of /proc/PID/stat), to tell a pid from its reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start`.
pub fn alive(pid: u32, start: Option<u64>) -> bool {
    match start_time(pid) {
        Some(s) => start.is_none_or(|want| want == s) && !is_zombie(pid),
        None => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

pub fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}
