//! The `netd` command line, a client of the daemon's API.
//!
//! - `args`: the grammar (clap), one-line errors.
//! - `format`: tables, port folding, templates.
//! - `containers`: run/create, exec, attach.
//! - `query`: ps, port, logs, inspect; `observe`: stats and conntrack.
//! - `network`: the `network` subcommands.
mod args;
mod attach;
mod containers;
mod docs;
mod endpoint;
mod format;
mod network;
mod observe;
mod query;
mod trace;
mod version;

use hyper::Method;

use crate::client::Client;

pub use args::*;

use containers::{each, each_at_once, run_container};
use format::*;
use network::network;

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let client = Client::new(&socket_path(&cli.host));
    match cli.command {
        Command::Daemon(_) | Command::HoldTerminal { .. } => unreachable!("handled in main"),
        Command::Completion { shell } => docs::completion(shell),
        Command::ManPages { dir } => docs::man_pages(&dir)?,
        Command::Run(a) => return run_container(&client, a, true).await,
        Command::Create(a) => return run_container(&client, a, false).await,
        Command::Start { names } => return lifecycle(&client, Verb::Start, &names).await,
        Command::Restart { time, names } => {
            return lifecycle(&client, Verb::Restart(time), &names).await
        }
        Command::Stop { time, names } => return lifecycle(&client, Verb::Stop(time), &names).await,
        Command::Rm { force, names } => return lifecycle(&client, Verb::Rm(force), &names).await,
        Command::Ps {
            all,
            quiet,
            filter,
            last,
            latest,
            format,
        } => {
            query::ps(
                &client,
                all,
                quiet,
                &filter,
                last,
                latest,
                format.as_deref(),
            )
            .await?
        }
        Command::Port { name, private_port } => {
            query::port(&client, &name, private_port.as_deref()).await?
        }
        Command::Logs { name } => query::logs(&client, &name).await?,
        Command::Inspect { format, names } => {
            query::inspect(&client, format.as_deref(), &names).await?
        }
        Command::Exec(a) => containers::exec_here(&client, a).await?,
        Command::Attach {
            no_stdin,
            detach_keys,
            name,
        } => return containers::attach(&client, &name, !no_stdin, &detach_keys).await,
        Command::Network { command } => return network(&client, command).await,
        Command::Version { format } => version::print(&client, format.as_deref()).await?,
        Command::Stats { format } => observe::stats(&client, format.as_deref()).await?,
        Command::Conntrack {
            command:
                ConntrackCommand::Ls {
                    format,
                    proto,
                    addr,
                    port,
                },
        } => observe::conntrack_ls(&client, format.as_deref(), proto, addr, port).await?,
        Command::Trace(a) => trace::trace(&client, a).await?,
        Command::Conntrack {
            command: ConntrackCommand::Flush { proto },
        } => observe::conntrack_flush(&client, proto).await?,
    }
    Ok(0)
}

/// What `lifecycle` does to each container.
enum Verb {
    Start,
    /// With the seconds a process has to stop before it is killed.
    Restart(u64),
    Stop(u64),
    /// With `--force`.
    Rm(bool),
}

impl Verb {
    fn request(&self, name: &str) -> (Method, String) {
        let c = format!("/containers/{name}");
        match self {
            Verb::Start => (Method::POST, format!("{c}/start")),
            Verb::Restart(t) => (Method::POST, format!("{c}/restart?t={t}")),
            Verb::Stop(t) => (Method::POST, format!("{c}/stop?t={t}")),
            Verb::Rm(force) => (Method::DELETE, format!("{c}?force={}", *force as u8)),
        }
    }
}

/// `verb` on each of `names`, a line per container. Stops and restarts go at once, as
/// dockerd's (each waits for its process); starts and removals one by one, in order.
async fn lifecycle(client: &Client, verb: Verb, names: &[String]) -> anyhow::Result<i32> {
    let call = |n: String| {
        let (method, path) = verb.request(&n);
        async move { client.call(method, &path, None).await }
    };
    match verb {
        Verb::Restart(_) | Verb::Stop(_) => each_at_once(names, call).await,
        Verb::Start | Verb::Rm(_) => each(names, call).await,
    }
}
