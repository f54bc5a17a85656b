//! Who sees which names: the record table, derived from the daemon's state every time an
//! attachment is made or removed. Names are scoped per network: a client (a namespace)
//! sees the names of every network it is attached to, and its links' aliases. A name
//! holds the addresses of both families (A and AAAA records): a container's IPv6
//! address counts on the networks where it has one (`--ipv6`).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use crate::{
    model::{self, Container, Network},
    store::State,
};

/// The name of 127.0.0.11: where a namespace's embedded DNS server listens.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// Whether containers on `net` get the embedded DNS server (user-defined bridge and overlay networks,
/// as Docker: the default `bridge` has none).
pub fn has_embedded_dns(net: &Network) -> bool {
    net.traits().dns && !net.builtin
}

/// What one client (a network namespace) may resolve and where its other queries go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    /// Ids of the networks with embedded DNS it is attached to.
    pub networks: Vec<String>,
    /// `--link` aliases of this namespace's containers: lowercased name -> addresses.
    pub links: HashMap<String, Addrs>,
    /// `--dns` servers, queried from the client's namespace.
    pub servers: Vec<IpAddr>,
    /// Whether names netd does not know leave the host at all (not on internal-only).
    pub forward: bool,
}

/// The addresses of one name, per family: what its A and AAAA records give.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addrs {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl Addrs {
    fn extend(&mut self, other: &Addrs, want: Families) {
        if want.v4 {
            self.v4.extend_from_slice(&other.v4);
        }
        if want.v6 {
            self.v6.extend_from_slice(&other.v6);
        }
    }

    fn sort_dedup(&mut self) {
        self.v4.sort();
        self.v4.dedup();
        self.v6.sort();
        self.v6.dedup();
    }
}

/// Which families of addresses a lookup copies out (a query of type A needs no IPv6
/// list, and this is per query). A name is found, or not, whatever they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const V4: Families = Families {
        v4: true,
        v6: false,
    };
    pub const V6: Families = Families {
        v4: false,
        v6: true,
    };
    pub const BOTH: Families = Families { v4: true, v6: true };
    pub const NONE: Families = Families {
        v4: false,
        v6: false,
    };
}

/// The outcome of a local lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The name is a container's: its addresses of the families asked for (possibly
    /// none: a name with only the other family answers NOERROR, empty).
    Found(Addrs),
    /// Not a name netd knows.
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Per network id: lowercased name -> addresses.
    names: HashMap<String, HashMap<String, Addrs>>,
    /// Per network id: address (either family) -> the name its PTR gives.
    ptrs: HashMap<String, HashMap<IpAddr, String>>,
    /// Per namespace (a name under /run/netns or an absolute path).
    clients: HashMap<String, Client>,
}

/// What one attachment of a container puts in its network's names: the names, the
/// addresses they give and the PTR target. Kept (`delta`) to take it out again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub network: String,
    pub names: Vec<String>,
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub ptr: String,
}

/// Every name a container answers to on one network: its name, the attachment's
/// aliases, its short id and its hostname.
pub fn names_of(c: &Container, aliases: &[String]) -> Vec<String> {
    let mut out = vec![c.name.clone()];
    out.extend(aliases.iter().cloned());
    if c.id.len() >= 12 {
        out.push(c.id[..12].to_string());
    }
    out.extend(c.hostname.iter().cloned());
    out.retain(|n| model::is_dns_name(n));
    out.iter_mut().for_each(|n| n.make_ascii_lowercase());
    out.sort();
    out.dedup();
    out
}

/// The networks with embedded DNS, by id.
pub fn dns_networks(state: &State) -> HashMap<&str, &Network> {
    state
        .networks
        .iter()
        .filter(|n| has_embedded_dns(n))
        .map(|n| (n.id.as_str(), n))
        .collect()
}

/// What container `c` puts in the names of the networks with embedded DNS.
pub fn entries(c: &Container, dns_nets: &HashMap<&str, &Network>) -> Vec<Entry> {
    c.attachments
        .iter()
        .filter(|a| dns_nets.contains_key(a.network.as_str()))
        .map(|a| Entry {
            network: a.network.clone(),
            names: names_of(c, &a.aliases),
            ip: a.ip,
            ip6: a.ip6,
            ptr: c.name.to_ascii_lowercase(),
        })
        .collect()
}

/// Inserts `v` into sorted `list` unless it is there.
fn insert_sorted<T: Ord>(list: &mut Vec<T>, v: T) {
    if let Err(i) = list.binary_search(&v) {
        list.insert(i, v);
    }
}

fn remove_sorted<T: Ord>(list: &mut Vec<T>, v: &T) {
    if let Ok(i) = list.binary_search(v) {
        list.remove(i);
    }
}

