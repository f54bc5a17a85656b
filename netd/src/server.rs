//! The API server: binds the daemon's socket and serves the API until a signal.
use std::{os::unix::fs::PermissionsExt, path::Path};

use anyhow::{anyhow, Context};
use log::info;
use nix::unistd::{chown, Gid};

use crate::{
    daemon::{group_id, Daemon, DaemonArgs},
    plugin::PluginSocket,
};

pub async fn serve(args: DaemonArgs) -> anyhow::Result<()> {
    let gid = group_id(&args)?;
    // Bound before the daemon starts, so a name another process serves fails at once;
    // dockerd's calls wait in the backlog until the core is ready.
    let mut plugin = match &args.docker_plugin {
        Some(name) => Some(PluginSocket::bind(name, gid)?),
        None => None,
    };
    let daemon = Daemon::start(args).await?;
    let sock = daemon.socket_path();
    let listener = bind_socket(&sock, gid)?;
    info!("listening on {}", sock.display());
    let app = crate::api::service(daemon.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let server = axum::serve(listener, app);
    let plugin_server = async {
        match plugin.as_mut() {
            Some(p) => p.serve(daemon.clone()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = server => r.context("API server")?,
        r = plugin_server => r?,
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    daemon.shutdown().await?;
    drop(plugin);
    info!("detached; bye");
    Ok(())
}

/// Binds the API socket 0660 root:GROUP. The mode is set before anyone can connect:
/// the directory is already closed to others, so the moment between bind and chmod
/// exposes nothing.
pub(crate) fn bind_socket(
    path: &Path,
    gid: Option<Gid>,
) -> anyhow::Result<tokio::net::UnixListener> {
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
