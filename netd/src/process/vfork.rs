//! Starting the `enter` program for a process whose output goes to a file (or nowhere),
//! at a cost that does not grow with the daemon: a vfork (the child borrows the
//! daemon's memory until its exec) that also shares the fd table at first
//! (`CLONE_FILES`) and then takes a private one holding only 0-2
//! (`close_range(CLOSE_RANGE_UNSHARE)`), and opens its streams by path. posix_spawn
//! copies the whole table (the daemon holds a few sockets per container: 20,000 fds at
//! 5,000 containers) and the exec closes every copy again.
//!
//! The child runs on a stack of its own in the daemon's memory, so it makes only raw
//! syscalls on memory prepared before (no allocation, no locks), with every signal
//! blocked (a handler of the daemon's must not run there); `enter` unblocks them.
use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, process::ExitStatusExt},
    },
    path::Path,
    process::ExitStatus,
};

use tokio::io::unix::AsyncFd;

/// Everything the child needs, as C strings prepared before the clone.
pub struct Prepared {
    exe: CString,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    /// Standard output and error (None: /dev/null).
    log: Option<CString>,
    pgroup: bool,
    /// The errno of a failure in the child (0: it reached its exec).
    err: libc::c_int,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn pointers(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Prepared {
    /// `exe` run with `args`, the daemon's environment with `env` on top, output to
    /// `log` (or nowhere), in a process group of its own if `pgroup`.
    pub fn new(
        exe: &Path,
        args: &[std::ffi::OsString],
        env: &[(String, String)],
        log: Option<&Path>,
        pgroup: bool,
    ) -> io::Result<Prepared> {
        let exe = cstring(exe.as_os_str())?;
        let argv = std::iter::once(Ok(exe.clone()))
            .chain(args.iter().map(|a| cstring(a)))
            .collect::<io::Result<Vec<_>>>()?;
        let vars = super::environment(env);
        let envp = vars
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                cstring(&kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Prepared {
            argv: pointers(&argv),
            _argv: argv,
            envp: pointers(&envp),
            _envp: envp,
            log: log.map(|p| cstring(p.as_os_str())).transpose()?,
            exe,
            pgroup,
            err: 0,
        })
    }
}

/// The child: streams, process group, exec. Raw syscalls only (see the module doc).
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Prepared`, alive and not touched by the parent
    // until the child has exec'd or exited (vfork); every pointer in it is valid.
    unsafe {
        let p = &mut *(arg as *mut Prepared);
        let fail = |p: &mut Prepared| -> libc::c_int {
            p.err = *libc::__errno_location();
            libc::_exit(127)
        };
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        ) != 0
        {
            return fail(p);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let out = match &p.log {
            Some(log) => libc::open(
                log.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o644,
            ),
            None => null,
        };
        if null < 0
            || out < 0
            || libc::dup2(null, 0) < 0
            || libc::dup2(out, 1) < 0
            || libc::dup2(out, 2) < 0
            || libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0
            || (p.pgroup && libc::setpgid(0, 0) != 0)
        {
            return fail(p);
        }
        libc::execve(p.exe.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(p)
    }
}

/// Starts `p`; returns once the child has exec'd (its pid) or failed (its error).
/// Linux 5.9 or later (`CLOSE_RANGE_UNSHARE`); netd needs 6.6 for TCX anyway.
pub fn spawn(p: &mut Prepared) -> io::Result<u32> {
    const STACK: usize = 64 * 1024;
    let mut stack = vec![0u8; STACK];
    // SAFETY: the stack outlives the child's use of it (the parent is suspended until
    // the exec); the signal masks are restored before returning.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.as_mut_ptr().add(STACK) as usize & !15;
        let pid = libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            p as *mut Prepared as *mut libc::c_void,
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_err);
        }
        if p.err != 0 {
            reap(pid);
            return Err(io::Error::from_raw_os_error(p.err));
        }
        Ok(pid as u32)
    }
}

/// Waits for child `pid` to end (it is ending).
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// A child started by `spawn`, waited for through a pidfd.
pub struct RawChild {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

impl RawChild {
    /// Watches child `pid`; a child that cannot be watched is ended and reaped, not
    /// left running untracked.
    pub fn new(pid: u32) -> io::Result<RawChild> {
        Self::watch(pid).inspect_err(|_| {
            // SAFETY: our own child, which nothing else reaps.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            reap(pid as libc::pid_t);
        })
    }

    fn watch(pid: u32) -> io::Result<RawChild> {
        // SAFETY: pidfd_open returns a new fd we own, or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the fd, which nothing replaces or closes meanwhile.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
        Ok(RawChild { pid, pidfd })
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status, once it has ended (reaped here).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut guard = self.pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if r == self.pid as i32 {
                return Ok(ExitStatus::from_raw(status));
            }
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            guard.clear_ready();
        }
    }
}
