//! What changed in the state since the last sync, so that a sync rebuilds the names,
//! clients and files of the containers that changed, not of every container on the
//! host. Each container is remembered by a fingerprint of what names depend on (its
//! names, addresses, namespace, resolver settings, links) and by the entries it put in
//! the table. A change of the networks or of the remote endpoints (rare: they reshape
//! who sees what) rebuilds everything.
//!
//! A sync costs what changed, not the host: the state shares a container's record until
//! something changes it, so a record at the same place of the list as last time is
//! known unchanged by its pointer, without a lookup; the containers of a namespace and
//! those with links are kept by id, so that a client or a link is rebuilt without a walk
//! over every container.
use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hash, Hasher},
    sync::Arc,
};

use super::records::{dns_networks, entries, Entry, Table};
use crate::{
    model::{Container, Network, RemoteEndpoint},
    store::{
        follow::{missing, Follow},
        State,
    },
};

/// What one container last gave the table.
struct Seen {
    /// The record it was made from: the state keeps a container's record (shared) until
    /// something changes it, so the same record needs no fingerprint.
    rec: Arc<Container>,
    fingerprint: u64,
    entries: Vec<Entry>,
    netns: Option<String>,
}

/// A container gone since the last sync: what to take out of the table.
pub struct Gone {
    pub id: String,
    pub entries: Vec<Entry>,
    pub netns: Option<String>,
}

/// One changed container: what it gave before (if anything) and gives now.
pub struct Changed<'a> {
    pub container: &'a Container,
    pub before: Option<Vec<Entry>>,
    pub before_netns: Option<String>,
    pub entries: Vec<Entry>,
}

pub enum Changes<'a> {
    /// The first sync, or the networks or remote endpoints changed.
    All,
    Some {
        changed: Vec<Changed<'a>>,
        gone: Vec<Gone>,
    },
}

#[derive(Default)]
pub struct Tracker {
    seen: HashMap<String, Seen>,
    follow: Follow,
    /// Ids of the containers in each namespace, and of those with links.
    by_netns: HashMap<String, HashSet<String>>,
    linked: HashSet<String>,
    networks: Option<u64>,
    remote: Option<Arc<Vec<RemoteEndpoint>>>,
    hasher: foldhash::quality::RandomState,
}

