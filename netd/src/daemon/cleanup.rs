//! `netd daemon --cleanup`: removes everything this instance made, and nothing else
//! (what it made is what it holds a claim on, see `owned`): the processes netd started
//! in its own namespaces and those namespaces, every veth, bridge and VXLAN device, the
//! programs (their pinned links) and the pinned maps, the state. A graceful stop keeps
//! all of it, so that the datapath forwards while no agent runs; this is the explicit
//! act that removes it (a host leaving netd, a package purged).
use std::path::Path;

use anyhow::Context;

use super::{owned::Kind, processes::kill_netns_processes_of, DaemonArgs, InstanceLock, Owned};
use crate::{cluster, datapath, netlink::Netlink, netns, store};

/// What was removed, for the one line the command prints.
#[derive(Debug, Default)]
pub struct Removed {
    pub namespaces: usize,
    pub links: usize,
    pub pins: usize,
    pub problems: Vec<String>,
}

impl std::fmt::Display for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed {} namespaces, {} links and {} pinned programs and maps, and the state",
            self.namespaces, self.links, self.pins
        )
    }
}

/// Removes what the instance of `args` made. Refused while its daemon runs (it holds
/// the instance lock). Goes on past each problem and reports them all.
pub async fn cleanup(args: &DaemonArgs) -> anyhow::Result<Removed> {
    let lock = InstanceLock::take(&args.state_dir)?;
    let owned = Owned::new(&args.state_dir)?;
    let mut out = Removed::default();
    let namespaces: Vec<String> = owned.all(Kind::Netns).into_iter().collect();
    // Only namespaces netd made hold processes netd started.
    kill_netns_processes_of(&namespaces);
    for ns in namespaces {
        match netns::delete(&ns) {
            Ok(()) => out.namespaces += 1,
            Err(e) if netns::exists(&ns) => out.problems.push(format!("namespace {ns}: {e:#}")),
            Err(_) => {}
        }
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&ns));
        owned.release(Kind::Netns, &ns);
    }
    let nl = Netlink::current()?;
    for name in owned.all(Kind::Link) {
        match nl.link_by_name(&name).await {
            Ok(Some(l)) => match nl.del_link(l.index).await {
                Ok(()) => out.links += 1,
                Err(e) => out.problems.push(format!("link {name}: {e:#}")),
            },
            Ok(None) => {}
            Err(e) => out.problems.push(format!("link {name}: {e:#}")),
        }
        owned.release(Kind::Link, &name);
    }
    match datapath::remove_all(&args.bpf_dir) {
        Ok(n) => out.pins = n,
        Err(e) => out.problems.push(format!("{e:#}")),
    }
    if let Some(url) = &args.cluster_store {
        if let Err(e) = leave_cluster(url, &args.cluster_store_opt, &args.state_dir).await {
            out.problems
                .push(format!("leaving the cluster store {url}: {e:#}"));
        }
    }
    remove_state(&args.state_dir, &mut out);
    let _ = std::fs::remove_file(args.run_dir.join("netd.sock"));
    let _ = std::fs::remove_dir_all(args.run_dir.join("logs"));
    // The terminal holders went with their containers' processes.
    let _ = std::fs::remove_dir_all(args.run_dir.join("terminals"));
    drop(lock);
    let _ = std::fs::remove_file(args.state_dir.join("netd.lock"));
    Ok(out)
}

/// Revokes this node's registration (the instance id is the node id), so its record
/// and its overlay endpoints leave the cluster store now rather than at the lease's end.
async fn leave_cluster(url: &str, opts: &[String], state_dir: &Path) -> anyhow::Result<()> {
    let Some(id) = store::peek_instance_id(state_dir)? else {
        return Ok(());
    };
    cluster::leave(url, &cluster::StoreOpts::parse(opts)?, &id).await?;
    Ok(())
}

/// The state (the database with its WAL, the state file of an earlier release, the
/// originals kept by migrations), the claims and the count of starts (the metrics'
/// restarts).
fn remove_state(dir: &Path, out: &mut Removed) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let r = if name == "owned" {
            std::fs::remove_dir_all(e.path())
        } else if name.starts_with(store::DB_FILE)
            || name.starts_with(store::JSON_FILE)
            || name == crate::metrics::STARTS_FILE
        {
            std::fs::remove_file(e.path())
        } else {
            continue;
        };
        if let Err(err) = r.with_context(|| format!("removing {}", e.path().display())) {
            out.problems.push(format!("{err:#}"));
        }
    }
}
