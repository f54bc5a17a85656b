//! IPv6 of dual-stack networks (`network create --ipv6`): the ULA pool derived from the
//! instance id as Docker derives it from its host id, from which a network without an
//! IPv6 `--subnet` gets a /64. A user's IPv6 subnet is checked by the rules both
//! families share (`pool`); addresses come from `allocate`, as IPv4's do.
use std::net::Ipv6Addr;

use ipnetwork::Ipv6Network;
use sha2::{Digest, Sha256};

use super::{
    invalid,
    pool::{first_host, plan_pool, subnets_taken},
};
use crate::{
    error::NetdError,
    model::{overlap, NetworkSpec, Pool, Traits},
    store::State,
};

/// The size of the automatic subnets handed out of the ULA pool.
pub(super) const AUTO_PREFIX: u8 = 64;

/// This instance's ULA /48, Docker's derivation (RFC 4193 section 3.2.2, loosely): the
/// 40 low bits of the first 8 bytes of SHA-256(instance id) as Global ID after fd00::/8.
/// Stable for as long as the instance id is (it lives in the store).
pub fn ula_base(instance_id: &str) -> Result<Ipv6Network, NetdError> {
    let sha = Sha256::digest(instance_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&sha[..8]);
    let global_id = u64::from_be_bytes(first) & ((1 << 40) - 1);
    let addr = (0xfd_u128 << 120) | (u128::from(global_id) << 80);
    Ipv6Network::new(Ipv6Addr::from(addr), 48)
        .map_err(|e| NetdError::Internal(format!("the ULA pool: {e}")))
}

/// The first /64 of `base` that overlaps none of `taken`.
pub fn next_free_64(base: &Ipv6Network, taken: &[Ipv6Network]) -> Option<Ipv6Network> {
    let count = 1u128 << (AUTO_PREFIX.saturating_sub(base.prefix()));
    let start = u128::from(base.network());
    (0..count)
        .filter_map(|i| Ipv6Network::new(Ipv6Addr::from(start + (i << 64)), AUTO_PREFIX).ok())
        .find(|c| !taken.iter().any(|t| overlap::<Ipv6Addr>(c, t)))
}

