//! Starting a container's command (or an exec) inside its namespaces and watching it.
use std::{
    fs::File,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
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

/// Where a process's standard streams go.
pub enum ChildIo {
    /// stdin from /dev/null, stdout and stderr to this log file.
    Log(PathBuf),
    /// All three on this slave side of a pseudo-terminal, which becomes the controlling
    /// terminal of the process's own session.
    Tty(OwnedFd),
    /// stdout and stderr to pipes the caller reads; stdin a pipe it writes (`true`) or
    /// /dev/null.
    Pipes { stdin: bool },
    /// Nothing in, nothing kept (an exec started detached).
    Null,
}

/// A process to start in a container's namespaces.
pub struct Spawn<'a> {
    /// Network namespace (None: the daemon's own, for --network host).
    pub netns: Option<&'a str>,
    /// `--hostname`: a UTS namespace of its own with this name.
    pub hostname: Option<&'a str>,
    /// Join the UTS namespace of this process instead (an exec joins its container's).
    pub uts_of: Option<u32>,
    pub cmd: &'a [String],
    /// Set on top of netd's environment.
    pub env: &'a [(String, String)],
    /// `--user`: uid and gid (None: root, the daemon's).
    pub user: Option<(u32, u32)>,
    /// `--workdir` (None: the daemon's working directory).
    pub workdir: Option<&'a Path>,
    pub io: ChildIo,
}

/// Starts a process as `spec` says, detached from netd's session so it outlives a
/// daemon restart (one on a terminal leads a session of its own, the terminal's). It
/// sees the namespace's /etc/netns files over /etc.
pub fn spawn(spec: Spawn) -> anyhow::Result<tokio::process::Child> {
    let hostname = spec.hostname.map(std::ffi::CString::new).transpose()?;
    let binds = spec.netns.map(etc_binds).unwrap_or_default();
    let (prog, args) = spec.cmd.split_first().context("empty command")?;
    let ns = spec.netns.map(crate::netns::open).transpose()?;
    let uts = spec
        .uts_of
        .and_then(|pid| File::open(format!("/proc/{pid}/ns/uts")).ok());
    let mut c = std::process::Command::new(prog);
    c.args(args).envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = spec.workdir {
        c.current_dir(dir);
    }
    if let Some((uid, gid)) = spec.user {
        c.uid(uid).gid(gid);
    }
    let tty = matches!(spec.io, ChildIo::Tty(_));
    set_io(&mut c, spec.io)?;
    if !tty {
        c.process_group(0);
    }
    let fd = ns.as_ref().map(|f| f.as_raw_fd());
    let uts_fd = uts.as_ref().map(|f| f.as_raw_fd());
    // Entering a mount namespace needs the privileges a --user process has given up by
    // then: that one copies the daemon's mounts and drops the extra ones itself.
    let template = match binds.is_empty() || spec.user.is_some() {
        true => None,
        false => mount_template().map(|f| f.as_raw_fd()),
    };
    // Entering a mount namespace moves the process to its root: back to where it was.
    let cwd = spec
        .workdir
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .and_then(|d| std::ffi::CString::new(d.into_os_string().into_encoded_bytes()).ok());
    // SAFETY: only async-signal-safe calls between fork and exec (setns, unshare, chdir,
    // setsid, ioctl and sethostname via libc, on memory prepared before the fork).
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
            if let Some(fd) = uts_fd {
                // A process without a UTS namespace of its own shares the host's:
                // joining it changes nothing then.
                let _ = libc::setns(fd, libc::CLONE_NEWUTS);
            }
            // --hostname: a UTS namespace of its own; `netd exec` joins it by pid.
            if let Some(h) = &hostname {
                if libc::unshare(libc::CLONE_NEWUTS) != 0
                    || libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // The terminal (fd 0 by now) becomes the controlling one of a new session.
            if tty && (libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(c)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("starting {prog:?}"))?;
    drop(ns);
    Ok(child)
}

fn set_io(c: &mut std::process::Command, io: ChildIo) -> anyhow::Result<()> {
    match io {
        ChildIo::Log(log) => {
            let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let err = out.try_clone()?;
            c.stdin(Stdio::null()).stdout(out).stderr(err);
        }
        ChildIo::Tty(slave) => {
            c.stdin(slave.try_clone()?)
                .stdout(slave.try_clone()?)
                .stderr(slave);
        }
        ChildIo::Pipes { stdin } => {
            c.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        ChildIo::Null => {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
    }
    Ok(())
}

/// `--user` as a uid and gid: `UID[:GID]` or `NAME[:GROUP]` (names from the host's
/// /etc/passwd and /etc/group, which netd's containers share); a user without a group
/// gets its primary one.
pub fn resolve_user(spec: &str) -> Result<Option<(u32, u32)>, String> {
    if spec.is_empty() {
        return Ok(None);
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = match u.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or((uid, uid), |x| (uid, x.gid.as_raw())),
        Err(_) => nix::unistd::User::from_name(u)
            .ok()
            .flatten()
            .map(|x| (x.uid.as_raw(), x.gid.as_raw()))
            .ok_or_else(|| {
                format!("unable to find user {u}: no matching entries in passwd file")
            })?,
    };
    let gid = match g {
        None => user.1,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .map(|x| x.gid.as_raw())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    Ok(Some((user.0, gid)))
}

/// A process's exit code as a shell (and Docker) reports it: its status, or 128 plus
/// the signal that ended it.
pub fn exit_code(s: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or(128 + s.signal().unwrap_or(0))
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
