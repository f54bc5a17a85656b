//! Starting a container's command (or an exec) inside its namespaces and watching it.
use std::{
    fs::File,
    os::{fd::OwnedFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::Context;

mod enter;
mod mounts;
mod vfork;

pub use enter::{main as enter_main, ARG as ENTER_ARG};
pub use mounts::{enter_binds, etc_binds, with_own_proc};

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
/// sees the namespace's /etc/netns files over /etc. The process is netd's `enter`
/// program first (started by posix_spawn, see `enter`), which enters the namespaces
/// and becomes the command; what would make that exec fail later (no such command, no
/// such directory) is an error here, before anything starts.
pub fn spawn(spec: Spawn) -> anyhow::Result<Child> {
    let (prog, _) = spec.cmd.split_first().context("empty command")?;
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    find_program(prog, path.as_deref(), spec.workdir)
        .with_context(|| format!("starting {prog:?}"))?;
    if let Some(d) = spec.workdir.filter(|d| !d.is_dir()) {
        return Err(std::io::Error::from_raw_os_error(libc::ENOENT))
            .with_context(|| format!("starting {prog:?}: working directory {}", d.display()));
    }
    let binds = spec.netns.map(etc_binds).unwrap_or_default();
    let tty = matches!(spec.io, ChildIo::Tty(_));
    let enter = enter::Spec {
        netns: spec.netns.map(crate::netns::resolve),
        template: mounts::template_path().map(PathBuf::from),
        binds,
        uts: spec
            .uts_of
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/uts"))),
        hostname: spec.hostname.map(String::from),
        tty,
        user: spec.user,
        workdir: spec.workdir.map(Path::to_path_buf),
    };
    let args = enter::args(&enter, spec.cmd)?;
    let exe = Path::new("/proc/self/exe");
    // Output to a file or nowhere (the usual, detached container): the vfork that costs
    // the same whatever the daemon holds.
    let log = match &spec.io {
        ChildIo::Log(log) => Some(Some(log.as_path())),
        ChildIo::Null => Some(None),
        _ => None,
    };
    if let Some(log) = log {
        let mut p = vfork::Prepared::new(exe, &args, spec.env, log, true)?;
        let pid = vfork::spawn(&mut p).with_context(|| format!("starting {prog:?}"))?;
        return Ok(Child::Raw(vfork::RawChild::new(pid)?));
    }
    // Terminals and pipes: posix_spawn (std takes it for an absolute program without
    // pre_exec, uid or gid; the `enter` program does those).
    let mut c = std::process::Command::new(exe);
    c.args(args).env_clear().envs(environment(spec.env));
    set_io(&mut c, spec.io)?;
    if !tty {
        c.process_group(0);
    }
    let child = tokio::process::Command::from(c)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("starting {prog:?}"))?;
    Ok(Child::Tokio(child))
}

/// A container process's environment: the daemon's, without what a service manager
/// gave the daemon alone (a container must not notify systemd for it or take its
/// sockets), with `env` on top; one value per name, the last given.
fn environment(env: &[(String, String)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    const THE_DAEMONS: [&str; 6] = [
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "INVOCATION_ID",
        "WATCHDOG_USEC",
    ];
    let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(k, _)| !THE_DAEMONS.iter().any(|d| k == d))
        .collect();
    for (k, v) in env {
        vars.retain(|(have, _)| have != k.as_str());
        vars.push((k.into(), v.into()));
    }
    vars
}

/// A process `spawn` started.
pub enum Child {
    /// With pipes or a terminal the daemon wires to clients.
    Tokio(tokio::process::Child),
    /// Output to a file or nowhere.
    Raw(vfork::RawChild),
}

impl Child {
    pub fn id(&self) -> Option<u32> {
        match self {
            Child::Tokio(c) => c.id(),
            Child::Raw(c) => Some(c.id()),
        }
    }

    /// Its exit status once it has ended.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Child::Tokio(c) => c.wait().await,
            Child::Raw(c) => c.wait().await,
        }
    }

    /// The streams' side of it, for a process with pipes or a terminal.
    pub fn streams(&mut self) -> Option<&mut tokio::process::Child> {
        match self {
            Child::Tokio(c) => Some(c),
            Child::Raw(_) => None,
        }
    }
}

/// Where `prog` is, as execvp in `workdir` would find it: itself if it names a path
/// (relative ones from `workdir`), else the first executable file of that name in
/// `path`'s directories (glibc's default without one).
fn find_program(
    prog: &str,
    path: Option<&std::ffi::OsStr>,
    workdir: Option<&Path>,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let here = |p: PathBuf| match workdir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p,
    };
    if prog.contains('/') {
        let p = here(PathBuf::from(prog));
        return match (p.exists(), runnable(&p)) {
            (true, true) => Ok(p),
            (true, false) => Err(std::io::Error::from_raw_os_error(libc::EACCES)),
            (false, _) => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
        };
    }
    let dirs = path.unwrap_or(std::ffi::OsStr::new("/bin:/usr/bin"));
    std::env::split_paths(dirs)
        .map(|d| here(d).join(prog))
        .find(|p| runnable(p))
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_given_twice_reaches_the_process_once_with_its_last_value() {
        let env = [
            ("NETD_T_DUP".to_string(), "first".to_string()),
            ("NETD_T_DUP".to_string(), "last".to_string()),
        ];
        let got: Vec<_> = environment(&env)
            .into_iter()
            .filter(|(k, _)| k == "NETD_T_DUP")
            .collect();
        assert_eq!(got, [("NETD_T_DUP".into(), "last".into())]);
    }

    #[test]
    fn a_relative_command_is_found_from_the_working_directory() {
        let dir = std::env::temp_dir().join(format!("netd-find-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let tool = dir.join("bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find_program("./bin/tool", None, Some(&dir)).unwrap(),
            dir.join("./bin/tool")
        );
        assert!(find_program("./bin/tool", None, None).is_err());
        let path = std::ffi::OsString::from("bin");
        assert_eq!(
            find_program("tool", Some(&path), Some(&dir)).unwrap(),
            dir.join("bin/tool")
        );
        let e = find_program("no-such-tool", Some(&path), Some(&dir)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
