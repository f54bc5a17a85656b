//! Lookups a new container's checks make over the containers on the host: whether a
//! name is taken, which addresses a network's containers hold, who publishes a host
//! port. Without them each
//! check walks every container (a few ms at 5,000). Kept by the same pointer walk as a
//! commit: a record at its place of the list since the last look is known unchanged
//! without being read, so keeping up costs what changed.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use super::follow::{missing, Follow};
use crate::model::{Container, Proto};

/// Shared by the copies of a state, like the IPAM cursor, and no part of what two states
/// are compared on: it follows whichever list it is given.
#[derive(Clone, Debug, Default)]
pub struct Index(Arc<Mutex<Indexed>>);

impl PartialEq for Index {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Default)]
struct Indexed {
    follow: Follow,
    by_id: HashMap<String, Arc<Container>>,
    names: HashMap<String, String>,
    /// By network id: the addresses its containers hold, each with how many hold it
    /// (one, unless records disagree).
    addrs: HashMap<String, HashMap<IpAddr, u32>>,
    ports: HashMap<(Proto, u16), HashSet<String>>,
}

impl Index {
    /// Runs `f` on the index of `containers`.
    fn with<T>(&self, containers: &[Arc<Container>], f: impl FnOnce(&Indexed) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        g.follow(containers);
        f(&g)
    }

    pub fn name_taken(&self, containers: &[Arc<Container>], name: &str) -> bool {
        self.with(containers, |i| i.names.contains_key(name))
    }

    /// The container whose full id or name is `key` (the list's own record).
    pub fn exact(&self, containers: &[Arc<Container>], key: &str) -> Option<Arc<Container>> {
        self.with(containers, |i| {
            i.by_id
                .get(key)
                .or_else(|| i.names.get(key).and_then(|id| i.by_id.get(id)))
                .cloned()
        })
    }

    /// The container whose full id is `id` (the list's own record).
    pub fn by_id(&self, containers: &[Arc<Container>], id: &str) -> Option<Arc<Container>> {
        self.with(containers, |i| i.by_id.get(id).cloned())
    }

    /// The addresses (both families) the containers hold on network `net`.
    pub fn addresses_on(&self, containers: &[Arc<Container>], net: &str) -> Vec<IpAddr> {
        self.with(containers, |i| {
            i.addrs
                .get(net)
                .map(|a| a.keys().copied().collect())
                .unwrap_or_default()
        })
    }

    /// The containers publishing host port `port` for `proto` (on any host address).
    pub fn publishing(
        &self,
        containers: &[Arc<Container>],
        proto: Proto,
        port: u16,
    ) -> Vec<Arc<Container>> {
        self.with(containers, |i| i.containers(i.ports.get(&(proto, port))))
    }
}

impl Indexed {
    fn containers(&self, ids: Option<&HashSet<String>>) -> Vec<Arc<Container>> {
        ids.into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id).cloned())
            .collect()
    }

    /// Brings the index up to `containers`.
    fn follow(&mut self, containers: &[Arc<Container>]) {
        for c in self.follow.moved(containers) {
            if self.by_id.get(&c.id).is_some_and(|l| Arc::ptr_eq(l, c)) {
                continue;
            }
            if let Some(old) = self.by_id.insert(c.id.clone(), c.clone()) {
                self.remove(&old);
            }
            self.add(c);
        }
        // Every container of the list is in `by_id` now: more there means some went.
        if self.by_id.len() > containers.len() {
            for id in missing(self.by_id.keys(), containers) {
                if let Some(old) = self.by_id.remove(&id) {
                    self.remove(&old);
                }
            }
        }
    }

    fn add(&mut self, c: &Container) {
        self.names.insert(c.name.clone(), c.id.clone());
        for a in &c.attachments {
            let held = self.addrs.entry(a.network.clone()).or_default();
            for ip in addresses(a) {
                *held.entry(ip).or_default() += 1;
            }
        }
        for p in &c.ports {
            self.ports
                .entry((p.proto, p.host_port))
                .or_default()
                .insert(c.id.clone());
        }
    }

    /// Takes out what `c` (a record no longer in the list) put in.
    fn remove(&mut self, c: &Container) {
        if self.names.get(&c.name) == Some(&c.id) {
            self.names.remove(&c.name);
        }
        for a in &c.attachments {
            let Some(held) = self.addrs.get_mut(&a.network) else {
                continue;
            };
            for ip in addresses(a) {
                if let Some(n) = held.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        held.remove(&ip);
                    }
                }
            }
            if held.is_empty() {
                self.addrs.remove(&a.network);
            }
        }
        for p in &c.ports {
            forget(&mut self.ports, &(p.proto, p.host_port), &c.id);
        }
    }
}

