//! Execs (`docker exec` through the Engine API): a command started in a running
//! container's namespaces (network, its /etc files, its hostname), with its output
//! attached to the client that started it, or detached. Records live in memory, as
//! dockerd keeps them: for as long as their container, a finished one at most
//! `KEEP_FINISHED` after it ended.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use log::info;
use tokio::sync::watch;

use super::{not_found_container, random_id, stdio::Hub, Daemon};
use crate::{
    error::{NetdError, Result},
    model::{parse_detach_keys, Container, ContainerState, NetMode, DEFAULT_DETACH_KEYS},
    process,
};

/// How long a finished exec's record stays for its exit code to be read.
const KEEP_FINISHED: Duration = Duration::from_secs(300);

/// What `POST /containers/{id}/exec` asks for.
#[derive(Clone, Debug, Default)]
pub struct ExecConfig {
    pub cmd: Vec<String>,
    /// KEY=VALUE, on top of the container's (`--link`) variables.
    pub env: Vec<String>,
    /// `UID[:GID]` or `NAME[:GROUP]`; empty: root.
    pub user: String,
    pub workdir: String,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub privileged: bool,
    /// Docker's notation; empty: ctrl-p,ctrl-q.
    pub detach_keys: String,
    /// The client terminal's size (rows, columns), the exec's terminal's at start.
    pub console_size: Option<[u16; 2]>,
}

/// A started exec: its streams (subscribed before it ran), its exit, its record.
pub struct ExecStarted {
    pub hub: Arc<Hub>,
    pub out: tokio::sync::broadcast::Receiver<super::stdio::Frame>,
    pub exit: watch::Receiver<Option<i32>>,
    pub info: ExecInfo,
}

/// An exec as `GET /exec/{id}/json` shows it.
#[derive(Clone, Debug)]
pub struct ExecInfo {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub pid: Option<u32>,
}

struct Record {
    info: ExecInfo,
    started: bool,
    hub: Arc<Hub>,
    exit: watch::Sender<Option<i32>>,
    finished: Option<Instant>,
}

/// The daemon's execs, by id.
#[derive(Default)]
pub struct Execs(Mutex<HashMap<String, Record>>);

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn forget_container(&self, container_id: &str) {
        self.lock()
            .retain(|_, r| r.info.container_id != container_id);
    }

    /// The ids of the execs running in `container_id`.
    pub fn running_in(&self, container_id: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .values()
            .filter(|r| r.info.container_id == container_id && r.info.running)
            .map(|r| r.info.id.clone())
            .collect();
        v.sort();
        v
    }
}

fn no_such_exec(id: &str) -> NetdError {
    NetdError::NotFound(format!("No such exec instance: {id}"))
}

/// KEY=VALUE items as pairs (an item without `=` is Docker's "take it from the
/// client's environment", which the client resolves before it sends: skipped here).
fn env_pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

