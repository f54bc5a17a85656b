//! The processes netd runs in its sandboxes (`netd run -- CMD`): start, watch, adopt
//! after a restart, and the exit that an `--rm` container's removal follows.
use std::{sync::Arc, time::Duration};

use log::warn;
use nix::sys::signal::Signal;

use super::Daemon;
use crate::{
    error::NetdError,
    model::{Container, ContainerState},
    netns, process,
};

/// Starts the container's command (or, with none, marks the sandbox running). A command
/// that cannot start is the caller's error (400), carried as a NetdError.
pub(super) fn start(
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
    match process::spawn_in_netns(c.netns.as_deref(), c.hostname.as_deref(), &c.cmd, env, &log) {
        Ok((pid, child)) => {
            c.pid = Some(pid);
            c.pid_start = process::start_time(pid);
            c.state = ContainerState::Running;
            c.exit_code = None;
            c.started = Some(super::now());
            watch_child(d, c.id.clone(), child);
            Ok(())
        }
        Err(e) => Err(NetdError::InvalidArgument(format!(
            "starting {:?} in container {}: {e:#}",
            c.cmd.join(" "),
            c.name
        ))
        .into()),
    }
}

fn watch_child(d: &Arc<Daemon>, id: String, mut child: tokio::process::Child) {
    let d = d.clone();
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(s) => s
                .code()
                .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
            Err(_) => -1,
        };
        mark_exited(&d, &id, code).await;
    });
}

/// A process started by an earlier agent is not our child: poll it.
pub(super) fn watch_adopted(d: &Arc<Daemon>, id: String, pid: u32, start: Option<u64>) {
    let d = d.clone();
    tokio::spawn(async move {
        while process::alive(pid, start) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        mark_exited(&d, &id, -1).await;
    });
}

async fn mark_exited(d: &Arc<Daemon>, id: &str, code: i32) {
    let auto_remove = {
        let mut g = d.inner.lock().await;
        let inner = &mut *g;
        let Some(c) = inner.state.container_mut(id) else {
            return;
        };
        if c.state == ContainerState::Running {
            c.state = ContainerState::Exited;
            c.exit_code = Some(code);
            c.pid = None;
            c.finished = Some(super::now());
        }
        let auto = c.auto_remove;
        if let Err(e) = inner.store.commit(&inner.state) {
            warn!("recording exit of {id}: {e:#}");
        }
        auto
    };
    if auto_remove {
        if let Err(e) = d.remove(id, true).await {
            warn!("--rm of {id}: {e}");
        }
    }
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
