//! A network's subnets, both address families in one list (`Subnet`, as netavark's
//! `Vec<Subnet>`), and the typed view the code that works on one family takes of it
//! (`Pool<A>`, with `A` an `IpFamily`): IPAM, the bridge's addresses and the datapath
//! ask for the pools of the family they handle, and one generic path serves both.
use std::{
    fmt::{Debug, Display},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

/// One subnet of a network, of either family, as the state stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub subnet: IpNetwork,
    /// The address the network's bridge (or the segment's router) has in it.
    pub gateway: IpAddr,
    /// Where automatic addresses come from (default: the whole subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNetwork>,
    /// The user chose it (not a default pool): only then may containers ask for a
    /// static address in it, as in Docker.
    #[serde(default)]
    pub user: bool,
}

/// A subnet of family `A`, with its gateway and range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool<A: IpFamily> {
    pub subnet: A::Net,
    pub gateway: A,
    pub ip_range: Option<A::Net>,
    pub user: bool,
}

impl<A: IpFamily> Pool<A> {
    /// The typed view of `s`, if it is of family `A`.
    pub fn of(s: &Subnet) -> Option<Pool<A>> {
        Some(Pool {
            subnet: A::net_of(s.subnet)?,
            gateway: A::of_addr(s.gateway)?,
            ip_range: s.ip_range.and_then(A::net_of),
            user: s.user,
        })
    }

    /// Where automatic addresses come from.
    pub fn range(&self) -> A::Net {
        self.ip_range.unwrap_or(self.subnet)
    }
}

impl<A: IpFamily> From<Pool<A>> for Subnet {
    fn from(p: Pool<A>) -> Subnet {
        Subnet {
            subnet: A::net_into(p.subnet),
            gateway: p.gateway.into(),
            ip_range: p.ip_range.map(A::net_into),
            user: p.user,
        }
    }
}

/// What differs between IPv4 and IPv6 for the code that handles either.
pub trait IpFamily: Copy + Eq + Hash + Ord + Debug + Display + Into<IpAddr> + 'static {
    type Net: Copy + Eq + Debug + Display;
    /// "IPv4" or "IPv6", for messages.
    const NAME: &'static str;
    /// Address length in bits.
    const BITS: u8;
    /// The option that asks for a static address of this family.
    const FLAG: &'static str;
    /// How a network came to lack this family, for messages.
    const ABSENT: &'static str;
    /// What a static address of this family needs (Docker's words for IPv4).
    const STATIC_NEEDS: &'static str;
    fn of_addr(ip: IpAddr) -> Option<Self>;
    fn net_of(n: IpNetwork) -> Option<Self::Net>;
    fn net_into(n: Self::Net) -> IpNetwork;
    fn bits(self) -> u128;
    fn from_bits(b: u128) -> Self;
    fn first(n: &Self::Net) -> Self;
    fn last(n: &Self::Net) -> Self;
    fn prefix(n: &Self::Net) -> u8;
    fn contains(n: &Self::Net, ip: Self) -> bool;
    /// Why `ip` cannot be a host's address in `subnet`, if it cannot.
    fn host_problem(subnet: &Self::Net, ip: Self) -> Option<String>;
}

impl IpFamily for Ipv4Addr {
    type Net = Ipv4Network;
    const NAME: &'static str = "IPv4";
    const BITS: u8 = 32;
    const FLAG: &'static str = "--ip";
    const ABSENT: &'static str = "it was created with --ipv4=false";
    const STATIC_NEEDS: &'static str =
        "user specified IP address is supported only on networks created with --subnet";

    fn of_addr(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn net_of(n: IpNetwork) -> Option<Ipv4Network> {
        match n {
            IpNetwork::V4(n) => Some(n),
            IpNetwork::V6(_) => None,
        }
    }
    fn net_into(n: Ipv4Network) -> IpNetwork {
        IpNetwork::V4(n)
    }
    fn bits(self) -> u128 {
        u128::from(u32::from(self))
    }
    fn from_bits(b: u128) -> Self {
        Ipv4Addr::from(b as u32)
    }
    fn first(n: &Ipv4Network) -> Self {
        n.network()
    }
    fn last(n: &Ipv4Network) -> Self {
        n.broadcast()
    }
    fn prefix(n: &Ipv4Network) -> u8 {
        n.prefix()
    }
    fn contains(n: &Ipv4Network, ip: Self) -> bool {
        n.contains(ip)
    }
    /// Its network and broadcast addresses are no host's.
    fn host_problem(subnet: &Ipv4Network, ip: Self) -> Option<String> {
        if !subnet.contains(ip) {
            Some(format!("is not a usable address of subnet {subnet}"))
        } else if ip == subnet.network() {
            Some(format!("is the network address of subnet {subnet}"))
        } else if ip == subnet.broadcast() {
            Some(format!("is the broadcast address of subnet {subnet}"))
        } else {
            None
        }
    }
}

impl IpFamily for Ipv6Addr {
    type Net = Ipv6Network;
    const NAME: &'static str = "IPv6";
    const BITS: u8 = 128;
    const FLAG: &'static str = "--ip6";
    const ABSENT: &'static str = "it was created without --ipv6";
    const STATIC_NEEDS: &'static str =
        "user specified IPv6 address is supported only on networks created with an IPv6 --subnet";

