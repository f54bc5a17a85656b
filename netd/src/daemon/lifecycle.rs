//! A container's life after `run`: start, stop, restart, wait, attach, prune, and what
//! its inspect shows beyond its record.
use std::{sync::Arc, time::Duration};

use nix::sys::signal::Signal;

use super::{not_found_container, processes, stdio::Hub, Daemon};
use crate::{
    error::{NetdError, Result},
    model::{self, Container, ContainerState},
    process,
};

/// What a container's inspect shows beyond its record: the daemon's paths and the
/// execs running in it.
#[derive(Clone, Debug, Default)]
pub struct ContainerExtras {
    pub log_path: std::path::PathBuf,
    pub exec_ids: Vec<String>,
}

/// What Docker's wait waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// A wait under way: its container's exit code once `until` holds.
pub struct Waiter {
    id: String,
    until: WaitCondition,
    code: i32,
    done: Option<i32>,
    sub: super::events::Subscription,
}

impl Waiter {
    pub async fn wait(mut self) -> Result<i32> {
        if let Some(code) = self.done {
            return Ok(code);
        }
        loop {
            match self.sub.live.recv().await {
                Ok(e) if e.kind == "container" && e.actor == self.id => {
                    if e.action == "die" {
                        self.code = e
                            .attributes
                            .get("exitCode")
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(0);
                        if self.until != WaitCondition::Removed {
                            return Ok(self.code);
                        }
                    }
                    if e.action == "destroy" {
                        return Ok(self.code);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(NetdError::Internal("the event stream ended".into()))
                }
            }
        }
    }
}

impl Daemon {
    pub async fn start_container(self: &Arc<Self>, name: &str) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let mut c = inner
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        if c.state == ContainerState::Running {
            return Ok(());
        }
        let env = crate::dns::links::env(&c, &inner.state.containers);
        processes::start(self, &mut c, &env).await?;
        if let Some(m) = inner.state.container_mut(&c.id) {
            *m = c.clone();
        }
        inner.store.commit(&inner.state)?;
        drop(g);
        self.emit_container(&c, "start", &[]);
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `timeout`, as `docker stop -t` does.
    pub async fn stop_container(&self, name: &str, timeout: Duration) -> Result<()> {
        let c = {
            let g = self.inner.lock().await;
            g.state
                .container(name)
                .cloned()
                .ok_or_else(|| not_found_container(name))?
        };
        if c.state == ContainerState::Running {
            self.emit_container(&c, "kill", &[("signal", "15".into())]);
        }
        if let Some(pid) = c.pid {
            process::kill(pid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + timeout;
            while process::alive(pid, c.pid_start) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if process::alive(pid, c.pid_start) {
                self.emit_container(&c, "kill", &[("signal", "9".into())]);
                process::kill(pid, Signal::SIGKILL);
            }
            // The process's watcher records its exit code (and says it died): a moment
            // for it, before this records the exit without one.
            for _ in 0..20 {
                let g = self.inner.lock().await;
                if g.state
                    .container(&c.id)
                    .is_none_or(|x| x.state != ContainerState::Running)
                {
                    break;
                }
                drop(g);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let died = inner
            .state
            .container_mut(&c.id)
            .and_then(|x| processes::record_exit(x, None));
        inner.store.commit(&inner.state)?;
        drop(g);
        if let Some(d) = died {
            let code = d.exit_code.unwrap_or(0).to_string();
            self.emit_container(&d, "die", &[("exitCode", code)]);
        }
        if c.state == ContainerState::Running {
            self.emit_container(&c, "stop", &[]);
        }
        Ok(())
    }

    /// `docker restart`: stop (if running), then start again.
    pub async fn restart_container(self: &Arc<Self>, name: &str, timeout: Duration) -> Result<()> {
        self.stop_container(name, timeout).await?;
        self.start_container(name).await?;
        let (c, _, _) = self.container(name).await?;
        self.emit_container(&c, "restart", &[]);
        Ok(())
    }

    /// Removes netd's own containers that are not running and that `select` picks
    /// (`docker container prune`); returns their ids.
    pub async fn prune_containers(
        &self,
        select: impl Fn(&Container) -> bool,
    ) -> Result<Vec<String>> {
        let doomed: Vec<String> = {
            let g = self.inner.lock().await;
            g.state
                .containers
                .iter()
                .filter(|c| c.origin == model::Origin::Netd && c.state != ContainerState::Running)
                .filter(|c| select(c))
                .map(|c| c.id.clone())
                .collect()
        };
        let mut removed = Vec::new();
        for id in doomed {
            match self.remove(&id, false).await {
                Ok(id) => removed.push(id),
                // Started, or removed, since the list was made: not prunable now.
                Err(NetdError::Conflict(_) | NetdError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// What an inspect of container `id` shows beyond its record.
    pub async fn inspect_extras(&self, id: &str) -> ContainerExtras {
        ContainerExtras {
            log_path: self.log_path(id),
            exec_ids: self.execs.running_in(id),
        }
    }

    /// The streams of a container run with -i or -t, to attach to: before its process
    /// starts (the client sees it from its first output), or while this daemon holds
    /// its process's streams.
    pub async fn attach_container(&self, name: &str) -> Result<(Container, Arc<Hub>)> {
        let (c, _, _) = self.container(name).await?;
        if !(c.config.tty || c.config.open_stdin || c.config.attached) {
            return Err(NetdError::Conflict(format!(
                "container {} was not created with -i or -t or for an attached client: its output is in its log (netd logs {})",
                c.name, c.name
            )));
        }
        let hub = self.hub(&c.id);
        if c.state == ContainerState::Running && !hub.wired() {
            return Err(NetdError::Conflict(format!(
                "container {}'s terminal ended with the netd daemon that started it: it cannot be attached to",
                c.name
            )));
        }
        Ok((c, hub))
    }

    /// Docker's wait: until the container is not running (`next-exit`: until its next
    /// exit; `removed`: until it is gone). An unknown container is the error; the
    /// waiting, the returned `Waiter`'s.
    pub async fn wait_container(&self, name: &str, until: WaitCondition) -> Result<Waiter> {
        // Subscribed before the state is read: no exit falls in between.
        let sub = self.subscribe_events();
        let (c, _, _) = self.container(name).await?;
        let done = (until == WaitCondition::NotRunning && c.state != ContainerState::Running)
            .then(|| c.exit_code.unwrap_or(0));
        Ok(Waiter {
            id: c.id,
            until,
            code: c.exit_code.unwrap_or(0),
            done,
            sub,
        })
    }
}
