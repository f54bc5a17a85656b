//! A lab: a host namespace (optionally running netd), a client namespace on its uplink,
//! a cgroup for the socket programs, a directory for state and logs, and whatever the
//! user of the lab adds to it; all of it removed when the lab is dropped, even on panic.
use std::{
    path::PathBuf,
    process::{Child, ExitStatus, Output},
};

use crate::{
    bins, cgroup,
    daemon::{self, Daemon, DaemonSpec},
    leaks, netns,
    sweep::{self, BPFFS},
    topology::{self, Uplink, DEFAULT_UPLINK},
    Error, Result,
};

/// Tag of the e2e tests' names (`ndt-PID-N-...`).
pub const TEST_TAG: &str = "ndt";

/// What a lab is called, and so what every name it makes starts with.
#[derive(Clone, Debug)]
pub enum LabName {
    /// `TAG-PID-N`, or `TAG-PID-SUFFIX`: unique, and swept by a later run of the same
    /// tag if this process dies without tearing it down.
    Unique {
        tag: &'static str,
        suffix: Option<String>,
    },
    /// A fixed name for a lab that outlives the process that made it (`cargo xtask lab
    /// up`); never swept, and refused if it already exists.
    Fixed(String),
}

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub name: LabName,
    pub uplink: Uplink,
    /// A cgroup of the lab's own for the daemon's socket programs; without one they
    /// are off (`--cgroup none`).
    pub cgroup: bool,
    /// Where state and logs go (default: TMPDIR/NAME).
    pub dir: Option<PathBuf>,
    pub netd: PathBuf,
    /// Extra daemon arguments and environment.
    pub daemon_args: Vec<String>,
    pub daemon_env: Vec<(String, String)>,
    /// Start the daemon in a process group of its own (it outlives this process).
    pub detach_daemon: bool,
}

impl Default for LabOptions {
    /// The e2e tests' lab.
    fn default() -> Self {
        LabOptions {
            name: LabName::Unique {
                tag: TEST_TAG,
                suffix: None,
            },
            uplink: DEFAULT_UPLINK,
            cgroup: true,
            dir: None,
            netd: bins::netd_bin(),
            daemon_args: Vec::new(),
            daemon_env: Vec::new(),
            detach_daemon: false,
        }
    }
}

pub struct Lab {
    pub name: String,
    pub host: String,
    pub client: String,
    pub uplink: Uplink,
    pub dir: PathBuf,
    pub bpf_dir: PathBuf,
    /// The lab's own cgroup: the daemon's socket programs are attached here, so only
    /// processes the lab puts in it get host access to published ports.
    pub cgroup: Option<PathBuf>,
    pub netd_bin: PathBuf,
    pub extra_daemon_args: Vec<String>,
    pub daemon_env: Vec<(String, String)>,
    /// NETD_FAULT for the next daemon start (test-only crash points).
    pub fault: Option<String>,
    detach_daemon: bool,
    daemon: Option<Daemon>,
    /// Processes started in the lab (servers), killed at teardown.
    background: Vec<Child>,
    /// Namespaces the lab made or was given, deleted at teardown.
    namespaces: Vec<String>,
    /// Left up on drop (`persist`).
    keep: bool,
}