/// The networks of `c` a server in its namespace answers for (none for a container of
/// Docker's: dockerd serves its own containers' names with its resolver in their
/// namespace, and a second server on 127.0.0.11:53 there would fight it).
fn client_networks<'a>(c: &Container, dns_nets: &HashMap<&str, &'a Network>) -> Vec<&'a Network> {
    if matches!(c.origin, model::Origin::Docker { .. }) {
        return Vec::new();
    }
    c.attachments
        .iter()
        .filter_map(|a| dns_nets.get(a.network.as_str()).copied())
        .collect()
}

/// Adds what container `c` on networks `nets` gives the client of its namespace.
fn add_to_client(client: &mut Client, c: &Container, nets: &[&Network], state: &State) {
    for n in nets {
        if !client.networks.contains(&n.id) {
            client.networks.push(n.id.clone());
        }
    }
    client.forward |= nets.iter().any(|n| !n.internal);
    client.servers.extend(c.dns.servers.iter().copied());
    for l in &c.links {
        let Some(target) = state.containers.iter().find(|x| x.id == l.target) else {
            continue;
        };
        let e = client
            .links
            .entry(l.alias.to_ascii_lowercase())
            .or_default();
        for a in target
            .attachments
            .iter()
            .filter(|a| nets.iter().any(|n| n.id == a.network))
        {
            e.v4.extend(a.ipv4());
            e.v6.extend(a.ip6);
        }
    }
}

impl Table {
    pub fn build(state: &State) -> Table {
        let mut t = Table::default();
        let dns_nets = dns_networks(state);
        for c in &state.containers {
            for e in entries(c, &dns_nets) {
                t.add(&e);
            }
        }
        // Containers of overlay networks on other nodes, named as their node says
        // (overlay networks are IPv4 only).
        for r in state.remote.iter() {
            if !dns_nets.contains_key(r.network.as_str()) {
                continue;
            }
            let names = t.names.entry(r.network.clone()).or_default();
            for n in &r.names {
                insert_sorted(
                    &mut names.entry(n.to_ascii_lowercase()).or_default().v4,
                    r.ip,
                );
            }
            t.ptrs
                .entry(r.network.clone())
                .or_default()
                .insert(r.ip.into(), r.container.to_ascii_lowercase());
        }
        for c in &state.containers {
            let Some(ns) = &c.netns else { continue };
            let nets = client_networks(c, &dns_nets);
            if nets.is_empty() {
                continue;
            }
            add_to_client(t.clients.entry(ns.clone()).or_default(), c, &nets, state);
        }
        // Sorted and unique once here, so that a lookup finding one list uses it as is.
        for ips in t.clients.values_mut().flat_map(|c| c.links.values_mut()) {
            ips.sort_dedup();
        }
        t
    }

    /// Puts `e`'s names and PTRs in (kept sorted and unique).
    pub fn add(&mut self, e: &Entry) {
        let names = self.names.entry(e.network.clone()).or_default();
        for n in &e.names {
            let ips = names.entry(n.clone()).or_default();
            // 0.0.0.0: an IPv6-only network's endpoint, with no IPv4 to answer.
            if !e.ip.is_unspecified() {
                insert_sorted(&mut ips.v4, e.ip);
            }
            if let Some(ip6) = e.ip6 {
                insert_sorted(&mut ips.v6, ip6);
            }
        }
        let ptrs = self.ptrs.entry(e.network.clone()).or_default();
        if let Some(ip6) = e.ip6 {
            ptrs.insert(ip6.into(), e.ptr.clone());
        }
        if !e.ip.is_unspecified() {
            ptrs.insert(e.ip.into(), e.ptr.clone());
        }
    }

    /// Takes `e` (as `add` put it in) out again.
    pub fn remove(&mut self, e: &Entry) {
        if let Some(names) = self.names.get_mut(&e.network) {
            for n in &e.names {
                let Some(ips) = names.get_mut(n) else {
                    continue;
                };
                remove_sorted(&mut ips.v4, &e.ip);
                if let Some(ip6) = e.ip6 {
                    remove_sorted(&mut ips.v6, &ip6);
                }
                if ips.v4.is_empty() && ips.v6.is_empty() {
                    names.remove(n);
                }
            }
            if names.is_empty() {
                self.names.remove(&e.network);
            }
        }
        if let Some(ptrs) = self.ptrs.get_mut(&e.network) {
            for ip in std::iter::once(IpAddr::from(e.ip)).chain(e.ip6.map(IpAddr::from)) {
                if ptrs.get(&ip) == Some(&e.ptr) {
                    ptrs.remove(&ip);
                }
            }
            if ptrs.is_empty() {
                self.ptrs.remove(&e.network);
            }
        }
    }

