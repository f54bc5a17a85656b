//! Address management: which addresses of a network are free, and Docker's rules for
//! the one a container asks for. Network validation (what `network create` accepts)
//! is in `plan`, the IPv6 side of both in `v6`, the default bridge's IPv6 (the
//! daemon's `--ipv6`, `--fixed-cidr-v6`) in `bridge6`. All stay free of kernel calls so that
//! every rule has a unit test.
mod bridge6;
mod plan;
mod v6;

use std::{collections::HashSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

pub use bridge6::{parse_fixed_cidr_v6, plan_default_bridge};
pub use plan::{check_subnet, plan_network, route_overlap_warning, validate_network_name};
pub use v6::{allocate6, Plan6};

use crate::{error::NetdError, model::Network, store::State};

pub(crate) fn invalid(msg: String) -> NetdError {
    NetdError::InvalidArgument(msg)
}

/// A CIDR `s` given with host bits set (`10.1.0.5/24`), which either family refuses
/// with the network it probably meant.
pub(crate) fn host_bits_set(
    what: &str,
    s: &str,
    network: impl std::fmt::Display,
    prefix: u8,
) -> NetdError {
    invalid(format!(
        "invalid {what} {s}: not a network address (did you mean {network}/{prefix}?)"
    ))
}

/// Whether `ip` is a usable host address of `subnet` (not its network or broadcast).
pub(crate) fn is_host_addr(subnet: &Ipv4Network, ip: Ipv4Addr) -> bool {
    host_addr_problem(subnet, ip).is_none()
}

/// Why `ip` is not a usable host address of `subnet`, if it is not.
pub(crate) fn host_addr_problem(subnet: &Ipv4Network, ip: Ipv4Addr) -> Option<String> {
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

/// Addresses of `net` that are not free: gateway, aux addresses, containers'.
fn used(state: &State, net: &Network) -> HashSet<Ipv4Addr> {
    let mut u: HashSet<Ipv4Addr> = state
        .containers
        .iter()
        .flat_map(|c| c.attachments.iter())
        .filter(|a| a.network == net.id)
        .map(|a| a.ip)
        .collect();
    // Overlay addresses in use on other nodes.
    u.extend(
        state
            .remote
            .iter()
            .filter(|r| r.network == net.id)
            .map(|r| r.ip),
    );
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
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::model::{Attachment, Container, ContainerState, NetMode};
    use crate::model::{NetworkSpec, OPT_HOST_BINDING, OPT_ICC, OPT_MASQUERADE, OPT_MTU};

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
    fn gateway_range_and_aux_addresses_name_what_is_wrong() {
        let st = State::default();
        let with = |gw: Option<&str>, aux: Option<(&str, &str)>, range: Option<&str>| NetworkSpec {
            gateway: gw.map(String::from),
            aux_addresses: aux
                .map(|(k, v)| [(k.to_string(), v.to_string())].into())
                .unwrap_or_default(),
            ip_range: range.map(String::from),
            ..with_subnet("x", "10.4.0.0/24")
        };
        for (s, want) in [
            (
                with(Some("10.4.0.0"), None, None),
                "gateway 10.4.0.0 is the network address of subnet 10.4.0.0/24",
            ),
            (
                with(Some("10.4.0.255"), None, None),
                "gateway 10.4.0.255 is the broadcast address",
            ),
            (
                with(Some("10.5.0.1"), None, None),
                "is not a usable address of subnet",
            ),
            (
                with(None, Some(("a", "10.4.0.255")), None),
                "a=10.4.0.255 is the broadcast address",
            ),
            (
                with(None, Some(("a", "10.4.0.0")), None),
                "a=10.4.0.0 is the network address",
            ),
            (
                with(None, Some(("", "10.4.0.9")), None),
                "the name is empty",
            ),
            (
                with(None, None, Some("10.4.0.5/25")),
                "did you mean 10.4.0.0/25",
            ),
            (
                with(None, None, Some("10.4.0.255/32")),
                "holds no usable address",
            ),
        ] {
            let e = err(plan(&s, &st));
            assert!(e.contains(want), "{s:?}: {e}");
        }
        // A single usable address is a range.
        plan(&with(None, None, Some("10.4.0.7/32")), &st).unwrap();
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
                    driver: Some("macvlan".into()),
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
                ip6: None,
                requested_ip6: None,
            }],
            ports: vec![],
            cmd: vec![],
            state: ContainerState::Running,
            pid: None,
            pid_start: None,
            exit_code: None,
            auto_remove: false,
            origin: Default::default(),
            dns: Default::default(),
            links: Vec::new(),
            created: 0,
            started: None,
            finished: None,
            labels: BTreeMap::new(),
            exposed: Vec::new(),
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