impl Daemon {
    pub async fn exec_create(&self, container: &str, cfg: ExecConfig) -> Result<String> {
        let c = {
            let g = self.inner.lock().await;
            g.state
                .container(container)
                .cloned()
                .ok_or_else(|| not_found_container(container))?
        };
        if c.state != ContainerState::Running || c.handed_off() {
            return Err(NetdError::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        if cfg.cmd.is_empty() {
            return Err(NetdError::InvalidArgument(
                "No exec command specified".into(),
            ));
        }
        process::resolve_user(&cfg.user).map_err(NetdError::InvalidArgument)?;
        if !cfg.detach_keys.is_empty() {
            parse_detach_keys(&cfg.detach_keys)?;
        }
        let id = random_id();
        let record = Record {
            info: ExecInfo {
                id: id.clone(),
                container_id: c.id.clone(),
                config: cfg.clone(),
                running: false,
                exit_code: None,
                pid: None,
            },
            started: false,
            hub: Hub::new(),
            exit: watch::channel(None).0,
            finished: None,
        };
        {
            let mut execs = self.execs.lock();
            execs.retain(|_, r| r.finished.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
            execs.insert(id.clone(), record);
        }
        let action = format!("exec_create: {}", cfg.cmd.join(" "));
        self.emit_container(&c, &action, &[("execID", id.clone())]);
        Ok(id)
    }

    /// Starts exec `id`: its streams (to attach to unless `detach`) and a receiver of
    /// its exit code.
    pub async fn exec_start(self: &Arc<Self>, id: &str, detach: bool) -> Result<ExecStarted> {
        self.exec_claim(id)?;
        self.exec_spawn(id, detach).await
    }

    /// Marks exec `id` started (an exec starts once): its record.
    pub fn exec_claim(&self, id: &str) -> Result<ExecInfo> {
        let mut execs = self.execs.lock();
        let r = execs.get_mut(id).ok_or_else(|| no_such_exec(id))?;
        if r.started {
            return Err(NetdError::Conflict(format!(
                "exec {id} has already started"
            )));
        }
        r.started = true;
        Ok(r.info.clone())
    }

    /// Starts claimed exec `id`. One that cannot start ends there, with the exit code
    /// of a command that cannot be run (126), as Docker records it.
    pub async fn exec_spawn(self: &Arc<Self>, id: &str, detach: bool) -> Result<ExecStarted> {
        let r = self.spawn_claimed(id, detach).await;
        if r.is_err() && self.exec_inspect(id).is_ok_and(|i| i.exit_code.is_none()) {
            self.exec_exited(id, 126);
        }
        r
    }

    async fn spawn_claimed(self: &Arc<Self>, id: &str, detach: bool) -> Result<ExecStarted> {
        let (info, hub, exit) = {
            let execs = self.execs.lock();
            let r = execs.get(id).ok_or_else(|| no_such_exec(id))?;
            (r.info.clone(), r.hub.clone(), r.exit.subscribe())
        };
        let (c, env) = self.exec_target(&info).await?;
        let cfg = &info.config;
        let (io, master) = if detach {
            (process::ChildIo::Null, None)
        } else {
            Hub::prepare(cfg.tty, cfg.attach_stdin)
                .map_err(|e| NetdError::Internal(format!("exec streams: {e}")))?
        };
        let workdir = (!cfg.workdir.is_empty()).then(|| std::path::PathBuf::from(&cfg.workdir));
        let spawned = process::spawn(process::Spawn {
            netns: match c.mode {
                NetMode::Host => None,
                _ => c.netns.as_deref(),
            },
            hostname: None,
            uts_of: c.pid,
            cmd: &cfg.cmd,
            env: &env,
            user: process::resolve_user(&cfg.user).map_err(NetdError::InvalidArgument)?,
            workdir: workdir.as_deref(),
            io,
        });
        // Subscribed before its output is read (`wire`): the first of it reaches the
        // client.
        let out = hub.subscribe();
        let mut child = spawned.map_err(|e| {
            // Docker's codes: 127 for a command that does not exist, 126 otherwise.
            let missing = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            });
            self.exec_exited(id, if missing { 127 } else { 126 });
            NetdError::InvalidArgument(format!(
                "exec {:?} in container {}: {e:#}",
                cfg.cmd.join(" "),
                c.name
            ))
        })?;
        if !detach {
            let streams = child
                .streams()
                .ok_or_else(|| NetdError::Internal("exec streams: none".into()))?;
            hub.wire(master, streams, None)
                .await
                .map_err(|e| NetdError::Internal(format!("exec streams: {e}")))?;
            if let (true, Some([rows, cols])) = (cfg.tty, cfg.console_size) {
                let _ = hub.resize(rows, cols);
            }
        }
        let pid = child.id();
        let info = self.exec_running(id, pid);
        self.emit_container(
            &c,
            &format!("exec_start: {}", cfg.cmd.join(" ")),
            &[("execID", id.to_string())],
        );
        info!("exec {} in {}: {}", &id[..12], c.name, cfg.cmd.join(" "));
        self.watch_exec(c, id.to_string(), child);
        Ok(ExecStarted {
            hub,
            out,
            exit,
            info,
        })
    }

    /// The running container exec `info` runs in, and the environment it gets: the
    /// container's (`--link`) variables and its own.
    async fn exec_target(&self, info: &ExecInfo) -> Result<(Container, Vec<(String, String)>)> {
        let g = self.inner.lock().await;
        let c = g
            .state
            .container(&info.container_id)
            .cloned()
            .ok_or_else(|| not_found_container(&info.container_id))?;
        if c.state != ContainerState::Running {
            return Err(NetdError::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        let mut env = crate::dns::links::env(&c, &g.state.containers);
        env.extend(env_pairs(&info.config.env));
        Ok((c, env))
    }

    /// Records the exec's exit code when its process ends, and tells the event stream.
    fn watch_exec(self: &Arc<Self>, c: Container, id: String, mut child: process::Child) {
        let d = self.clone();
        tokio::spawn(async move {
            let code = child.wait().await.map_or(-1, |s| process::exit_code(&s));
            d.exec_exited(&id, code);
            d.emit_container(
                &c,
                "exec_die",
                &[("execID", id.clone()), ("exitCode", code.to_string())],
            );
        });
    }

    fn exec_running(&self, id: &str, pid: Option<u32>) -> ExecInfo {
        let mut execs = self.execs.lock();
        match execs.get_mut(id) {
            Some(r) => {
                r.info.running = true;
                r.info.pid = pid;
                r.info.clone()
            }
            None => ExecInfo {
                id: id.into(),
                container_id: String::new(),
                config: ExecConfig::default(),
                running: true,
                exit_code: None,
                pid,
            },
        }
    }

    fn exec_exited(&self, id: &str, code: i32) {
        if let Some(r) = self.execs.lock().get_mut(id) {
            r.info.running = false;
            r.info.exit_code = Some(code);
            r.finished = Some(Instant::now());
            r.exit.send_replace(Some(code));
        }
    }

    pub fn exec_inspect(&self, id: &str) -> Result<ExecInfo> {
        self.execs
            .lock()
            .get(id)
            .map(|r| r.info.clone())
            .ok_or_else(|| no_such_exec(id))
    }

    pub fn exec_resize(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        let hub = self
            .execs
            .lock()
            .get(id)
            .map(|r| r.hub.clone())
            .ok_or_else(|| no_such_exec(id))?;
        hub.resize(rows, cols)
            .map_err(|e| NetdError::Conflict(format!("exec {id}: {e}")))
    }

    /// The detach keys of exec `id` (Docker's default if it set none).
    pub fn exec_detach_keys(&self, id: &str) -> String {
        self.execs
            .lock()
            .get(id)
            .map(|r| r.info.config.detach_keys.clone())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| DEFAULT_DETACH_KEYS.to_string())
    }
}
