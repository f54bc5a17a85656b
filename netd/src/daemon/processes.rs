//! The processes netd runs in its sandboxes (`netd run -- CMD`): start, watch, adopt
//! after a restart, and the exit that an `--rm` container's removal follows.
use std::{sync::Arc, time::Duration};

use log::warn;
use nix::sys::signal::Signal;

use super::{stdio::Hub, Daemon};
use crate::{
    error::NetdError,
    model::{Container, ContainerState},
    netns, process,
};

/// Starts the container's command (or, with none, marks the sandbox running). A command
/// that cannot start is the caller's error (400), carried as a NetdError. With `-t` or
/// `-i`, or created for a client that attached, its streams are the container's hub's
/// (clients attach there); otherwise its output goes to its log file alone.
pub(super) async fn start(
    d: &Arc<Daemon>,
    c: &mut Container,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    if c.cmd.is_empty() {
        c.state = ContainerState::Running;
        c.started = Some(super::now());
        return Ok(());
    }
    let log = d.log_path(&c.id);
    // A client attached at creation (docker run in the foreground) reads the output
    // from the hub too.
    let interactive = c.config.tty || c.config.open_stdin || c.config.attached;
    let (io, master) = if interactive {
        Hub::prepare(c.config.tty, c.config.open_stdin)?
    } else {
        (process::ChildIo::Log(log.clone()), None)
    };
    let spawned = process::spawn(process::Spawn {
        netns: c.netns.as_deref(),
        hostname: c.hostname.as_deref(),
        uts_of: None,
        cmd: &c.cmd,
        env,
        user: None,
        workdir: None,
        io,
    });
    let mut child = spawned.map_err(|e| {
        NetdError::InvalidArgument(format!(
            "starting {:?} in container {}: {e:#}",
            c.cmd.join(" "),
            c.name
        ))
    })?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("child has no pid"))?;
    let pid_start = process::start_time(pid);
    if let Some(m) = &master {
        let run_dir = &d.args.run_dir;
        if let Err(e) = crate::terminal::spawn_holder(run_dir, &c.id, pid, pid_start, m.fd()) {
            // The container runs; its terminal just does not outlive this agent.
            warn!("container {}: {e:#}", c.name);
        }
    }
    if interactive {
        let streams = child
            .streams()
            .ok_or_else(|| anyhow::anyhow!("the process has no streams to wire"))?;
        d.hub(&c.id).wire(master, streams, Some(log)).await?;
    }
    c.pid = Some(pid);
    c.pid_start = pid_start;
    c.state = ContainerState::Running;
    c.exit_code = None;
    c.started = Some(super::now());
    watch_child(d, c.id.clone(), child);
    Ok(())
}

fn watch_child(d: &Arc<Daemon>, id: String, mut child: process::Child) {
    let d = d.clone();
    tokio::spawn(async move {
        let code = child.wait().await.map_or(-1, |s| process::exit_code(&s));
        mark_exited(&d, &id, code).await;
    });
}

/// A process started by an earlier agent is not our child: poll it. Its terminal (a
/// `-t` container's) comes back from its holder first, before the API serves attach.
pub(super) async fn watch_adopted(d: &Arc<Daemon>, id: String, pid: u32, start: Option<u64>) {
    rewire_terminal(d, &id).await;
    let d = d.clone();
    tokio::spawn(async move {
        while process::alive(pid, start) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        mark_exited(&d, &id, -1).await;
    });
}

/// Takes a `-t` container's terminal back from its holder (see `crate::terminal`); a
/// container without one has no holder, and nothing happens.
async fn rewire_terminal(d: &Arc<Daemon>, id: &str) {
    let (run_dir, cid) = (d.args.run_dir.clone(), id.to_string());
    let held = tokio::task::spawn_blocking(move || crate::terminal::take(&run_dir, &cid)).await;
    let Ok(Ok(fd)) = held else { return };
    let log = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(d.log_path(id))
        .await
        .ok();
    if let Err(e) = d.hub(id).wire_terminal(fd, log).await {
        warn!("container {id}: its terminal: {e}");
    }
}

async fn mark_exited(d: &Arc<Daemon>, id: &str, code: i32) {
    let (auto_remove, died) = {
        let mut g = d.inner.lock().await;
        let inner = &mut *g;
        let Some(c) = inner.state.container_mut(id) else {
            return;
        };
        let died = record_exit(c, Some(code));
        let auto = c.auto_remove;
        if let Err(e) = inner.store.commit(&inner.state) {
            warn!("recording exit of {id}: {e:#}");
        }
        (auto, died)
    };
    if let Some(c) = died {
        d.emit_container(&c, "die", &[("exitCode", code.to_string())]);
    }
    if auto_remove {
        if let Err(e) = d.remove(id, true).await {
            warn!("--rm of {id}: {e}");
        }
    }
}

/// Records that `c`'s process ended (with `code`, when known); the container as it
/// was, if it was running until now (the caller tells the event stream).
pub(super) fn record_exit(c: &mut Container, code: Option<i32>) -> Option<Container> {
    if c.state != ContainerState::Running {
        return None;
    }
    c.state = ContainerState::Exited;
    c.exit_code = code.or(c.exit_code);
    c.pid = None;
    c.finished = Some(super::now());
    Some(c.clone())
}

/// Kills every process whose network namespace is `name` (what the container started,
/// its children and `netd exec` sessions included).
pub(super) fn kill_netns_processes(name: &str) {
    kill_netns_processes_of(&[name.to_string()]);
}

/// `kill_netns_processes` of each of `names`, in one walk of /proc (a walk per
/// namespace would cost processes times namespaces).
pub(super) fn kill_netns_processes_of(names: &[String]) {
    use std::os::unix::fs::MetadataExt;
    let targets: std::collections::HashSet<(u64, u64)> = names
        .iter()
        .filter_map(|n| std::fs::metadata(netns::resolve(n)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if targets.is_empty() {
        return;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            if targets.contains(&(m.dev(), m.ino())) {
                process::kill(pid, Signal::SIGKILL);
            }
        }
    }
}
