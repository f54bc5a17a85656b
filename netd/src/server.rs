//! The API server: binds the daemon's socket and serves the API until a signal.
use anyhow::Context;
use log::info;

use crate::{
    daemon::{self, group_id, preflight, Daemon, DaemonArgs},
    plugin::PluginSocket,
    unix_socket::bind_socket,
};

pub async fn serve(args: DaemonArgs) -> anyhow::Result<()> {
    if args.cleanup {
        let removed = daemon::cleanup(&args).await?;
        for p in &removed.problems {
            log::warn!("cleanup: {p}");
        }
        println!("{removed}");
        return match removed.problems.len() {
            0 => Ok(()),
            n => Err(anyhow::anyhow!(
                "cleanup left {n} things behind (see above)"
            )),
        };
    }
    if args.replace {
        // The old agent holds the instance lock until it stops: the rest of the checks
        // follow then.
        daemon::check_compatible(&args)?;
        daemon::take_over(&args)?;
    }
    // Held until the process ends: one agent per state.
    let _lock = preflight(&args)?;
    let gid = group_id(&args)?;
    // Bound before the daemon starts, so a name another process serves fails at once;
    // dockerd's calls wait in the backlog until the core is ready.
    let mut plugin = match &args.docker_plugin {
        Some(name) => Some(PluginSocket::bind(name, gid)?),
        None => None,
    };
    let metrics = match args.metrics_addr {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let state_dir = args.state_dir.clone();
    let daemon = Daemon::start(args).await?;
    let restarts = crate::metrics::count_start(&state_dir);
    if let Some(listener) = metrics {
        crate::metrics::serve(listener, daemon.clone(), restarts)?;
    }
    let sock = daemon.socket_path();
    let listener = bind_socket(&sock, gid)?;
    info!("listening on {}", sock.display());
    crate::notify::ready();
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
    crate::notify::stopping();
    daemon.shutdown().await?;
    drop(plugin);
    info!("stopped; the datapath keeps forwarding (netd daemon --cleanup removes it)");
    Ok(())
}
