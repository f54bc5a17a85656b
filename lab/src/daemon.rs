//! A netd daemon with its own state, run and bpffs directories, working inside the
//! lab's host namespace (it enters it itself, so its pins outlive `ip netns exec`).
use std::{
    fs::OpenOptions,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{sweep::pid_alive, Error, Result};

/// How long a starting daemon may take to answer its API.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping daemon may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one start of the daemon needs.
#[derive(Clone, Debug)]
pub struct DaemonSpec {
    pub bin: PathBuf,
    pub netns: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub bpf_dir: PathBuf,
    /// Prefix of its containers' namespaces: the lab finds (and removes) them by it.
    pub netns_prefix: String,
    /// The cgroup for its socket programs; `None` turns them off (`--cgroup none`).
    pub cgroup: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// NETD_FAULT (the daemon's test-only crash points).
    pub fault: Option<String>,
    /// Appended to, stdout and stderr.
    pub log: PathBuf,
    /// In a process group of its own, so that it outlives the process that started it
    /// and a Ctrl-C there (`cargo xtask lab up`).
    pub detach: bool,
}

impl DaemonSpec {
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("netd.sock")
    }
}

/// Runs the netd CLI against the daemon at `socket`.
pub fn cli(bin: &Path, socket: &Path, args: &[&str]) -> Result<Output> {
    Command::new(bin)
        .arg("-H")
        .arg(socket)
        .args(args)
        .output()
        .map_err(|e| Error::path("running", bin, e))
}

/// `netd daemon --cleanup` on the instance of `spec`: what it printed and its status.
pub fn cleanup_output(spec: &DaemonSpec) -> Result<Output> {
    Command::new(&spec.bin)
        .args(["daemon", "--cleanup", "--netns", &spec.netns])
        .arg("--state-dir")
        .arg(&spec.state_dir)
        .arg("--run-dir")
        .arg(&spec.run_dir)
        .arg("--bpf-dir")
        .arg(&spec.bpf_dir)
        // The flags it ran with: with a cluster store, the node leaves it.
        .args(&spec.args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::path("running", &spec.bin, e))
}

/// The same, as a Result: an error carries everything it printed.
pub fn cleanup(spec: &DaemonSpec) -> Result<()> {
    let o = cleanup_output(spec)?;
    if o.status.success() {
        Ok(())
    } else {
        Err(Error::Daemon(format!(
            "--cleanup failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )))
    }
}

/// The pid of the process listening on the unix socket `path` (SO_PEERCRED).
pub fn socket_pid(path: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let s = std::os::unix::net::UnixStream::connect(path).ok()?;
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
    (r == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// Whether `bin` reads a config file (releases before 0.2 do not, and have no
/// --config-file flag); asked once per binary.
fn reads_config(bin: &Path) -> bool {
    use std::{collections::HashMap, sync::Mutex};
    static KNOWN: Mutex<Option<HashMap<PathBuf, bool>>> = Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    *known
        .get_or_insert_with(HashMap::new)
        .entry(bin.to_path_buf())
        .or_insert_with(|| {
            Command::new(bin)
                .args(["daemon", "--help"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--config-file"))
        })
}

/// A running daemon: one this process started, or one adopted by pid.
pub struct Daemon {
    pid: u32,
    child: Option<Child>,
}

impl Daemon {
    /// Starts the daemon and waits until its API answers.
    pub fn start(spec: &DaemonSpec) -> Result<Daemon> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| Error::path("opening", &spec.log, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::path("opening", &spec.log, e))?;
        let mut cmd = Command::new(&spec.bin);
        cmd.args(["daemon", "--netns", &spec.netns]);
        if !spec.args.iter().any(|a| a.starts_with("--config-file")) && reads_config(&spec.bin) {
            // A config file of the lab's own: the machine's /etc/netd/daemon.json (an
            // installed package's) never reaches a lab's daemon.
            let empty = spec.log.with_file_name("daemon.json");
            std::fs::write(&empty, "{}\n").map_err(|e| Error::path("writing", &empty, e))?;
            cmd.arg("--config-file").arg(&empty);
        }
        cmd.arg("--state-dir")
            .arg(&spec.state_dir)
            .arg("--run-dir")
            .arg(&spec.run_dir)
            .arg("--bpf-dir")
            .arg(&spec.bpf_dir)
            .args(["--netns-prefix", &spec.netns_prefix])
            .arg("--cgroup")
            .arg(spec.cgroup.as_deref().unwrap_or(Path::new("none")))
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env_remove("NETD_FAULT")
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        if let Some(f) = &spec.fault {
            cmd.env("NETD_FAULT", f);
        }
        if spec.detach {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::path("starting", &spec.bin, e))?;
        let mut d = Daemon {
            pid: child.id(),
            child: Some(child),
        };
        let socket = spec.socket();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // This daemon's socket (not one it is replacing) answers.
            if socket_pid(&socket) == Some(d.pid)
                && cli(&spec.bin, &socket, &["ps"]).is_ok_and(|o| o.status.success())
            {
                return Ok(d);
            }
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(Error::Daemon(format!(
                    "exited with {st}: {}",
                    read_log(&spec.log)
                )));
            }
            if Instant::now() > deadline {
                d.stop(libc::SIGKILL);
                return Err(Error::Daemon(format!(
                    "did not answer within {}s: {}",
                    START_TIMEOUT.as_secs(),
                    read_log(&spec.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A daemon an earlier process started (`cargo xtask lab down`), if it still runs.
    pub fn adopt(pid: u32) -> Option<Daemon> {
        pid_alive(pid).then_some(Daemon { pid, child: None })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` and waits for the daemon to exit (killing it after 10 s); its
    /// exit status if this process started it.
    pub fn stop(&mut self, signal: i32) -> Option<ExitStatus> {
        // SAFETY: kill(2) on the daemon this lab started or adopted.
        unsafe { libc::kill(self.pid as i32, signal) };
        self.wait(STOP_TIMEOUT, true)
    }

    /// Waits for the daemon to die by itself (a fault point), killing it after 10 s.
    pub fn wait_death(&mut self) -> Option<ExitStatus> {
        self.wait(STOP_TIMEOUT, true)
    }

    fn wait(&mut self, timeout: Duration, kill_after: bool) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let done = match self.child.as_mut() {
                Some(c) => match c.try_wait() {
                    Ok(Some(st)) => return Some(st),
                    Ok(None) => false,
                    Err(_) => true,
                },
                None => !pid_alive(self.pid),
            };
            if done {
                return None;
            }
            if Instant::now() > deadline {
                if kill_after {
                    // SAFETY: kill(2) on the daemon this lab started or adopted.
                    unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
                    return self.wait(STOP_TIMEOUT, false);
                }
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