impl Tracker {
    /// What changed in `state` since the last call (and remembers `state`).
    pub fn changes<'a>(&mut self, state: &'a State) -> Changes<'a> {
        let networks = self.networks_fingerprint(state);
        let same_remote = self
            .remote
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &state.remote));
        if self.networks != Some(networks) || !same_remote {
            self.networks = Some(networks);
            self.remote = Some(state.remote.clone());
            self.remember_all(state);
            return Changes::All;
        }
        let dns_nets = dns_networks(state);
        let mut changed = Vec::new();
        for c in self.follow.moved(&state.containers) {
            changed.extend(self.see(c, &dns_nets));
        }
        // Every container of the state is in `seen` now: more there means some went.
        let gone = match self.seen.len() > state.containers.len() {
            true => self.forget_missing(state),
            false => Vec::new(),
        };
        Changes::Some { changed, gone }
    }

    /// What changed in container `c` since it was last seen (all of it, if it is new).
    fn see<'a>(
        &mut self,
        c: &'a Arc<Container>,
        dns_nets: &HashMap<&str, &Network>,
    ) -> Option<Changed<'a>> {
        if self
            .seen
            .get(c.id.as_str())
            .is_some_and(|s| Arc::ptr_eq(&s.rec, c))
        {
            return None;
        }
        let fp = self.fingerprint(c);
        self.index(c);
        if let Some(s) = self.seen.get_mut(c.id.as_str()) {
            s.rec = c.clone();
            if s.fingerprint == fp {
                return None;
            }
            let entries = entries(c, dns_nets);
            s.fingerprint = fp;
            let before = std::mem::replace(&mut s.entries, entries.clone());
            let before_netns = std::mem::replace(&mut s.netns, c.netns.clone());
            if let Some(old) = before_netns
                .as_ref()
                .filter(|n| c.netns.as_ref() != Some(n))
            {
                unindex(&mut self.by_netns, old, &c.id);
            }
            return Some(Changed {
                container: c,
                before: Some(before),
                before_netns,
                entries,
            });
        }
        let entries = entries(c, dns_nets);
        let seen = Seen {
            rec: c.clone(),
            fingerprint: fp,
            entries: entries.clone(),
            netns: c.netns.clone(),
        };
        self.seen.insert(c.id.clone(), seen);
        Some(Changed {
            container: c,
            before: None,
            before_netns: None,
            entries,
        })
    }

    /// The containers no longer in `state`, forgotten (a walk over the state, only when
    /// some went).
    fn forget_missing(&mut self, state: &State) -> Vec<Gone> {
        missing(self.seen.keys(), &state.containers)
            .into_iter()
            .filter_map(|id| {
                let s = self.seen.remove(&id)?;
                if let Some(ns) = &s.netns {
                    unindex(&mut self.by_netns, ns, &id);
                }
                self.linked.remove(&id);
                Some(Gone {
                    id,
                    entries: s.entries,
                    netns: s.netns,
                })
            })
            .collect()
    }

    fn remember_all(&mut self, state: &State) {
        let dns_nets = dns_networks(state);
        self.by_netns.clear();
        self.linked.clear();
        self.seen.clear();
        for c in &state.containers {
            self.index(c);
            let s = Seen {
                rec: c.clone(),
                fingerprint: self.fingerprint(c),
                entries: entries(c, &dns_nets),
                netns: c.netns.clone(),
            };
            self.seen.insert(c.id.clone(), s);
        }
        self.follow.remember(&state.containers);
    }

    /// Files `c` under its namespace and, if it has links, among the linked.
    fn index(&mut self, c: &Container) {
        if let Some(ns) = &c.netns {
            self.by_netns
                .entry(ns.clone())
                .or_default()
                .insert(c.id.clone());
        }
        match c.links.is_empty() {
            true => self.linked.remove(&c.id),
            false => self.linked.insert(c.id.clone()),
        };
    }

    /// The containers in namespace `ns` as of the last sync.
    pub fn in_netns(&self, ns: &str) -> Vec<Arc<Container>> {
        self.by_netns
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|id| self.seen.get(id).map(|s| s.rec.clone()))
            .collect()
    }

    /// Whether any container has links.
    pub fn any_links(&self) -> bool {
        !self.linked.is_empty()
    }

    /// The namespaces whose clients `changes` touch, and the containers whose files may
    /// have changed: the changed ones, and those linking to a changed or gone one.
    pub fn touched(
        &self,
        changed: &[Changed],
        gone: &[Gone],
    ) -> (HashSet<String>, Vec<Arc<Container>>) {
        let mut namespaces = HashSet::new();
        let mut files: Vec<Arc<Container>> = Vec::new();
        for c in changed {
            namespaces.extend(c.container.netns.iter().cloned());
            namespaces.extend(c.before_netns.iter().cloned());
            if let Some(s) = self.seen.get(&c.container.id) {
                files.push(s.rec.clone());
            }
        }
        namespaces.extend(gone.iter().filter_map(|g| g.netns.clone()));
        let ids: HashSet<&str> = changed
            .iter()
            .map(|c| c.container.id.as_str())
            .chain(gone.iter().map(|g| g.id.as_str()))
            .collect();
        for s in self.linked.iter().filter_map(|id| self.seen.get(id)) {
            if s.rec.links.iter().any(|l| ids.contains(l.target.as_str())) {
                namespaces.extend(s.rec.netns.iter().cloned());
                files.push(s.rec.clone());
            }
        }
        (namespaces, files)
    }

    /// What names and files of `c` depend on.
    fn fingerprint(&self, c: &Container) -> u64 {
        let mut h = self.hasher.build_hasher();
        (&c.id, &c.name, &c.hostname, &c.netns).hash(&mut h);
        std::mem::discriminant(&c.origin).hash(&mut h);
        std::mem::discriminant(&c.mode).hash(&mut h);
        for a in &c.attachments {
            (&a.network, a.ip, a.ip6, &a.aliases).hash(&mut h);
        }
        (&c.dns.servers, &c.dns.search, &c.dns.options).hash(&mut h);
        for l in &c.links {
            (&l.target, &l.alias).hash(&mut h);
        }
        h.finish()
    }

    /// What of the networks names depend on: which exist, and which have a server.
    fn networks_fingerprint(&self, state: &State) -> u64 {
        let mut h = self.hasher.build_hasher();
        for n in &state.networks {
            (&n.id, &n.driver, n.builtin, n.internal).hash(&mut h);
        }
        h.finish()
    }
}

/// Forgets `id` in namespace `ns`'s set.
fn unindex(by_netns: &mut HashMap<String, HashSet<String>>, ns: &str, id: &str) {
    if let Some(ids) = by_netns.get_mut(ns) {
        ids.remove(id);
        if ids.is_empty() {
            by_netns.remove(ns);
        }
    }
}