    /// Makes the client of namespace `ns` what `members`, the containers in it in the
    /// state's order, give (none if no container there gets a server).
    pub fn refresh_client(
        &mut self,
        ns: &str,
        members: &[Arc<Container>],
        state: &State,
        dns_nets: &HashMap<&str, &Network>,
    ) {
        let mut client: Option<Client> = None;
        for c in members {
            let nets = client_networks(c, dns_nets);
            if !nets.is_empty() {
                add_to_client(client.get_or_insert_default(), c, &nets, state);
            }
        }
        match client {
            Some(mut c) => {
                c.links.values_mut().for_each(Addrs::sort_dedup);
                self.clients.insert(ns.to_string(), c);
            }
            None => {
                self.clients.remove(ns);
            }
        }
    }

    pub fn client(&self, ns: &str) -> Option<&Client> {
        self.clients.get(ns)
    }

    /// The namespaces that get an embedded DNS server.
    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.clients.keys()
    }

    /// Looks `name` (any case, with or without the final dot) up as namespace `ns` sees
    /// it, copying out the addresses of the families `want`s.
    pub fn lookup(&self, ns: &str, name: &str, want: Families) -> Lookup {
        let Some(client) = self.clients.get(ns) else {
            return Lookup::Unknown;
        };
        let name = name.trim_end_matches('.');
        // Names come lowercase from most resolvers: no copy for them (this is per query).
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        let mut found: Option<Addrs> = None;
        let mut sources = 0usize;
        let lists = client.links.get(name).into_iter().chain(
            client
                .networks
                .iter()
                .filter_map(|net| self.names.get(net).and_then(|m| m.get(name))),
        );
        for ips in lists {
            found.get_or_insert_with(Addrs::default).extend(ips, want);
            sources += 1;
        }
        match found {
            Some(mut ips) => {
                // One source's lists are sorted and unique already (built so).
                if sources > 1 {
                    ips.sort_dedup();
                }
                Lookup::Found(ips)
            }
            None => Lookup::Unknown,
        }
    }

    /// The container name of address `ip` (either family), as namespace `ns` sees it.
    pub fn reverse(&self, ns: &str, ip: IpAddr) -> Option<&str> {
        let client = self.clients.get(ns)?;
        client
            .networks
            .iter()
            .find_map(|n| self.ptrs.get(n).and_then(|m| m.get(&ip)))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_attachment, test_container, test_network, Link};

    fn found4(ips: Vec<Ipv4Addr>) -> Lookup {
        Lookup::Found(Addrs {
            v4: ips,
            v6: vec![],
        })
    }

    fn v4(o: [u8; 4]) -> IpAddr {
        Ipv4Addr::from(o).into()
    }

    fn container(name: &str, id: &str, ns: &str, atts: Vec<model::Attachment>) -> Container {
        Container {
            netns: Some(ns.into()),
            attachments: atts,
            ..test_container(&id.repeat(64 / id.len()), name)
        }
    }

    fn att(net: &str, ip: [u8; 4], aliases: &[&str]) -> model::Attachment {
        model::Attachment {
            network: net.into(),
            ip: ip.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            ..test_attachment()
        }
    }

    fn state() -> State {
        let mut s = State::default();
        for (id, internal) in [("n1", false), ("n2", true)] {
            s.networks.push(Network {
                id: id.into(),
                name: id.into(),
                builtin: false,
                internal,
                ..test_network()
            });
        }
        s.networks.push(Network {
            id: "def".into(),
            name: "bridge".into(),
            builtin: true,
            ..test_network()
        });
        s.containers = [
            container(
                "web",
                "a",
                "ns-web",
                vec![att("n1", [10, 0, 1, 2], &["front"])],
            ),
            container(
                "db",
                "b",
                "ns-db",
                vec![att("n2", [10, 0, 2, 2], &["store"])],
            ),
            container(
                "both",
                "c",
                "ns-both",
                vec![
                    att("n1", [10, 0, 1, 3], &["front"]),
                    att("n2", [10, 0, 2, 3], &[]),
                ],
            ),
            container("old", "d", "ns-old", vec![att("def", [172, 17, 0, 2], &[])]),
        ]
        .map(std::sync::Arc::new)
        .into();
        s
    }

    #[test]
    fn names_are_scoped_per_network() {
        let t = Table::build(&state());
        assert_eq!(
            t.lookup("ns-web", "both", Families::BOTH),
            found4(vec![[10, 0, 1, 3].into()])
        );
        // db is on n2 only: web (n1) does not see it, both (n1+n2) does.
        assert_eq!(t.lookup("ns-web", "db", Families::BOTH), Lookup::Unknown);
        assert_eq!(
            t.lookup("ns-both", "DB.", Families::BOTH),
            found4(vec![[10, 0, 2, 2].into()])
        );
        assert_eq!(
            t.lookup("ns-both", "store", Families::BOTH),
            found4(vec![[10, 0, 2, 2].into()])
        );
        // A shared alias gives every address; the short id and the name work too.
        assert_eq!(
            t.lookup("ns-db", "both", Families::BOTH),
            found4(vec![[10, 0, 2, 3].into()])
        );
        assert_eq!(
            t.lookup("ns-both", "front", Families::BOTH),
            found4(vec![[10, 0, 1, 2].into(), [10, 0, 1, 3].into()])
        );
        assert_eq!(
            t.lookup("ns-web", "aaaaaaaaaaaa", Families::BOTH),
            found4(vec![[10, 0, 1, 2].into()])
        );
        assert_eq!(t.reverse("ns-both", v4([10, 0, 2, 2])), Some("db"));
        assert_eq!(t.reverse("ns-web", v4([10, 0, 2, 2])), None);
    }

    #[test]
    fn default_bridge_and_internal_networks() {
        let t = Table::build(&state());
        // The default bridge has no embedded DNS: no client, and its names are unknown.
        assert!(t.client("ns-old").is_none());
        assert_eq!(t.lookup("ns-web", "old", Families::BOTH), Lookup::Unknown);
        // Internal-only clients do not forward; one with any non-internal network does.
        assert!(!t.client("ns-db").unwrap().forward);
        assert!(t.client("ns-both").unwrap().forward);
    }

    #[test]
    fn links_add_a_private_alias() {
        let mut s = state();
        let db_id = s.containers[2].id.clone();
        std::sync::Arc::make_mut(&mut s.containers[0])
            .links
            .push(Link {
                target: db_id,
                alias: "Primary".into(),
            });
        let t = Table::build(&s);
        assert_eq!(
            t.lookup("ns-web", "primary", Families::BOTH),
            found4(vec![[10, 0, 1, 3].into()])
        );
        assert_eq!(
            t.lookup("ns-both", "primary", Families::BOTH),
            Lookup::Unknown
        );
    }

    #[test]
    fn ipv6_addresses_answer_aaaa_and_ptr() {
        let mut s = state();
        s.networks.push(Network {
            id: "n6".into(),
            name: "n6".into(),
            builtin: false,
            ..crate::model::test_network6()
        });
        let six = |ip: [u8; 4], ip6: &str, aliases: &[&str]| model::Attachment {
            ip6: ip6.parse().ok(),
            ..att("n6", ip, aliases)
        };
        s.containers.extend(
            [
                container(
                    "x",
                    "e",
                    "ns-x",
                    vec![six([10, 0, 6, 2], "fd00:6::2", &["shared"])],
                ),
                container(
                    "y",
                    "f",
                    "ns-y",
                    vec![six([10, 0, 6, 3], "fd00:6::3", &["shared"])],
                ),
                // On the network without an IPv6 address (an IPv4-only front door).
                container("z", "9", "ns-z", vec![six([10, 0, 6, 4], "", &["shared"])]),
            ]
            .map(std::sync::Arc::new),
        );
        let t = Table::build(&s);
        let x6: Ipv6Addr = "fd00:6::2".parse().unwrap();
        let y6: Ipv6Addr = "fd00:6::3".parse().unwrap();
        let both = |v4: Vec<[u8; 4]>, v6: Vec<Ipv6Addr>| {
            Lookup::Found(Addrs {
                v4: v4.into_iter().map(Ipv4Addr::from).collect(),
                v6,
            })
        };
        // Each family on its own, or both (ANY); the short id too.
        assert_eq!(t.lookup("ns-y", "x", Families::V6), both(vec![], vec![x6]));
        assert_eq!(
            t.lookup("ns-y", "x", Families::V4),
            both(vec![[10, 0, 6, 2]], vec![])
        );
        assert_eq!(
            t.lookup("ns-y", "EEEEEEEEEEEE.", Families::BOTH),
            both(vec![[10, 0, 6, 2]], vec![x6])
        );
        // A name with no address of the asked family is found, with nothing in it.
        assert_eq!(t.lookup("ns-x", "z", Families::V6), both(vec![], vec![]));
        assert_eq!(t.lookup("ns-x", "nope", Families::V6), Lookup::Unknown);
        assert_eq!(t.lookup("ns-x", "z", Families::NONE), both(vec![], vec![]));
        // A shared alias holds every address of each family, sorted.
        assert_eq!(
            t.lookup("ns-z", "shared", Families::BOTH),
            both(
                vec![[10, 0, 6, 2], [10, 0, 6, 3], [10, 0, 6, 4]],
                vec![x6, y6]
            )
        );
        // PTR for both families, scoped like the names.
        assert_eq!(t.reverse("ns-z", x6.into()), Some("x"));
        assert_eq!(t.reverse("ns-z", v4([10, 0, 6, 3])), Some("y"));
        assert_eq!(t.reverse("ns-web", x6.into()), None);
    }
}
