//! The first program of every process netd starts in a container: netd itself, run as
//! `netd __enter SPEC -- CMD...`, which enters the container's namespaces as `SPEC`
//! says and then becomes `CMD` (execve, same pid).
//!
//! Why a program and not code between fork and exec: the daemon starts it with
//! posix_spawn (a vfork: the child borrows the daemon's memory until it execs), where
//! fork would copy the page tables of a daemon that grows with the containers on the
//! host (16 ms at 5,000) and leave the daemon a copy-on-write fault on each page it
//! writes next. Entering namespaces needs code before the exec, which posix_spawn has
//! no room for; this program is that code, with a process of its own.
use std::{ffi::OsString, fs::File, os::fd::AsRawFd, os::unix::process::CommandExt, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The argument that makes netd this program (first after the program name).
pub const ARG: &str = "__enter";

/// What the process enters before it becomes the command.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Spec {
    /// Network namespace (a path to open).
    pub netns: Option<PathBuf>,
    /// The mount namespace to copy (the template, by a path into the daemon's fds) and
    /// the /etc files to bind over /etc in the copy; no copy without binds.
    pub template: Option<PathBuf>,
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// The UTS namespace to join (another process's).
    pub uts: Option<PathBuf>,
    /// A UTS namespace of its own with this host name.
    pub hostname: Option<String>,
    /// Lead a new session whose controlling terminal is standard input.
    pub tty: bool,
    /// uid and gid to run as, once in the namespaces.
    pub user: Option<(u32, u32)>,
    /// Where to run (None: where the daemon runs).
    pub workdir: Option<PathBuf>,
}

/// The arguments that make a netd binary run `cmd` after entering `spec`.
pub fn args(spec: &Spec, cmd: &[String]) -> anyhow::Result<Vec<OsString>> {
    let mut v: Vec<OsString> = vec![ARG.into(), serde_json::to_string(spec)?.into(), "--".into()];
    v.extend(cmd.iter().map(OsString::from));
    Ok(v)
}

/// netd as this program: never returns. An error is one line on the process's standard
/// error (the container's log) and exit code 126, or 127 for a command not found, as a
/// shell and Docker report them.
pub fn main() -> ! {
    reset_signals();
    // Nothing of the daemon's beyond the three streams reaches the command (a spawn
    // inherits any fd another thread opened without O_CLOEXEC, such as a pty master).
    // SAFETY: closes this process's fds from 3 up; it holds none it needs there.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let args: Vec<OsString> = std::env::args_os().skip(2).collect();
    let err = match run(&args) {
        Ok(never) => match never {},
        Err((code, e)) => {
            eprintln!("netd: {e:#}");
            code
        }
    };
    std::process::exit(err)
}

/// The command starts as a fresh program would: no signal blocked (the daemon starts
/// this program with every one blocked, see `vfork`) and none ignored (an ignored
/// signal stays ignored across exec: the daemon's would be the command's).
fn reset_signals() {
    /// The kernel's `struct sigaction` (glibc's refuses its own reserved signals, 32
    /// and 33, which an ignoring parent may have passed on too).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    // SAFETY: raw rt_sigaction and sigprocmask on this single-threaded process, which
    // has no handlers of its own to lose; the structs outlive the calls.
    unsafe {
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old = KernelSigaction {
                handler: 0,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            let read = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                8usize,
            );
            if read == 0 && old.handler == libc::SIG_IGN {
                let default = KernelSigaction {
                    handler: libc::SIG_DFL,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

type Failed = (i32, anyhow::Error);

fn run(args: &[OsString]) -> Result<std::convert::Infallible, Failed> {
    let fail = |e: anyhow::Error| (126, e);
    let (spec, cmd) = match args {
        [spec, dashes, cmd @ ..] if dashes == "--" && !cmd.is_empty() => (spec, cmd),
        _ => return Err(fail(anyhow::anyhow!("usage: netd {ARG} SPEC -- CMD..."))),
    };
    let spec: Spec = serde_json::from_str(&spec.to_string_lossy())
        .map_err(|e| fail(anyhow::anyhow!("reading the spec: {e}")))?;
    enter(&spec).map_err(fail)?;
    let mut c = std::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    let e = c.exec();
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    Err((
        code,
        anyhow::anyhow!("starting {:?}: {e}", cmd[0].to_string_lossy()),
    ))
}

/// Enters the namespaces, terminal, user and directory `spec` names.
fn enter(spec: &Spec) -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::sched::{setns, unshare, CloneFlags};
    let cwd = std::env::current_dir().ok();
    if let Some(ns) = &spec.netns {
        let f = File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
        setns(f, CloneFlags::CLONE_NEWNET).context("entering the network namespace")?;
    }
    if !spec.binds.is_empty() {
        if let Some(t) = &spec.template {
            // Copying the template copies the host's few mounts, not one per container.
            let f = File::open(t).with_context(|| format!("opening {}", t.display()))?;
            setns(f, CloneFlags::CLONE_NEWNS).context("entering the mount template")?;
            // Entering a mount namespace moves the process to its root: back.
            if let Some(d) = &cwd {
                let _ = std::env::set_current_dir(d);
            }
        }
        super::mounts::enter_binds(&spec.binds).context("binding /etc/netns files")?;
    }
    if let Some(uts) = &spec.uts {
        // A process without a UTS namespace of its own shares the host's: joining it
        // changes nothing then.
        if let Ok(f) = File::open(uts) {
            let _ = setns(f, CloneFlags::CLONE_NEWUTS);
        }
    }
    if let Some(h) = &spec.hostname {
        unshare(CloneFlags::CLONE_NEWUTS).context("a UTS namespace")?;
        nix::unistd::sethostname(h).context("setting the host name")?;
    }
    if spec.tty {
        // The terminal (standard input) becomes the controlling one of a new session.
        nix::unistd::setsid().context("setsid")?;
        // SAFETY: an ioctl on fd 0 with an integer argument.
        if unsafe { libc::ioctl(std::io::stdin().as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("TIOCSCTTY");
        }
    }
    if let Some((uid, gid)) = spec.user {
        // Supplementary groups of root would keep its privileges.
        nix::unistd::setgroups(&[]).context("dropping groups")?;
        nix::unistd::setgid(gid.into()).context("setgid")?;
        nix::unistd::setuid(uid.into()).context("setuid")?;
    }
    if let Some(d) = &spec.workdir {
        std::env::set_current_dir(d).with_context(|| format!("entering {}", d.display()))?;
    }
    Ok(())
}