    fn of_addr(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn net_of(n: IpNetwork) -> Option<Ipv6Network> {
        match n {
            IpNetwork::V6(n) => Some(n),
            IpNetwork::V4(_) => None,
        }
    }
    fn net_into(n: Ipv6Network) -> IpNetwork {
        IpNetwork::V6(n)
    }
    fn bits(self) -> u128 {
        u128::from(self)
    }
    fn from_bits(b: u128) -> Self {
        Ipv6Addr::from(b)
    }
    fn first(n: &Ipv6Network) -> Self {
        n.network()
    }
    fn last(n: &Ipv6Network) -> Self {
        let host_bits = u128::MAX.checked_shr(u32::from(n.prefix())).unwrap_or(0);
        Ipv6Addr::from(u128::from(n.network()) | host_bits)
    }
    fn prefix(n: &Ipv6Network) -> u8 {
        n.prefix()
    }
    fn contains(n: &Ipv6Network, ip: Self) -> bool {
        n.contains(ip)
    }
    /// Its first address is the Subnet-Router anycast address every router of the link
    /// answers; there is no broadcast.
    fn host_problem(subnet: &Ipv6Network, ip: Self) -> Option<String> {
        if !subnet.contains(ip) {
            Some(format!("is not a usable address of subnet {subnet}"))
        } else if ip == subnet.network() {
            Some(format!(
                "is the Subnet-Router anycast address of subnet {subnet}"
            ))
        } else {
            None
        }
    }
}

/// Whether two subnets of a family share an address.
pub fn overlap<A: IpFamily>(a: &A::Net, b: &A::Net) -> bool {
    A::contains(a, A::first(b)) || A::contains(b, A::first(a))
}

/// The network record's layout before `subnets` (state version 3, and the cluster
/// store's `/netd/v1` records of netd 0.2): the first IPv4 subnet as `subnet`,
/// `gateway`, `ip_range`, `user_subnet`, the others in `more_subnets`, and the IPv6 one
/// as `ipv6`, `subnet6`, `gateway6`, `ip_range6`, `user_subnet6`.
pub mod legacy {
    use serde_json::{Map, Value};

    use super::Subnet;

    const V4_KEYS: [&str; 5] = [
        "subnet",
        "gateway",
        "ip_range",
        "user_subnet",
        "more_subnets",
    ];
    const V6_KEYS: [&str; 5] = ["ipv6", "subnet6", "gateway6", "ip_range6", "user_subnet6"];

    /// Rewrites a network record of the older layout into `subnets` (one already in the
    /// new layout is left as it is).
    pub fn upgrade(net: &mut Map<String, Value>) -> Result<(), String> {
        if net.contains_key("subnets") {
            for k in V4_KEYS.iter().chain(&V6_KEYS) {
                net.remove(*k);
            }
            return Ok(());
        }
        let mut subnets = Vec::new();
        let user4 = net
            .get("user_subnet")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut push = |s: Option<&Value>, g: Option<&Value>, r: Option<&Value>, user| {
            if let (Some(s), Some(g)) = (s.filter(|v| !v.is_null()), g.filter(|v| !v.is_null())) {
                let mut o = Map::new();
                o.insert("subnet".into(), s.clone());
                o.insert("gateway".into(), g.clone());
                if let Some(r) = r.filter(|v| !v.is_null()) {
                    o.insert("ip_range".into(), r.clone());
                }
                o.insert("user".into(), Value::Bool(user));
                subnets.push(Value::Object(o));
            }
        };
        push(
            net.get("subnet"),
            net.get("gateway"),
            net.get("ip_range"),
            user4,
        );
        if let Some(more) = net.get("more_subnets").and_then(Value::as_array) {
            for p in more {
                push(p.get("subnet"), p.get("gateway"), p.get("ip_range"), user4);
            }
        }
        if net.get("ipv6").and_then(Value::as_bool).unwrap_or(false) {
            let user6 = net
                .get("user_subnet6")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            push(
                net.get("subnet6"),
                net.get("gateway6"),
                net.get("ip_range6"),
                user6,
            );
        }
        // Every subnet parses as the new layout's, or the record is refused whole.
        for s in &subnets {
            serde_json::from_value::<Subnet>(s.clone())
                .map_err(|e| format!("a subnet {s}: {e}"))?;
        }
        for k in V4_KEYS.iter().chain(&V6_KEYS) {
            net.remove(*k);
        }
        net.insert("subnets".into(), Value::Array(subnets));
        Ok(())
    }