/// Takes what `changed` and `gone` gave `table` out, puts what `changed` give now in,
/// and rebuilds the clients of `namespaces` (from `touched`).
pub fn patch(
    table: &mut Table,
    tracker: &Tracker,
    state: &State,
    changed: &[Changed],
    gone: &[Gone],
    namespaces: &HashSet<String>,
) {
    for e in gone.iter().flat_map(|g| &g.entries) {
        table.remove(e);
    }
    for e in changed.iter().filter_map(|c| c.before.as_ref()).flatten() {
        table.remove(e);
    }
    for e in changed.iter().flat_map(|c| &c.entries) {
        table.add(e);
    }
    let dns_nets = dns_networks(state);
    for ns in namespaces {
        let mut members = tracker.in_netns(ns);
        // Several (`container:` joiners): in the state's order, which the client's
        // lists follow.
        if members.len() > 1 {
            members = state
                .containers
                .iter()
                .filter(|c| c.netns.as_deref() == Some(ns.as_str()))
                .cloned()
                .collect();
        }
        table.refresh_client(ns, &members, state, &dns_nets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_attachment, test_container, test_network, Link, NetMode, Network};

    fn net(id: &str, builtin: bool) -> Network {
        Network {
            id: id.into(),
            name: id.into(),
            builtin,
            ..test_network()
        }
    }

    fn ctr(name: &str, n: u8, nets: &[(&str, u8)]) -> Container {
        Container {
            netns: Some(format!("ns-{name}")),
            attachments: nets
                .iter()
                .map(|(net, host)| crate::model::Attachment {
                    network: net.to_string(),
                    ip: [10, 0, n, *host].into(),
                    aliases: vec![format!("{name}-alias"), "shared".into()],
                    ..test_attachment()
                })
                .collect(),
            ..test_container(&format!("{n:02x}").repeat(32), name)
        }
    }

    /// Syncs `t` with `state` as the service does; the table must equal a fresh build.
    fn sync(tracker: &mut Tracker, t: &mut Table, state: &State) {
        match tracker.changes(state) {
            Changes::All => *t = Table::build(state),
            Changes::Some { changed, gone } => {
                let (namespaces, _) = tracker.touched(&changed, &gone);
                patch(t, tracker, state, &changed, &gone, &namespaces);
            }
        }
        assert_eq!(*t, Table::build(state));
    }

    #[test]
    fn a_patched_table_is_the_table_built_whole() {
        let mut s = State {
            networks: vec![net("n1", false), net("n2", false), net("def", true)],
            ..Default::default()
        };
        let (mut tracker, mut t) = (Tracker::default(), Table::default());
        sync(&mut tracker, &mut t, &s);
        for i in 1..=6u8 {
            let nets: &[(&str, u8)] = match i % 3 {
                0 => &[("n1", i), ("n2", i)],
                1 => &[("n1", i)],
                _ => &[("def", i)],
            };
            s.containers.push(ctr(&format!("c{i}"), i, nets).into());
            sync(&mut tracker, &mut t, &s);
        }
        // Nothing changed: nothing to do.
        assert!(
            matches!(tracker.changes(&s), Changes::Some { changed, gone }
            if changed.is_empty() && gone.is_empty())
        );
        // An address and an alias change; a link to it; its target changes and goes.
        std::sync::Arc::make_mut(&mut s.containers[0]).attachments[0].ip = [10, 0, 9, 9].into();
        std::sync::Arc::make_mut(&mut s.containers[2]).attachments[0]
            .aliases
            .push("extra".into());
        sync(&mut tracker, &mut t, &s);
        let target = s.containers[2].id.clone();
        std::sync::Arc::make_mut(&mut s.containers[3])
            .links
            .push(Link {
                target: target.clone(),
                alias: "db".into(),
            });
        sync(&mut tracker, &mut t, &s);
        std::sync::Arc::make_mut(&mut s.containers[2]).attachments[1].ip = [10, 0, 8, 8].into();
        sync(&mut tracker, &mut t, &s);
        s.containers.retain(|c| c.id != target);
        sync(&mut tracker, &mut t, &s);
        // A container joining another's namespace, then the owner goes.
        let mut joiner = ctr("joiner", 7, &[("n2", 7)]);
        joiner.netns = s.containers[0].netns.clone();
        joiner.mode = NetMode::Container(s.containers[0].id.clone());
        s.containers.push(joiner.into());
        sync(&mut tracker, &mut t, &s);
        s.containers.remove(0);
        sync(&mut tracker, &mut t, &s);
        // A network changes: everything again.
        s.networks[1].internal = true;
        assert!(matches!(tracker.changes(&s), Changes::All));
        t = Table::build(&s);
        s.containers.clear();
        sync(&mut tracker, &mut t, &s);
        assert_eq!(t, Table::default());
    }
}
