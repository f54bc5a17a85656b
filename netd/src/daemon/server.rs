//! The API socket and the daemon's life: enter the namespace, start, serve, stop.
//!
//! Who may talk to the daemon: anyone who can write to the socket can start processes
//! as root (`netd run -- CMD`), so the socket is 0660 root:GROUP (`-G`, as dockerd's
//! --group; root only without it) and the run directory 0750, whatever the umask.
use std::{os::unix::fs::PermissionsExt, path::Path};

use anyhow::{anyhow, Context};
use log::info;
use nix::unistd::{chown, Gid, Group};

use super::{Daemon, DaemonArgs};
use crate::netns;

/// Enters `--netns` before the runtime exists, so every thread lives in it.
pub fn enter_netns(args: &DaemonArgs) -> anyhow::Result<()> {
    if let Some(ns) = &args.netns {
        let f = netns::open(ns)?;
        netns::enter(&f)?;
    }
    Ok(())
}

fn group_id(args: &DaemonArgs) -> anyhow::Result<Option<Gid>> {
    let Some(name) = &args.group else {
        return Ok(None);
    };
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Some(Gid::from_raw(n)));
    }
    let g = Group::from_name(name)
        .with_context(|| format!("looking up group {name}"))?
        .ok_or_else(|| anyhow!("group {name} does not exist (-G/--group)"))?;
    Ok(Some(g.gid))
}

/// Makes the run directory (socket, logs) closed to others: 0750 root:GROUP.
pub(super) fn prepare_run_dir(args: &DaemonArgs) -> anyhow::Result<()> {
    let dir = &args.run_dir;
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let gid = group_id(args)?;
    chown(dir, None, gid).with_context(|| format!("chown {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .with_context(|| format!("chmod {}", dir.display()))?;
    std::fs::set_permissions(dir.join("logs"), std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

pub async fn serve(args: DaemonArgs) -> anyhow::Result<()> {
    let gid = group_id(&args)?;
    let daemon = Daemon::start(args).await?;
    let sock = daemon.socket_path();
    let listener = bind_socket(&sock, gid)?;
    info!("listening on {}", sock.display());
    let app = crate::api::service(daemon.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let server = axum::serve(listener, app);
    tokio::select! {
        r = server => r.context("API server")?,
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    daemon.shutdown().await?;
    info!("detached; bye");
    Ok(())
}

/// Binds the API socket 0660 root:GROUP. The mode is set before anyone can connect:
/// the directory is already closed to others, so the moment between bind and chmod
/// exposes nothing.
fn bind_socket(path: &Path, gid: Option<Gid>) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        // A live daemon answers on it; a dead one left a stale file.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(anyhow!(
                "another netd daemon is already listening on {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    chown(path, None, gid).with_context(|| format!("chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}