/// The addresses attachment `a` holds on its network.
fn addresses(a: &crate::model::Attachment) -> impl Iterator<Item = IpAddr> {
    a.ipv4()
        .map(IpAddr::V4)
        .into_iter()
        .chain(a.ip6.map(IpAddr::V6))
}

fn forget<K: std::hash::Hash + Eq>(m: &mut HashMap<K, HashSet<String>>, k: &K, id: &str) {
    if let Some(ids) = m.get_mut(k) {
        ids.remove(id);
        if ids.is_empty() {
            m.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_attachment, test_container, PortMapping};

    /// Container `id` on network `net` at 10.1.0.N, N from its id's first letter.
    fn ctr(id: &str, name: &str, net: &str, port: Option<u16>) -> Arc<Container> {
        let mut c = test_container(id, name);
        c.attachments = vec![crate::model::Attachment {
            network: net.into(),
            ip: std::net::Ipv4Addr::new(10, 1, 0, id.as_bytes()[0]),
            ..test_attachment()
        }];
        c.ports = port
            .map(|p| PortMapping {
                host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
                host_port: p,
                container_port: 80,
                proto: Proto::Tcp,
            })
            .into_iter()
            .collect();
        Arc::new(c)
    }

    fn ids(v: Vec<Arc<Container>>) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|c| c.id.clone()).collect();
        v.sort();
        v
    }

    /// The ids of the containers whose addresses are on `net` (10.1.0.N: N the id).
    fn on(idx: &Index, list: &[Arc<Container>], net: &str) -> Vec<String> {
        let mut v: Vec<String> = idx
            .addresses_on(list, net)
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(a) => char::from(a.octets()[3]).to_string(),
                IpAddr::V6(_) => "v6".into(),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_index_follows_additions_changes_removals_and_renames() {
        let idx = Index::default();
        let mut list = vec![
            ctr("a", "web", "n1", Some(8080)),
            ctr("b", "db", "n1", None),
        ];
        assert!(idx.name_taken(&list, "web"));
        assert_eq!(on(&idx, &list, "n1"), ["a", "b"]);
        assert_eq!(ids(idx.publishing(&list, Proto::Tcp, 8080)), ["a"]);
        // Changed in place (a new record for the same id): renamed, moved, unpublished.
        list[0] = ctr("a", "front", "n2", None);
        assert!(!idx.name_taken(&list, "web") && idx.name_taken(&list, "front"));
        assert_eq!(on(&idx, &list, "n1"), ["b"]);
        assert!(idx.publishing(&list, Proto::Tcp, 8080).is_empty());
        // One removed and one added in the same change.
        list.remove(1);
        list.push(ctr("c", "cache", "n1", Some(8080)));
        assert!(!idx.name_taken(&list, "db"));
        assert_eq!(on(&idx, &list, "n1"), ["c"]);
        assert_eq!(ids(idx.publishing(&list, Proto::Tcp, 8080)), ["c"]);
        assert!(idx.publishing(&list, Proto::Udp, 8080).is_empty());
        // A name given up and taken by another in the same change.
        list = vec![
            ctr("c", "cache2", "n1", None),
            ctr("d", "cache", "n1", None),
        ];
        assert!(idx.name_taken(&list, "cache") && idx.name_taken(&list, "cache2"));
        assert_eq!(on(&idx, &list, "n1"), ["c", "d"]);
        list.clear();
        assert!(!idx.name_taken(&list, "cache"));
        assert!(idx.addresses_on(&list, "n1").is_empty());
        // Two records that disagree on an address: it is held until both let it go.
        list = vec![ctr("e", "e1", "n1", None), ctr("e2", "e2", "n1", None)];
        assert_eq!(on(&idx, &list, "n1"), ["e"]);
        list.remove(0);
        assert_eq!(on(&idx, &list, "n1"), ["e"]);
        list.clear();
        assert!(idx.addresses_on(&list, "n1").is_empty());
    }
}
