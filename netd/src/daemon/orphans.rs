//! CNI endpoints whose runtime went away without a DEL (containerd 1.6's `ctr run -d`
//! never sends one; a runtime may crash). The namespace of such an endpoint would live
//! on, held only by netd's own DNS socket inside it, so the kernel never tells: the
//! agent looks every `EVERY` and releases an endpoint as DEL would (address, veth, maps,
//! names) once no process and no mount has held its namespace for `LOOKS` looks in a row
//! (a runtime between making a namespace and starting its process is not caught).
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use log::warn;

use super::Daemon;
use crate::{model::Origin, netns};

const EVERY: Duration = Duration::from_secs(10);
const LOOKS: u32 = 2;

/// A CNI endpoint as the watch sees it.
struct Candidate {
    id: String,
    container_id: String,
    ifname: String,
    netns: String,
    /// The namespace's identity: recorded at ADD, or (a record of an earlier release)
    /// what its path names now.
    ino: Option<u64>,
}

impl Daemon {
    pub(super) fn spawn_orphan_watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut strikes = HashMap::new();
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { return };
                d.release_orphans(&mut strikes).await;
            }
        });
    }

    async fn cni_candidates(&self) -> Vec<Candidate> {
        let g = self.inner.lock().await;
        g.state
            .containers
            .iter()
            .filter_map(|c| match &c.origin {
                Origin::Cni {
                    container_id,
                    ifname,
                    netns_ino,
                    ..
                } => {
                    let ns = c.netns.clone()?;
                    Some(Candidate {
                        id: c.id.clone(),
                        container_id: container_id.clone(),
                        ifname: ifname.clone(),
                        ino: netns_ino.or_else(|| netns::inode(&ns)),
                        netns: ns,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// One look: counts a strike for each endpoint whose namespace nothing else holds,
    /// and releases those at `LOOKS`.
    async fn release_orphans(&self, strikes: &mut HashMap<String, u32>) {
        let candidates = self.cni_candidates().await;
        strikes.retain(|id, _| candidates.iter().any(|c| &c.id == id));
        if candidates.is_empty() {
            return;
        }
        let wanted: HashSet<u64> = candidates.iter().filter_map(|c| c.ino).collect();
        let held = tokio::task::spawn_blocking(move || netns::held_by_others(&wanted))
            .await
            .unwrap_or_default();
        for c in candidates {
            if c.ino.is_some_and(|i| held.contains(&i)) {
                strikes.remove(&c.id);
                continue;
            }
            let n = strikes.entry(c.id.clone()).or_insert(0);
            *n += 1;
            if *n < LOOKS {
                continue;
            }
            strikes.remove(&c.id);
            warn!(
                "CNI endpoint {} {}: no process or mount holds its namespace {} any more (its runtime sent no DEL): releasing it",
                c.container_id, c.ifname, c.netns
            );
            if let Err(e) = self.remove_endpoint(&c.container_id, &c.ifname).await {
                warn!(
                    "releasing CNI endpoint {} {}: {e}",
                    c.container_id, c.ifname
                );
            }
        }
    }
}