/// The IPv6 subnet of `spec` (None without `--ipv6`), or the one error that says what
/// is wrong with it.
pub fn plan(
    spec: &NetworkSpec,
    state: &State,
    driver: &Traits,
) -> Result<Option<Pool<Ipv6Addr>>, NetdError> {
    if !spec.ipv6 {
        // Docker 27 drops IPv6 values silently without --ipv6; netd does not ignore what
        // a user asked for.
        let given = [&spec.subnet6, &spec.gateway6, &spec.ip_range6]
            .into_iter()
            .find_map(|v| v.as_deref());
        return match given {
            Some(v) => Err(invalid(format!(
                "IPv6 value {v} needs --ipv6 (EnableIPv6): netd does not ignore it"
            ))),
            None => Ok(None),
        };
    }
    if !driver.ipv6 {
        return Err(invalid(format!(
            "--ipv6 is not supported on {} networks yet",
            driver.name
        )));
    }
    if !driver.programs && spec.subnet6.is_none() {
        return Err(invalid(format!(
            "a {} network with --ipv6 needs an IPv6 --subnet: its parent's segment's",
            driver.name
        )));
    }
    let taken = subnets_taken::<Ipv6Addr>(state, None);
    if let Some(s) = spec.subnet6.as_deref() {
        let given = |v: &Option<String>| v.as_deref().map(str::to_owned);
        let (g, r) = (given(&spec.gateway6), given(&spec.ip_range6));
        return plan_pool(s, g.as_deref(), r.as_deref(), &taken).map(Some);
    }
    if spec.gateway6.is_some() || spec.ip_range6.is_some() {
        return Err(invalid(
            "an IPv6 --gateway or --ip-range needs an IPv6 --subnet".into(),
        ));
    }
    let base = ula_base(&state.instance_id)?;
    let used: Vec<Ipv6Network> = taken.iter().map(|(_, t)| *t).collect();
    let subnet = next_free_64(&base, &used).ok_or_else(|| {
        NetdError::Conflict(format!("no free IPv6 /64 left in this host's pool {base}"))
    })?;
    Ok(Some(Pool {
        subnet,
        gateway: first_host::<Ipv6Addr>(&subnet)?,
        ip_range: None,
        user: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Network;

    fn bridge() -> &'static Traits {
        crate::model::driver_traits(crate::model::DRIVER_BRIDGE).unwrap()
    }
    use crate::model::{test_attachment, test_container, test_network, Attachment, Container};

    fn spec(subnet6: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: "v6".into(),
            ipv6: true,
            subnet6: subnet6.map(String::from),
            ..Default::default()
        }
    }

    fn state_with(instance_id: &str, nets: Vec<Network>) -> State {
        State {
            instance_id: instance_id.into(),
            networks: nets,
            ..Default::default()
        }
    }

    fn net6(name: &str, subnet6: &str) -> Network {
        let mut n = Network {
            id: format!("{name:x<64}"),
            name: name.into(),
            ..test_network()
        };
        n.subnets.push(crate::model::test_subnet(subnet6));
        n
    }

    fn err(r: Result<Option<Pool<Ipv6Addr>>, NetdError>) -> NetdError {
        r.expect_err("should fail")
    }

    /// The planned IPv6 subnet, which there must be.
    fn planned(s: &NetworkSpec, st: &State) -> Pool<Ipv6Addr> {
        plan(s, st, bridge()).unwrap().expect("an IPv6 subnet")
    }

    fn allocate6(
        st: &State,
        n: &Network,
        want: Option<Ipv6Addr>,
    ) -> Result<Option<Ipv6Addr>, NetdError> {
        super::super::allocate::<Ipv6Addr>(st, n, want)
    }

    #[test]
    fn the_ula_pool_is_dockers_derivation_from_the_instance_id() {
        // sha256("abc") = ba7816bf 8f01cfea ...: the low 40 bits of the first 8 bytes.
        let ula = |id: &str| ula_base(id).unwrap().to_string();
        assert_eq!(ula("abc"), "fdbf:8f01:cfea::/48");
        assert_eq!(ula("netd-test-instance"), "fdc9:ce47:d6a8::/48");
        assert_eq!(ula("abc"), ula("abc"), "stable");
        assert_ne!(ula("abc"), ula("abd"));
    }

    #[test]
    fn without_a_subnet_the_first_free_64_of_the_pool() {
        let st = state_with("abc", vec![]);
        let p = planned(&spec(None), &st);
        assert_eq!(p.subnet, "fdbf:8f01:cfea::/64".parse().unwrap());
        assert_eq!(p.gateway, "fdbf:8f01:cfea::1".parse::<Ipv6Addr>().unwrap());
        assert!(!p.user);
        // Taken /64s (and a user subnet covering one) are skipped.
        let st = state_with(
            "abc",
            vec![
                net6("a", "fdbf:8f01:cfea::/64"),
                net6("b", "fdbf:8f01:cfea:1::/64"),
                net6("c", "fdbf:8f01:cfea:2:8000::/65"),
            ],
        );
        let p = planned(&spec(None), &st);
        assert_eq!(p.subnet, "fdbf:8f01:cfea:3::/64".parse().unwrap());
        // A user subnet covering the whole pool leaves nothing.
        let st = state_with("abc", vec![net6("all", "fdbf:8f01:cfea::/48")]);
        let e = err(plan(&spec(None), &st, bridge()));
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("no free IPv6 /64"), "{e}");
    }

    #[test]
    fn a_user_subnet_with_gateway_and_range() {
        let st = state_with("abc", vec![]);
        let s = NetworkSpec {
            gateway6: Some("2001:db8:1::fe".into()),
            ip_range6: Some("2001:db8:1::100/120".into()),
            ..spec(Some("2001:db8:1::/64"))
        };
        assert_eq!(
            planned(&s, &st),
            Pool {
                subnet: "2001:db8:1::/64".parse().unwrap(),
                gateway: "2001:db8:1::fe".parse().unwrap(),
                ip_range: Some("2001:db8:1::100/120".parse().unwrap()),
                user: true,
            }
        );
        // A /48 is a subnet like any other.
        assert!(plan(&spec(Some("fd12:3456:789a::/48")), &st, bridge()).is_ok());
    }

    #[test]
    fn bad_ipv6_input_names_the_problem() {
        let st = state_with("abc", vec![net6("taken", "fd00:1::/64")]);
        let without_ipv6 = NetworkSpec {
            ipv6: false,
            ..spec(Some("fd00:2::/64"))
        };
        let with = |f: fn(&mut NetworkSpec)| {
            let mut s = spec(Some("fd00:2::/64"));
            f(&mut s);
            s
        };
        let cases: Vec<(NetworkSpec, &str, u16)> = vec![
            (without_ipv6, "needs --ipv6", 400),
            (
                NetworkSpec {
                    ipv6: false,
                    gateway6: Some("fd00:2::1".into()),
                    ..Default::default()
                },
                "fd00:2::1 needs --ipv6",
                400,
            ),
            (
                spec(Some("fd00:1::/80")),
                "overlaps with network taken",
                409,
            ),
            (spec(Some("fd00::/16")), "overlaps with network taken", 409),
            (spec(Some("fd00:2::5/64")), "did you mean fd00:2::/64", 400),
            (spec(Some("10.0.0.0/24")), "not an IPv6 CIDR", 400),
            (spec(Some("fd00:2::/127")), "too small", 400),
            (spec(Some("fe80::/64")), "link-local", 400),
            (spec(Some("ff02::/16")), "multicast", 400),
            (spec(Some("::/0")), "::/8", 400),
            (spec(Some("::ffff:0:0/96")), "IPv4-mapped", 400),
            (
                with(|s| s.gateway6 = Some("fd00:3::1".into())),
                "gateway fd00:3::1 is not a usable address of subnet fd00:2::/64",
                400,
            ),
            (
                with(|s| s.gateway6 = Some("fd00:2::".into())),
                "Subnet-Router anycast",
                400,
            ),
            (
                with(|s| s.gateway6 = Some("10.0.0.1".into())),
                "not an IPv6 address",
                400,
            ),
            (
                with(|s| s.ip_range6 = Some("fd00:3::/120".into())),
                "not inside subnet",
                400,
            ),
            (
                with(|s| s.ip_range6 = Some("fd00:2::/128".into())),
                "holds no usable address",
                400,
            ),
            (
                NetworkSpec {
                    gateway6: Some("fd00:2::1".into()),
                    ..spec(None)
                },
                "needs an IPv6 --subnet",
                400,
            ),
        ];
        for (s, want, status) in cases {
            let e = err(plan(&s, &st, bridge()));
            assert!(e.to_string().contains(want), "{s:?}: {e}");
            assert_eq!(e.status(), status, "{s:?}: {e}");
        }
        let overlay = crate::model::driver_traits(crate::model::DRIVER_OVERLAY).unwrap();
        let e = err(plan(&spec(None), &st, overlay));
        assert!(e.to_string().contains("overlay"), "{e}");
        // Without --ipv6 and without IPv6 values: nothing to do.
        let none = NetworkSpec::default();
        assert_eq!(plan(&none, &st, bridge()).unwrap(), None);
    }

    fn with_container(st: &mut State, net: &Network, ip6: &str) {
        let n = st.containers.len();
        st.containers.push(std::sync::Arc::new(Container {
            attachments: vec![Attachment {
                network: net.id.clone(),
                ip6: Some(ip6.parse().unwrap()),
                ..test_attachment()
            }],
            ..test_container(&format!("c{n}"), &format!("c{n}"))
        }));
    }

    #[test]
    fn addresses_are_handed_out_in_order_from_2() {
        let net = net6("n", "fd00:5::/64");
        let mut st = state_with("abc", vec![net.clone()]);
        let first = allocate6(&st, &net, None).unwrap();
        assert_eq!(first, Some("fd00:5::2".parse().unwrap()));
        with_container(&mut st, &net, "fd00:5::2");
        assert_eq!(
            allocate6(&st, &net, None).unwrap(),
            Some("fd00:5::3".parse().unwrap())
        );
        // From the ip-range when there is one; the gateway inside it is skipped.
        let mut ranged = net.clone();
        ranged.subnets[1].ip_range = Some("fd00:5::/126".parse().unwrap());
        assert_eq!(
            allocate6(&st, &ranged, None).unwrap(),
            Some("fd00:5::3".parse().unwrap())
        );
        with_container(&mut st, &net, "fd00:5::3");
        let e = allocate6(&st, &ranged, None).unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("no free IPv6 address"), "{e}");
        // A network without IPv6 gives none.
        assert_eq!(allocate6(&st, &test_network(), None).unwrap(), None);
    }

    #[test]
    fn ip6_follows_dockers_rules() {
        let net = net6("n", "fd00:5::/64");
        let mut st = state_with("abc", vec![net.clone()]);
        with_container(&mut st, &net, "fd00:5::2");
        let ask = |n: &Network, ip: &str| allocate6(&st, n, Some(ip.parse().unwrap()));
        assert_eq!(
            ask(&net, "fd00:5::99").unwrap(),
            Some("fd00:5::99".parse().unwrap())
        );
        for (n, ip, want, status) in [
            (&net, "fd00:5::2", "already in use", 409),
            (&net, "fd00:5::1", "already in use", 409),
            (&net, "fd00:6::9", "not a usable address", 400),
            (&net, "fd00:5::", "Subnet-Router anycast", 400),
        ] {
            let e = ask(n, ip).unwrap_err();
            assert!(e.to_string().contains(want), "{ip}: {e}");
            assert_eq!(e.status(), status, "{ip}: {e}");
        }
        let mut auto = net.clone();
        auto.subnets[1].user = false;
        let e = ask(&auto, "fd00:5::9").unwrap_err();
        assert!(e.to_string().contains("IPv6 --subnet"), "{e}");
        let e = ask(&test_network(), "fd00:5::9").unwrap_err();
        assert!(e.to_string().contains("without --ipv6"), "{e}");
    }
}
