//! `netd daemon --replace`: takes over from the agent that serves this instance's socket
//! with no moment of unattached programs, whatever that agent does when it stops (netd
//! 0.1.0 detached every program at SIGTERM; later releases keep them). The program
//! links are held open while the old agent stops, and pinned again where it removed
//! them, so the starting agent adopts them as after a crash.
use std::{
    os::fd::AsRawFd,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use log::info;

use super::DaemonArgs;
use crate::datapath;

/// How long the old agent may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The pid of the process that listens on the unix socket `path` (SO_PEERCRED of a
/// connection: the listener's credentials).
fn server_pid(path: &Path) -> anyhow::Result<u32> {
    let s = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "--replace: no netd daemon answers on {} to replace",
            path.display()
        )
    })?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 || cred.pid <= 0 {
        return Err(std::io::Error::last_os_error()).context("SO_PEERCRED");
    }
    Ok(cred.pid as u32)
}

/// Whether `pid` still runs: a zombie (exited, not yet reaped by its parent) has let go
/// of everything already.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X")),
        Err(_) => false,
    }
}

/// Holds the old agent's links, stops it with SIGTERM, waits for it to exit, and pins
/// again what it unpinned.
pub fn take_over(args: &DaemonArgs) -> anyhow::Result<()> {
    let pid = server_pid(&args.run_dir.join("netd.sock"))?;
    if pid == std::process::id() {
        bail!("--replace: this process serves the socket already");
    }
    let held = datapath::hold_links(&args.bpf_dir)?;
    info!(
        "replacing netd pid {pid}: holding its {} program links",
        held.len()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .with_context(|| format!("stopping netd pid {pid}"))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while running(pid) {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "--replace: netd pid {pid} did not stop within {}s",
                STOP_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let repinned = held.repin_missing()?;
    info!("netd pid {pid} stopped; {repinned} links it had removed are pinned again");
    Ok(())
}