impl Lab {
    /// The e2e tests' lab with a running daemon. Panics on failure (for tests).
    #[expect(
        clippy::new_without_default,
        reason = "a Lab creates namespaces and starts a daemon: not a default value"
    )]
    pub fn new() -> Lab {
        Self::with_args(&[])
    }

    /// The e2e tests' lab, its daemon started with `daemon_args`. Panics on failure.
    pub fn with_args(daemon_args: &[&str]) -> Lab {
        let mut lab = Self::without_daemon();
        lab.extra_daemon_args = daemon_args.iter().map(|s| s.to_string()).collect();
        if let Err(e) = lab.start_daemon() {
            panic!("starting netd daemon: {e}");
        }
        lab
    }

    /// The e2e tests' lab: namespaces, uplink and cgroup only. Panics on failure.
    pub fn without_daemon() -> Lab {
        Self::create(LabOptions::default()).unwrap_or_else(|e| panic!("building the lab: {e}"))
    }

    /// Builds the namespaces, the uplink and (if asked) the cgroup; no daemon yet.
    /// Whatever was made is removed again if a later step fails.
    pub fn create(opts: LabOptions) -> Result<Lab> {
        let name = match &opts.name {
            LabName::Unique { tag, suffix } => {
                sweep::sweep_once(tag);
                sweep::unique_name(tag, suffix.as_deref())
            }
            LabName::Fixed(n) => n.clone(),
        };
        let mut lab = Self::layout(&name, &opts)?;
        if let LabName::Fixed(_) = opts.name {
            // Never take over (and so tear down) another lab's namespaces.
            for ns in [&lab.host, &lab.client] {
                if netns::exists(ns) {
                    lab.keep = true;
                    return Err(Error::Exists {
                        what: format!("namespace {ns}"),
                    });
                }
            }
        }
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).map_err(|e| Error::path("creating", &lab.dir, e))?;
        for ns in [lab.host.clone(), lab.client.clone()] {
            netns::create(&ns)?;
            lab.namespaces.push(ns);
        }
        topology::build(&lab.host, &lab.client, &lab.uplink)?;
        if let Some(cg) = &lab.cgroup {
            cgroup::create(cg)?;
        }
        Ok(lab)
    }

    /// The lab called `name` as an earlier process left it (`cargo xtask lab down`):
    /// its namespaces, and its daemon if `DIR/daemon.pid` names a live one. Dropping
    /// it tears it down.
    pub fn reopen(name: &str, opts: LabOptions) -> Result<Lab> {
        let mut lab = Self::layout(name, &opts)?;
        for ns in [lab.host.clone(), lab.client.clone()] {
            if netns::exists(&ns) {
                lab.namespaces.push(ns);
            }
        }
        lab.daemon = std::fs::read_to_string(lab.dir.join("daemon.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .and_then(Daemon::adopt);
        Ok(lab)
    }

    fn layout(name: &str, opts: &LabOptions) -> Result<Lab> {
        let cgroup = if opts.cgroup {
            Some(cgroup::cgroup2_root().ok_or(Error::NoCgroup2)?.join(name))
        } else {
            None
        };
        Ok(Lab {
            host: format!("{name}-host"),
            client: format!("{name}-client"),
            uplink: opts.uplink,
            dir: opts
                .dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(name)),
            bpf_dir: PathBuf::from(BPFFS).join(name),
            cgroup,
            netd_bin: opts.netd.clone(),
            extra_daemon_args: opts.daemon_args.clone(),
            daemon_env: opts.daemon_env.clone(),
            fault: None,
            detach_daemon: opts.detach_daemon,
            daemon: None,
            background: Vec::new(),
            namespaces: Vec::new(),
            keep: false,
            name: name.to_string(),
        })
    }

    /// Leaves the lab up when it is dropped (`cargo xtask lab up`); its daemon's pid is
    /// written to `DIR/daemon.pid` for [`Lab::reopen`].
    pub fn persist(mut self) -> Result<()> {
        if let Some(d) = &self.daemon {
            let f = self.dir.join("daemon.pid");
            std::fs::write(&f, d.pid().to_string()).map_err(|e| Error::path("writing", &f, e))?;
        }
        self.keep = true;
        Ok(())
    }

    /// Tears the lab down now and reports every problem, leftovers included.
    pub fn close(mut self) -> Result<()> {
        self.keep = true;
        self.teardown()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/netd.sock")
    }

    /// Prefix of the daemon's container namespaces.
    pub fn container_prefix(&self) -> String {
        format!("{}-c-", self.name)
    }

    fn daemon_spec(&self) -> DaemonSpec {
        DaemonSpec {
            bin: self.netd_bin.clone(),
            netns: self.host.clone(),
            state_dir: self.dir.join("state"),
            run_dir: self.dir.join("run"),
            bpf_dir: self.bpf_dir.clone(),
            netns_prefix: self.container_prefix(),
            cgroup: self.cgroup.clone(),
            args: self.extra_daemon_args.clone(),
            env: self.daemon_env.clone(),
            fault: self.fault.clone(),
            log: self.dir.join("daemon.log"),
            detach: self.detach_daemon,
        }
    }

    /// Starts netd in the host namespace with the lab's directories and
    /// `extra_daemon_args`, and waits until it answers.
    pub fn start_daemon(&mut self) -> Result<()> {
        self.daemon = Some(Daemon::start(&self.daemon_spec())?);
        Ok(())
    }

    /// The running daemon, taken out of the lab (which then runs none): for a test
    /// that starts another beside it (`netd daemon --replace`) and waits for the old
    /// one to exit.
    pub fn take_daemon(&mut self) -> Option<Daemon> {
        self.daemon.take()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// Waits for the daemon to die by itself (a fault point) and returns its status.
    pub fn wait_daemon_death(&mut self) -> Option<ExitStatus> {
        self.daemon.take()?.wait_death()
    }

    /// Stops the daemon with `signal` and returns its exit status.
    pub fn stop_daemon(&mut self, signal: i32) -> Option<ExitStatus> {
        self.daemon.take()?.stop(signal)
    }

    pub fn daemon_log(&self) -> String {
        daemon::read_log(&self.dir.join("daemon.log"))
    }

    /// Runs the netd CLI against this lab's daemon. Panics if it cannot start (tests).
    pub fn netd(&self, args: &[&str]) -> Output {
        daemon::cli(&self.netd_bin, &self.socket(), args)
            .unwrap_or_else(|e| panic!("running netd: {e}"))
    }

    /// Runs the netd CLI and fails the test if it fails; returns stdout.
    pub fn netd_ok(&self, args: &[&str]) -> String {
        let o = self.netd(args);
        assert!(
            o.status.success(),
            "netd {} failed: {}\n--- daemon log ---\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs the netd CLI: its stdout, or an error with its stderr.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let o = daemon::cli(&self.netd_bin, &self.socket(), args)?;
        crate::cmd::checked(&format!("netd {}", args.join(" ")), o)
    }

    /// Creates namespace `NAME-SUFFIX`, deleted with the lab.
    pub fn add_namespace(&mut self, suffix: &str) -> Result<String> {
        let ns = format!("{}-{suffix}", self.name);
        netns::create(&ns)?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    /// Deletes namespace `ns` (made by someone else for the lab) with the lab.
    pub fn adopt_namespace(&mut self, ns: &str) {
        self.namespaces.push(ns.to_string());
    }

    /// Keeps `child` to kill at teardown.
    pub fn adopt_background(&mut self, child: Child) {
        self.background.push(child);
    }

    /// Starts `args` in namespace `ns` (on `cpu` if given) for the lab's lifetime.
    pub fn spawn_in(&mut self, ns: &str, cpu: Option<usize>, args: &[&str]) -> Result<()> {
        let child = crate::cmd::spawn_in_ns(ns, cpu, args)?;
        self.background.push(child);
        Ok(())
    }

    /// Links in the host namespace, by name.
    pub fn host_links(&self) -> Vec<String> {
        netns::links(&self.host)
    }

    /// Container namespaces of this lab that still exist.
    pub fn container_namespaces(&self) -> Vec<String> {
        netns::with_prefix(&self.container_prefix())
    }

    /// Pinned endpoint links of this instance.
    pub fn endpoint_pins(&self) -> Vec<String> {
        leaks::endpoint_pins(&self.bpf_dir)
    }

    /// The programs in tc filters on the host namespace's links: a container's endpoint
    /// programs, on its host veth.
    pub fn endpoint_programs(&self) -> Vec<leaks::TcProgram> {
        leaks::tc_programs(&self.host)
    }

    /// Everything of the lab's that still exists (after teardown: nothing).
    pub fn leftovers(&self) -> Vec<String> {
        leaks::leftovers(&self.name, &self.bpf_dir, self.cgroup.as_deref())
    }

    /// Runs `netd daemon --cleanup` on the lab's instance (its daemon must be stopped).
    pub fn netd_cleanup(&self) -> Result<Output> {
        crate::daemon::cleanup_output(&self.daemon_spec())
    }

    /// `netd daemon --cleanup`, then what it left of what the daemon had claimed (its
    /// links and namespaces), of its container namespaces and of its pins.
    fn cleanup_netd(&self) -> Vec<String> {
        let claims = |kind: &str| -> Vec<String> {
            std::fs::read_dir(self.dir.join("state/owned").join(kind))
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().to_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (links, namespaces) = (claims("links"), claims("netns"));
        let mut problems = Vec::new();
        if let Err(e) = crate::daemon::cleanup(&self.daemon_spec()) {
            problems.push(e.to_string());
        }
        let host_links = self.host_links();
        let left = links
            .into_iter()
            .filter(|l| host_links.contains(l))
            .map(|l| format!("link {l}"))
            .chain(
                namespaces
                    .into_iter()
                    .chain(self.container_namespaces())
                    .filter(|n| netns::exists(n))
                    .map(|n| format!("namespace {n}")),
            )
            .chain(
                self.bpf_dir
                    .exists()
                    .then(|| format!("pins under {}", self.bpf_dir.display())),
            );
        problems.extend(left.map(|l| format!("left behind by netd daemon --cleanup: {l}")));
        problems
    }

    /// Removes everything, going on past each problem, then checks that nothing of
    /// the lab's is left.
    fn teardown(&mut self) -> Result<()> {
        for mut c in self.background.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut problems = Vec::new();
        if self.daemon.is_some() {
            if let Ok(ids) = self.cli(&["ps", "-a", "-q"]) {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.split_whitespace());
                if args.len() > 2 {
                    if let Err(e) = self.cli(&args) {
                        problems.push(e.to_string());
                    }
                }
            }
            self.stop_daemon(libc::SIGTERM);
        }
        // A stopped daemon leaves its datapath forwarding; the explicit cleanup removes
        // it, and the leak check below proves it removed everything.
        if self.dir.join("state").exists() {
            problems.extend(self.cleanup_netd());
        }
        let mut doomed = self.container_namespaces();
        doomed.extend(self.namespaces.drain(..).rev());
        for ns in doomed.iter().filter(|ns| netns::exists(ns)) {
            if let Err(e) = netns::delete(ns) {
                problems.push(e.to_string());
            }
        }
        // What netd writes for its container namespaces (gone with them after `rm`).
        for ns in &doomed {
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cgroup::remove(cg) {
                problems.push(e.to_string());
            }
        }
        if self.bpf_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.bpf_dir) {
                problems.push(format!("{}: {e}", self.bpf_dir.display()));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if problems.is_empty() {
            problems = self
                .leftovers()
                .into_iter()
                .map(|l| format!("left behind: {l}"))
                .collect();
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown {
                lab: self.name.clone(),
                problems,
            })
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("{e}");
        }
    }
}
