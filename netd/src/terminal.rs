//! The terminal of a `-t` container outlives the agent. netd holds the master side of
//! the container's pseudo-terminal; were it the only holder, a restarting agent would
//! hang the terminal up (the shell gets SIGHUP, a `docker attach` later finds nothing).
//! So a small process of its own (`netd hold-terminal`, started beside the container's
//! process, in a session of its own) keeps a copy of the master side for as long as the
//! container's process runs, and hands it over (SCM_RIGHTS on
//! `RUN_DIR/terminals/ID.sock`) to whichever agent asks: the next one, after a restart
//! or an upgrade. Output written while no agent reads waits in the terminal's buffer.
use std::{
    io::IoSlice,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, Context};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::process;

/// The descriptor the holder keeps the master side on.
const HELD_FD: RawFd = 3;

/// Where the holder of container `id` listens (the short id: a socket path is at most
/// 108 bytes).
pub fn socket_path(run_dir: &Path, id: &str) -> PathBuf {
    run_dir
        .join("terminals")
        .join(format!("{}.sock", &id[..id.len().min(12)]))
}

/// Starts the holder of container `id`'s terminal `master` while process `pid` (started
/// at `start`) runs.
pub fn spawn_holder(
    run_dir: &Path,
    id: &str,
    pid: u32,
    start: Option<u64>,
    master: &OwnedFd,
) -> anyhow::Result<()> {
    let dir = run_dir.join("terminals");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let raw = master.as_raw_fd();
    let mut c = tokio::process::Command::new("/proc/self/exe");
    c.args(["hold-terminal", "--run-dir"])
        .arg(run_dir)
        .args(["--id", id, "--pid", &pid.to_string()])
        .args(["--start", &start.unwrap_or(0).to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: dup2, fcntl and setsid between fork and exec are async-signal-safe and
    // touch only the child's own descriptor table and session.
    unsafe {
        c.pre_exec(move || {
            if raw == HELD_FD {
                if libc::fcntl(HELD_FD, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, HELD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Its own session: a stop of the agent's process group spares it.
            libc::setsid();
            Ok(())
        });
    }
    let mut child = c.spawn().context("starting netd hold-terminal")?;
    // Reaped by this agent while it lives (by init after a restart).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

/// `netd hold-terminal`: keeps descriptor 3 (the master side) and hands a copy to each
/// connection, until process `pid` ends.
pub fn hold(run_dir: &Path, id: &str, pid: u32, start: u64) -> anyhow::Result<()> {
    // SAFETY: the agent passed the master side as descriptor 3, which nothing else here
    // owns.
    let master = unsafe { OwnedFd::from_raw_fd(HELD_FD) };
    let path = socket_path(run_dir, id);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let start = (start != 0).then_some(start);
    while process::alive(pid, start) {
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = send_fd(&conn, &master);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn send_fd(conn: &UnixStream, fd: &OwnedFd) -> anyhow::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(b"t")],
        &cmsg,
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// The master side of container `id`'s terminal from its holder, if one runs.
pub fn take(run_dir: &Path, id: &str) -> anyhow::Result<OwnedFd> {
    let path = socket_path(run_dir, id);
    let conn = UnixStream::connect(&path)
        .with_context(|| format!("no terminal holder at {}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for this process.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(anyhow!(
        "the terminal holder at {} sent no descriptor",
        path.display()
    ))
}
