//! Network validation and address management, kept free of kernel calls so that every
//! rule (Docker's) has a unit test.
use std::{collections::BTreeMap, collections::HashSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

use crate::{
    error::NetdError,
    model::{
        self, Network, NetworkSpec, KNOWN_OPTIONS, OPT_BRIDGE_NAME, OPT_HOST_BINDING, OPT_ICC,
        OPT_MASQUERADE, OPT_MTU,
    },
    store::State,
};

fn invalid(msg: String) -> NetdError {
    NetdError::InvalidArgument(msg)
}

pub fn validate_network_name(name: &str) -> Result<(), NetdError> {
    model::validate_docker_name("network", name)
}

fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Network, NetdError> {
    let n: Ipv4Network = s.parse().map_err(|_| {
        invalid(format!(
            "invalid {what} {s:?}: not an IPv4 CIDR such as 10.1.0.0/24"
        ))
    })?;
    if n.ip() != n.network() {
        return Err(invalid(format!(
            "invalid {what} {s}: not a network address (did you mean {}/{}?)",
            n.network(),
            n.prefix()
        )));
    }
    if n.prefix() > 30 {
        return Err(invalid(format!(
            "invalid {what} {s}: too small for a gateway and a container"
        )));
    }
    Ok(n)
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, NetdError> {
    s.parse()
        .map_err(|_| invalid(format!("invalid {what} {s:?}: not an IPv4 address")))
}

fn parse_bool_opt(key: &str, v: &str) -> Result<bool, NetdError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(format!(
            "invalid value {v:?} for option {key}: use true or false"
        ))),
    }
}

