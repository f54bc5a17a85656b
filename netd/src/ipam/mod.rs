//! Address management: which addresses of a network are free, and Docker's rules for
//! the one a container asks for. Network validation (what `network create` accepts)
//! is in `plan`, the IPv6 side of both in `v6`, the default bridge's IPv6 (the
//! daemon's `--ipv6`, `--fixed-cidr-v6`) in `bridge6`. All stay free of kernel calls so that
//! every rule has a unit test.
mod bridge6;
mod macvlan;
mod plan;
mod pool;
mod v6;

use std::collections::HashSet;

pub use bridge6::{parse_fixed_cidr_v6, plan_default_bridge};
pub use plan::{plan_network, route_overlap_warning, unused_ipam_options, validate_network_name};
pub use v6::ula_base;

use crate::{
    error::NetdError,
    model::{IpFamily, Network, Pool},
    store::State,
};

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

/// Addresses of family `A` on `net` that are not free: gateways, aux addresses,
/// containers', and overlay addresses in use on other nodes.
fn used<A: IpFamily>(state: &State, net: &Network) -> HashSet<A> {
    let containers = state
        .addresses_on(&net.id)
        .into_iter()
        .filter_map(A::of_addr);
    let remote = state
        .remote
        .iter()
        .filter(|r| r.network == net.id)
        .filter_map(|r| A::of_addr(r.ip.into()));
    let aux = net
        .aux_addresses
        .values()
        .filter_map(|ip| A::of_addr((*ip).into()));
    let gateways = net.pools::<A>().into_iter().map(|p| p.gateway);
    containers
        .chain(remote)
        .chain(aux)
        .chain(gateways)
        .collect()
}

/// The address of family `A` of a new attachment to `net`: None on a network without
/// that family; the one asked for (Docker's rules); or a free one from the first subnet
/// with room (its ip-range, or the whole subnet): the lowest, or with serial allocation
/// the next after the last one handed out.
pub fn allocate<A: IpFamily>(
    state: &State,
    net: &Network,
    want: Option<A>,
) -> Result<Option<A>, NetdError> {
    let pools = net.pools::<A>();
    if pools.is_empty() {
        return match want {
            Some(ip) => Err(invalid(format!(
                "{} {ip}: network {} has no {} ({})",
                A::FLAG,
                net.name,
                A::NAME,
                A::ABSENT
            ))),
            None => Ok(None),
        };
    }
    let used = used::<A>(state, net);
    if let Some(ip) = want {
        return check_wanted(net, &pools, &used, ip).map(Some);
    }
    // Every automatic address in order, one pool after the other. Lazy: a /64 is
    // walked only as far as the first free address.
    let ring = pools.iter().flat_map(|p| {
        let subnet = p.subnet;
        let range = p.range();
        (A::first(&range).bits()..=A::last(&range).bits())
            .map(A::from_bits)
            .filter(move |ip| A::host_problem(&subnet, *ip).is_none())
    });
    let free = |ip: &A| !used.contains(ip);
    let key = format!("{}/{}", net.id, A::NAME);
    let mut cursor = state
        .ipam_cursor
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let last = cursor.get(&key).and_then(|ip| A::of_addr(*ip));
    let found = match last.filter(|_| net.serial_ipam()) {
        Some(last) => {
            let after = ring.clone().skip_while(|ip| *ip != last).skip(1);
            after.chain(ring).find(free)
        }
        None => ring.clone().find(free),
    };
    let ip = found.ok_or_else(|| {
        NetdError::Conflict(format!(
            "network {} has no free {} address left",
            net.name,
            A::NAME
        ))
    })?;
    if net.serial_ipam() {
        cursor.insert(key, ip.into());
    }
    Ok(Some(ip))
}