    /// Adds the older layout's keys to a record of the new one, so that a node of the
    /// previous release reads it (the cluster store is shared during a rolling upgrade).
    pub fn add_older_keys(net: &mut Map<String, Value>) {
        let subnets: Vec<Subnet> = net
            .get("subnets")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let (v4, v6): (Vec<&Subnet>, Vec<&Subnet>) =
            subnets.iter().partition(|s| s.subnet.is_ipv4());
        let json = |v: Option<String>| v.map_or(Value::Null, Value::String);
        if let Some(first) = v4.first() {
            net.insert("subnet".into(), json(Some(first.subnet.to_string())));
            net.insert("gateway".into(), json(Some(first.gateway.to_string())));
            net.insert(
                "ip_range".into(),
                json(first.ip_range.map(|r| r.to_string())),
            );
            net.insert("user_subnet".into(), Value::Bool(first.user));
            let more: Vec<Value> = v4[1..]
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "subnet": s.subnet.to_string(),
                        "gateway": s.gateway.to_string(),
                        "ip_range": s.ip_range.map(|r| r.to_string()),
                    })
                })
                .collect();
            net.insert("more_subnets".into(), Value::Array(more));
        } else {
            for k in ["subnet", "gateway", "ip_range"] {
                net.insert(k.into(), Value::Null);
            }
            net.insert("user_subnet".into(), Value::Bool(false));
        }
        net.insert("ipv6".into(), Value::Bool(!v6.is_empty()));
        if let Some(s6) = v6.first() {
            net.insert("subnet6".into(), json(Some(s6.subnet.to_string())));
            net.insert("gateway6".into(), json(Some(s6.gateway.to_string())));
            net.insert("ip_range6".into(), json(s6.ip_range.map(|r| r.to_string())));
            net.insert("user_subnet6".into(), Value::Bool(s6.user));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::model::{test_network_on, Network};

    #[test]
    fn a_record_written_for_both_releases_reads_back_in_either_layout() {
        let net = test_network_on(&["10.1.0.0/24", "10.2.0.0/24", "fd00:1::/64"]);
        let Value::Object(mut doc) = serde_json::to_value(&net).unwrap() else {
            panic!("not an object")
        };
        legacy::add_older_keys(&mut doc);
        // What the previous release reads.
        assert_eq!(doc["subnet"], json!("10.1.0.0/24"));
        assert_eq!(doc["gateway"], json!("10.1.0.1"));
        assert_eq!(doc["more_subnets"][0]["subnet"], json!("10.2.0.0/24"));
        assert_eq!(
            (&doc["ipv6"], &doc["subnet6"]),
            (&json!(true), &json!("fd00:1::/64"))
        );
        // What this one reads: the same network, with or without `subnets`.
        let mut both = doc.clone();
        legacy::upgrade(&mut both).unwrap();
        assert_eq!(
            serde_json::from_value::<Network>(Value::Object(both)).unwrap(),
            net
        );
        doc.remove("subnets");
        legacy::upgrade(&mut doc).unwrap();
        assert_eq!(
            serde_json::from_value::<Network>(Value::Object(doc)).unwrap(),
            net
        );
    }

    #[test]
    fn pools_are_typed_views_of_one_list() {
        let mut net = test_network_on(&["10.1.0.0/24", "fd00:1::/64"]);
        assert_eq!(net.pools::<Ipv4Addr>().len(), 1);
        assert_eq!(net.gateway6(), Some("fd00:1::1".parse().unwrap()));
        net.set_pools::<Ipv6Addr>(None);
        assert!(net.ipv4() && !net.ipv6());
        net.set_pools::<Ipv4Addr>(None);
        net.set_pools(Pool::<Ipv6Addr>::of(&crate::model::test_subnet(
            "fd00:2::/64",
        )));
        assert!(!net.ipv4() && net.ipv6());
        // IPv4 first whatever the order of the changes.
        net.set_pools(Pool::<Ipv4Addr>::of(&crate::model::test_subnet(
            "10.3.0.0/24",
        )));
        assert!(net.subnets[0].subnet.is_ipv4());
        assert_eq!(net.prefix_for("10.3.0.9".parse::<Ipv4Addr>().unwrap()), 24);
        assert_eq!(net.prefix_for("10.4.0.9".parse::<Ipv4Addr>().unwrap()), 32);
    }
}