/// Whether `ip` is a usable host address of `subnet` (not its network or broadcast).
fn is_host_addr(subnet: &Ipv4Network, ip: Ipv4Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Address ranges a container subnet may not touch, and why: the kernel treats them
/// specially, so a bridge holding them breaks routing (loopback) or fails outright
/// (multicast), and none of them can carry containers' unicast traffic.
const RESERVED: [(&str, &str); 5] = [
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
    (
        "240.0.0.0/4",
        "reserved, class E and broadcast (240.0.0.0/4)",
    ),
];

/// Checks that `n` (a network address, at most /30: see parse_cidr) can be a container
/// subnet: it touches no reserved range.
pub fn check_subnet(n: &Ipv4Network) -> Result<(), NetdError> {
    for (range, what) in RESERVED {
        let r: Ipv4Network = range.parse().expect("a valid reserved range");
        if model::overlaps(n, &r) {
            return Err(invalid(format!(
                "subnet {n} is not usable for containers: it overlaps {what}"
            )));
        }
    }
    Ok(())
}

/// Docker's `Warning` for a user-chosen subnet that overlaps a route of the host
/// namespace: accepted (the user may know why), but containers then cannot reach what
/// the host reaches through that route.
pub fn route_overlap_warning(n: &Ipv4Network, routes: &[Ipv4Network]) -> Option<String> {
    let clashes: Vec<String> = routes
        .iter()
        .filter(|r| model::overlaps(n, r))
        .map(|r| r.to_string())
        .collect();
    (!clashes.is_empty()).then(|| {
        format!(
            "subnet {n} overlaps the host's route(s) to {}: containers on it cannot reach those addresses through the host",
            clashes.join(", ")
        )
    })
}

/// Turns a `network create` request into a network, or says exactly what is wrong.
/// `routes` are the host namespace's routes (an automatic subnet must avoid them);
/// `links` the names of its interfaces (a bridge name must be free).
pub fn plan_network(
    spec: &NetworkSpec,
    state: &State,
    routes: &[Ipv4Network],
    links: &HashSet<String>,
    bridge_prefix: &str,
    id: String,
    now: u64,
) -> Result<Network, NetdError> {
    validate_network_name(&spec.name)?;
    if state.networks.iter().any(|n| n.name == spec.name) {
        return Err(NetdError::Conflict(format!(
            "network with name {} already exists",
            spec.name
        )));
    }
    match spec.driver.as_deref().unwrap_or(model::DRIVER_BRIDGE) {
        model::DRIVER_BRIDGE => {}
        d @ (model::DRIVER_HOST | model::DRIVER_NULL) => {
            return Err(NetdError::Conflict(format!(
                "only one instance of \"{d}\" network is allowed (the built-in one)"
            )))
        }
        d => {
            return Err(invalid(format!(
                "unsupported network driver {d:?}: netd has only \"bridge\""
            )))
        }
    }
    for k in spec.options.keys() {
        if !KNOWN_OPTIONS.contains(&k.as_str()) {
            return Err(invalid(format!(
                "unsupported network option {k:?} (netd knows {})",
                KNOWN_OPTIONS.join(", ")
            )));
        }
    }
    for k in spec.labels.keys() {
        if k.is_empty() {
            return Err(invalid("invalid label: the key is empty".into()));
        }
    }
    let opt = |k: &str| spec.options.get(k).map(String::as_str);
    let icc = opt(OPT_ICC)
        .map(|v| parse_bool_opt(OPT_ICC, v))
        .transpose()?
        .unwrap_or(true);
    let masquerade = opt(OPT_MASQUERADE)
        .map(|v| parse_bool_opt(OPT_MASQUERADE, v))
        .transpose()?
        .unwrap_or(true);
    let host_binding_ipv4 = opt(OPT_HOST_BINDING)
        .map(|v| parse_ip(OPT_HOST_BINDING, v))
        .transpose()?
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mtu = opt(OPT_MTU)
        .map(|v| match v.parse::<u32>() {
            Ok(m) if (68..=65535).contains(&m) => Ok(m),
            _ => Err(invalid(format!(
                "invalid value {v:?} for option {OPT_MTU}: an MTU from 68 to 65535"
            ))),
        })
        .transpose()?;
    let bridge = match opt(OPT_BRIDGE_NAME) {
        Some(b) => {
            if b.is_empty()
                || b.len() > 15
                || !b
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                return Err(invalid(format!(
                    "invalid bridge name {b:?}: at most 15 of [a-zA-Z0-9_.-]"
                )));
            }
            b.to_string()
        }
        None => format!("{bridge_prefix}{}", &id[..15 - bridge_prefix.len()]),
    };
    if let Some(other) = state.networks.iter().find(|n| n.bridge == bridge) {
        return Err(NetdError::Conflict(format!(
            "bridge name {bridge} is already used by network {}",
            other.name
        )));
    }
    if links.contains(&bridge) {
        return Err(NetdError::Conflict(format!(
            "an interface named {bridge} already exists in the host namespace"
        )));
    }

    let taken: Vec<(String, Ipv4Network)> = state
        .networks
        .iter()
        .filter_map(|n| n.subnet.map(|s| (n.name.clone(), s)))
        .collect();
    let (subnet, user_subnet) = match spec.subnet.as_deref() {
        Some(s) => {
            let n = parse_cidr("subnet", s)?;
            check_subnet(&n)?;
            if let Some((name, other)) = taken.iter().find(|(_, t)| model::overlaps(&n, t)) {
                return Err(NetdError::Conflict(format!(
                    "subnet {n} overlaps with network {name} ({other})"
                )));
            }
            (n, true)
        }
        None => {
            if spec.gateway.is_some() || spec.ip_range.is_some() || !spec.aux_addresses.is_empty() {
                return Err(invalid(
                    "--gateway, --ip-range and --aux-address need --subnet".into(),
                ));
            }
            let mut avoid: Vec<Ipv4Network> = taken.iter().map(|(_, t)| *t).collect();
            avoid.extend_from_slice(routes);
            let n = model::pick_subnet(&avoid).ok_or_else(|| {
                NetdError::Conflict("no free subnet left in the default pools".into())
            })?;
            (n, false)
        }
    };
    let gateway = match spec.gateway.as_deref() {
        Some(g) => {
            let g = parse_ip("gateway", g)?;
            if !is_host_addr(&subnet, g) {
                return Err(invalid(format!(
                    "gateway {g} is not a usable address of subnet {subnet}"
                )));
            }
            g
        }
        None => subnet
            .nth(1)
            .ok_or_else(|| invalid(format!("subnet {subnet} is too small")))?,
    };
    let ip_range = spec
        .ip_range
        .as_deref()
        .map(|r| {
            let r: Ipv4Network = r
                .parse()
                .map_err(|_| invalid(format!("invalid ip-range {r:?}: not an IPv4 CIDR")))?;
            if !(subnet.contains(r.network()) && subnet.contains(r.broadcast())) {
                return Err(invalid(format!(
                    "ip-range {r} is not inside subnet {subnet}"
                )));
            }
            Ok(r)
        })
        .transpose()?;
    let mut aux = BTreeMap::new();
    for (name, ip) in &spec.aux_addresses {
        let ip = parse_ip("aux-address", ip)?;
        if !is_host_addr(&subnet, ip) {
            return Err(invalid(format!(
                "aux-address {name}={ip} is not a usable address of subnet {subnet}"
            )));
        }
        if ip == gateway {
            return Err(NetdError::Conflict(format!(
                "aux-address {name}={ip} is the gateway"
            )));
        }
        if let Some((other, _)) = aux.iter().find(|(_, a)| **a == ip) {
            return Err(NetdError::Conflict(format!(
                "aux-address {name}={ip} is already {other}"
            )));
        }
        aux.insert(name.clone(), ip);
    }
    let net_id = state.next_net_id.max(1);
    Ok(Network {
        id,
        name: spec.name.clone(),
        driver: model::DRIVER_BRIDGE.into(),
        net_id,
        bridge,
        bridge_mac: [0; 6],
        subnet: Some(subnet),
        gateway: Some(gateway),
        ip_range,
        aux_addresses: aux,
        user_subnet,
        internal: spec.internal,
        icc,
        masquerade,
        host_binding_ipv4,
        mtu,
        labels: spec.labels.clone(),
        options: spec.options.clone(),
        builtin: false,
        created: now,
        attachable: spec.attachable,
    })
}