/// Docker's rules for a static address: a network whose subnets of that family the user
/// chose, an address of one of them that no one holds.
fn check_wanted<A: IpFamily>(
    net: &Network,
    pools: &[Pool<A>],
    used: &HashSet<A>,
    ip: A,
) -> Result<A, NetdError> {
    if !pools[0].user {
        return Err(invalid(format!(
            "{} ({} was not)",
            A::STATIC_NEEDS,
            net.name
        )));
    }
    let Some(pool) = pools.iter().find(|p| A::contains(&p.subnet, ip)) else {
        let subnets: Vec<String> = pools.iter().map(|p| p.subnet.to_string()).collect();
        return Err(invalid(format!(
            "address {ip} is not a usable address of {} ({})",
            net.name,
            subnets.join(", ")
        )));
    };
    if let Some(why) = A::host_problem(&pool.subnet, ip) {
        return Err(invalid(format!("address {ip} {why} ({})", net.name)));
    }
    if used.contains(&ip) {
        return Err(NetdError::Conflict(format!(
            "address {ip} is already in use on network {}",
            net.name
        )));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, HashSet},
        net::Ipv4Addr,
    };

    use ipnetwork::Ipv4Network;

    use super::*;
    use crate::model::{Attachment, Container, ContainerState, NetMode};
    use crate::model::{NetworkSpec, OPT_HOST_BINDING, OPT_ICC, OPT_MASQUERADE, OPT_MTU};

    /// An IPv4 address of `net`, which has IPv4.
    fn allocate(st: &State, net: &Network, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, NetdError> {
        super::allocate::<Ipv4Addr>(st, net, want).map(|ip| ip.expect("an IPv4 network"))
    }

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
        assert_eq!(n.gateway4(), Some("10.1.0.1".parse().unwrap()));
        assert!(!n.icc && !n.masquerade && n.subnets[0].user);
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
                    driver: Some("ipvlan".into()),
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
        assert_eq!(n.subnet4(), Some("172.19.0.0/16".parse().unwrap()));
        assert!(!n.subnets[0].user);
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
        st.containers.push(std::sync::Arc::new(Container {
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
                link_local_ips: Vec::new(),
                ..crate::model::test_attachment()
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
            config: Default::default(),
            created: 0,
            started: None,
            finished: None,
            labels: BTreeMap::new(),
            exposed: Vec::new(),
        }));
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

    fn overlay_spec() -> NetworkSpec {
        NetworkSpec {
            driver: Some("overlay".into()),
            subnet: Some("192.168.10.0/25".into()),
            gateway: Some("192.168.10.100".into()),
            more_subnets: vec![crate::model::PoolSpec {
                subnet: "192.168.20.0/25".into(),
                gateway: Some("192.168.20.100".into()),
                ip_range: None,
            }],
            aux_addresses: [
                ("my-router".to_string(), "192.168.10.5".to_string()),
                ("my-nas".to_string(), "192.168.20.6".to_string()),
            ]
            .into(),
            ..spec("multi")
        }
    }

    fn with_attachment(st: &mut State, net: &Network, ip: Ipv4Addr) {
        let mut c = crate::model::test_container(&format!("{ip}"), &format!("c{ip}"));
        c.attachments.push(Attachment {
            network: net.id.clone(),
            ip,
            ..crate::model::test_attachment()
        });
        st.containers.push(c.into());
    }

    /// Docker's overlay example: addresses come from the first subnet with room, a
    /// static one from any; gateways and aux addresses are skipped in each.
    #[test]
    fn several_subnets_fill_in_order_and_take_static_addresses_in_any() {
        let net = plan(&overlay_spec(), &State::default()).unwrap();
        assert_eq!(net.pools::<Ipv4Addr>().len(), 2);
        assert_eq!(
            net.gateway_for("192.168.20.9".parse::<Ipv4Addr>().unwrap()),
            Some("192.168.20.100".parse().unwrap())
        );
        assert_eq!(
            net.prefix_for("192.168.20.9".parse::<Ipv4Addr>().unwrap()),
            25
        );
        let mut st = State::default();
        st.networks.push(net.clone());
        // Fill the first subnet: 126 hosts less its gateway and aux address.
        let mut n = 0;
        loop {
            let ip = allocate(&st, &net, None).unwrap();
            if !"192.168.10.0/25"
                .parse::<Ipv4Network>()
                .unwrap()
                .contains(ip)
            {
                assert_eq!(
                    ip,
                    "192.168.20.1".parse::<Ipv4Addr>().unwrap(),
                    "then the second"
                );
                break;
            }
            assert!(
                ip != "192.168.10.100".parse::<Ipv4Addr>().unwrap()
                    && ip != "192.168.10.5".parse::<Ipv4Addr>().unwrap()
            );
            with_attachment(&mut st, &net, ip);
            n += 1;
        }
        assert_eq!(n, 124);
        let want: Ipv4Addr = "192.168.20.50".parse().unwrap();
        assert_eq!(allocate(&st, &net, Some(want)).unwrap(), want);
        for (bad, why) in [
            ("192.168.20.6", "already in use"),
            ("192.168.20.100", "already in use"),
            ("192.168.30.1", "192.168.10.0/25, 192.168.20.0/25"),
        ] {
            let e = allocate(&st, &net, Some(bad.parse().unwrap()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn several_subnets_are_for_overlay_networks_and_checked_each() {
        let mut bridge = overlay_spec();
        bridge.driver = None;
        let e = err(plan(&bridge, &State::default()));
        assert!(
            e.contains("--subnet given 2 times for IPv4: the bridge driver takes one"),
            "{e}"
        );
        let mut s = overlay_spec();
        s.more_subnets[0].subnet = "192.168.10.64/26".into();
        assert!(err(plan(&s, &State::default())).contains("overlaps"));
        let mut s = overlay_spec();
        s.more_subnets[0].gateway = Some("192.168.10.1".into());
        assert!(err(plan(&s, &State::default()))
            .contains("gateway 192.168.10.1 is not a usable address of subnet 192.168.20.0/25"));
        let mut s = overlay_spec();
        s.aux_addresses.insert("far".into(), "192.168.30.1".into());
        assert!(err(plan(&s, &State::default())).contains("aux-address far=192.168.30.1"));
        let mut s = overlay_spec();
        s.aux_addresses
            .insert("gw2".into(), "192.168.20.100".into());
        assert!(err(plan(&s, &State::default())).contains("is the gateway"));
    }

    #[test]
    fn serial_allocation_goes_on_after_the_last_address() {
        let mut s = with_subnet("ser", "10.9.0.0/29");
        s.ipam_options
            .insert(crate::model::IPAM_SERIAL.into(), "true".into());
        let net = plan(&s, &State::default()).unwrap();
        assert!(net.serial_ipam());
        let mut st = State::default();
        st.networks.push(net.clone());
        let a = allocate(&st, &net, None).unwrap();
        with_attachment(&mut st, &net, a);
        let b = allocate(&st, &net, None).unwrap();
        assert_eq!((a.octets()[3], b.octets()[3]), (2, 3));
        st.containers.retain(|c| c.attachments[0].ip != a);
        // .2 is free again, but the next is .4; then .5, .6, and round to .2.
        assert_eq!(allocate(&st, &net, None).unwrap().octets()[3], 4);
        assert_eq!(allocate(&st, &net, None).unwrap().octets()[3], 5);
        assert_eq!(allocate(&st, &net, None).unwrap().octets()[3], 6);
        assert_eq!(allocate(&st, &net, None).unwrap().octets()[3], 2);
        let mut bad = with_subnet("x", "10.8.0.0/24");
        bad.ipam_options.insert("foo".into(), "bar".into());
        let kept = plan(&bad, &State::default()).expect("kept, as Docker keeps it");
        assert_eq!(
            kept.ipam_options.get("foo").map(String::as_str),
            Some("bar")
        );
        let w = unused_ipam_options(&kept).expect("a warning");
        assert!(
            w.contains("--ipam-opt foo") && w.contains("without effect"),
            "{w}"
        );
    }
}