/// Addresses of `net` that are not free: gateway, aux addresses, containers'.
fn used(state: &State, net: &Network) -> HashSet<Ipv4Addr> {
    let mut u: HashSet<Ipv4Addr> = state
        .containers
        .iter()
        .flat_map(|c| c.attachments.iter())
        .filter(|a| a.network == net.id)
        .map(|a| a.ip)
        .collect();
    u.extend(net.gateway);
    u.extend(net.aux_addresses.values().copied());
    u
}

/// An address on `net`: the one asked for (Docker's rules), or the lowest free one in
/// the ip-range (or subnet).
pub fn allocate(
    state: &State,
    net: &Network,
    want: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, NetdError> {
    let subnet = net
        .subnet
        .ok_or_else(|| invalid(format!("network {} has no addresses to give", net.name)))?;
    let used = used(state, net);
    if let Some(ip) = want {
        if !net.user_subnet {
            return Err(invalid(format!(
                "user specified IP address is supported only on networks created with --subnet ({} was not)",
                net.name
            )));
        }
        if !is_host_addr(&subnet, ip) {
            return Err(invalid(format!(
                "address {ip} is not a usable address of {} ({subnet})",
                net.name
            )));
        }
        if used.contains(&ip) {
            return Err(NetdError::Conflict(format!(
                "address {ip} is already in use on network {}",
                net.name
            )));
        }
        return Ok(ip);
    }
    let pool = net.ip_range.unwrap_or(subnet);
    pool.iter()
        .filter(|ip| is_host_addr(&subnet, *ip))
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| {
            NetdError::Conflict(format!("network {} has no free address left", net.name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attachment, Container, ContainerState, NetMode};

    fn spec(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            ..Default::default()
        }
    }

    fn fresh_id() -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        format!(
            "{:010x}{:022x}",
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            0
        )
    }

    fn plan(s: &NetworkSpec, st: &State) -> Result<Network, NetdError> {
        plan_network(s, st, &[], &HashSet::new(), "ndbr-", fresh_id(), 0)
    }

    #[test]
    fn reserved_ranges_are_refused_with_their_reason() {
        for (subnet, reason) in [
            ("127.0.0.0/8", "loopback"),
            ("127.1.0.0/16", "loopback"),
            ("224.0.0.0/24", "multicast"),
            ("240.0.0.0/24", "class E"),
            ("255.255.255.0/24", "broadcast"),
            ("0.0.0.0/8", "this network"),
            ("169.254.0.0/16", "link-local"),
            ("0.0.0.0/1", "this network"),
        ] {
            let e = plan(&with_subnet("n", subnet), &State::default()).unwrap_err();
            assert_eq!(e.status(), 400, "{subnet}");
            assert!(e.to_string().contains(reason), "{subnet}: {e}");
        }
        assert!(plan(&with_subnet("ok", "10.1.0.0/24"), &State::default()).is_ok());
    }

    #[test]
    fn a_subnet_over_a_host_route_is_accepted_with_a_warning() {
        let routes: Vec<Ipv4Network> = vec!["10.199.0.0/24".parse().unwrap()];
        let w = route_overlap_warning(&"10.199.0.0/16".parse().unwrap(), &routes).unwrap();
        assert!(w.contains("10.199.0.0/24"), "{w}");
        assert!(route_overlap_warning(&"10.200.0.0/16".parse().unwrap(), &routes).is_none());
    }

    fn with_subnet(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            subnet: Some(subnet.into()),
            ..spec(name)
        }
    }

    fn err(r: Result<Network, NetdError>) -> String {
        r.expect_err("should fail").to_string()
    }

    #[test]
    fn defaults_and_options() {
        let mut s = with_subnet("a", "10.1.0.0/24");
        s.options.insert(OPT_ICC.into(), "false".into());
        s.options.insert(OPT_MASQUERADE.into(), "false".into());
        s.options
            .insert(OPT_HOST_BINDING.into(), "127.0.0.1".into());
        s.options.insert(OPT_MTU.into(), "1400".into());
        let n = plan(&s, &State::default()).unwrap();
        assert_eq!(n.gateway, Some("10.1.0.1".parse().unwrap()));
        assert!(!n.icc && !n.masquerade && n.user_subnet);
        assert_eq!(n.host_binding_ipv4, Ipv4Addr::LOCALHOST);
        assert_eq!(n.mtu, Some(1400));
        assert!(
            n.bridge.starts_with("ndbr-") && n.bridge.len() == 15,
            "{}",
            n.bridge
        );
    }

    #[test]
    fn bad_networks_name_the_problem() {
        let mut st = State::default();
        st.networks
            .push(plan(&with_subnet("taken", "10.2.0.0/16"), &State::default()).unwrap());
        let cases: Vec<(NetworkSpec, &str)> = vec![
            (
                with_subnet("x", "10.2.3.0/24"),
                "overlaps with network taken",
            ),
            (with_subnet("x", "10.3.0.5/24"), "not a network address"),
            (with_subnet("x", "10.3.0.0/33"), "not an IPv4 CIDR"),
            (
                NetworkSpec {
                    gateway: Some("10.4.1.1".into()),
                    ..with_subnet("x", "10.4.0.0/24")
                },
                "not a usable address",
            ),
            (
                NetworkSpec {
                    gateway: Some("10.4.0.1".into()),
                    ..spec("x")
                },
                "need --subnet",
            ),
            (
                NetworkSpec {
                    ip_range: Some("10.5.0.0/16".into()),
                    ..with_subnet("x", "10.4.0.0/24")
                },
                "not inside subnet",
            ),
            (spec("taken"), "already exists"),
            (spec("bad name"), "invalid network name"),
            (
                NetworkSpec {
                    driver: Some("overlay".into()),
                    ..spec("x")
                },
                "unsupported network driver",
            ),
            (
                NetworkSpec {
                    driver: Some("host".into()),
                    ..spec("x")
                },
                "only one instance",
            ),
            (
                NetworkSpec {
                    options: [("com.example.x".to_string(), "1".to_string())].into(),
                    ..spec("x")
                },
                "unsupported network option \"com.example.x\"",
            ),
            (
                NetworkSpec {
                    options: [(OPT_ICC.to_string(), "maybe".to_string())].into(),
                    ..spec("x")
                },
                "use true or false",
            ),
            (
                NetworkSpec {
                    options: [(OPT_MTU.to_string(), "9".to_string())].into(),
                    ..spec("x")
                },
                "an MTU",
            ),
            (
                NetworkSpec {
                    labels: [(String::new(), "v".to_string())].into(),
                    ..spec("x")
                },
                "key is empty",
            ),
        ];
        for (s, want) in cases {
            let e = err(plan(&s, &st));
            assert!(e.contains(want), "{s:?}: {e}");
        }
        let mut aux = with_subnet("x", "10.6.0.0/24");
        aux.aux_addresses.insert("gw".into(), "10.6.0.1".into());
        assert!(err(plan(&aux, &st)).contains("is the gateway"));
        aux.aux_addresses.clear();
        aux.aux_addresses.insert("far".into(), "10.7.0.1".into());
        assert!(err(plan(&aux, &st)).contains("not a usable address"));
    }

    #[test]
    fn automatic_subnets_skip_networks_and_routes() {
        let mut st = State::default();
        st.networks
            .push(plan(&with_subnet("a", "172.17.0.0/16"), &st).unwrap());
        let routes = vec!["172.18.0.0/16".parse().unwrap()];
        let n = plan_network(
            &spec("b"),
            &st,
            &routes,
            &HashSet::new(),
            "ndbr-",
            fresh_id(),
            0,
        )
        .unwrap();
        assert_eq!(n.subnet, Some("172.19.0.0/16".parse().unwrap()));
        assert!(!n.user_subnet);
    }

    #[test]
    fn allocation_follows_docker_rules() {
        let mut s = with_subnet("a", "10.9.0.0/24");
        s.ip_range = Some("10.9.0.128/25".into());
        s.aux_addresses.insert("router".into(), "10.9.0.129".into());
        let net = plan(&s, &State::default()).unwrap();
        let mut st = State::default();
        st.networks.push(net.clone());
        let first = allocate(&st, &net, None).unwrap();
        assert_eq!(first, "10.9.0.128".parse::<Ipv4Addr>().unwrap());
        st.containers.push(Container {
            id: "c".into(),
            name: "c".into(),
            hostname: None,
            mode: NetMode::Bridge,
            netns: None,
            attachments: vec![Attachment {
                network: net.id.clone(),
                ifname: "eth0".into(),
                ip: first,
                mac: [0; 6],
                veth: "v".into(),
                aliases: vec![],
                host_ifindex: 0,
                requested_ip: None,
            }],
            ports: vec![],
            cmd: vec![],
            state: ContainerState::Running,
            pid: None,
            pid_start: None,
            exit_code: None,
            auto_remove: false,
            origin: Default::default(),
            created: 0,
            started: None,
            finished: None,
        });
        // 10.9.0.129 is an aux address: skipped.
        assert_eq!(
            allocate(&st, &net, None).unwrap(),
            "10.9.0.130".parse::<Ipv4Addr>().unwrap()
        );
        assert!(allocate(&st, &net, Some(first))
            .unwrap_err()
            .to_string()
            .contains("already in use"));
        assert!(allocate(&st, &net, Some("10.9.0.1".parse().unwrap()))
            .unwrap_err()
            .to_string()
            .contains("already in use"));
        assert!(allocate(&st, &net, Some("10.8.0.5".parse().unwrap()))
            .unwrap_err()
            .to_string()
            .contains("not a usable"));
        assert_eq!(
            allocate(&st, &net, Some("10.9.0.5".parse().unwrap())).unwrap(),
            "10.9.0.5".parse::<Ipv4Addr>().unwrap()
        );
        let auto = plan(&spec("auto"), &st).unwrap();
        assert!(allocate(&st, &auto, Some("172.17.0.9".parse().unwrap()))
            .unwrap_err()
            .to_string()
            .contains("--subnet"));
    }
}
