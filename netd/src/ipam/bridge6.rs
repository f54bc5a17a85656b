//! The IPv6 side of the default `bridge` network, from the daemon's flags as dockerd's:
//! `--ipv6` makes it dual stack, `--fixed-cidr-v6` gives its subnet (else a /64 of this
//! host's ULA pool, as Docker 27 does). Kernel-free, like the rest of `ipam`.
use std::net::Ipv6Addr;

use ipnetwork::Ipv6Network;

use super::{
    pool::{check_free, first_host, parse_subnet, subnets_taken},
    v6::{next_free_64, ula_base, AUTO_PREFIX},
};
use crate::{
    error::NetdError,
    model::{overlap, Pool},
    store::State,
};

/// `netd daemon --fixed-cidr-v6 CIDR`, by the rules of a user's IPv6 `--subnet`.
pub fn parse_fixed_cidr_v6(s: &str) -> Result<Ipv6Network, NetdError> {
    parse_subnet::<Ipv6Addr>("--fixed-cidr-v6", s)
}

/// The IPv6 side of the default bridge (network `bridge_id`) as the flags want it: none
/// without `ipv6`; `fixed` as its subnet; else a /64 of the ULA pool, the one it has
/// already if it has one there, so that a restart with the same flags keeps its
/// addresses. The gateway is the subnet's ::1; a static `--ip6` stays for user-defined
/// networks, as Docker's `--ip` on the default bridge.
pub fn plan_default_bridge(
    state: &State,
    bridge_id: &str,
    ipv6: bool,
    fixed: Option<Ipv6Network>,
) -> Result<Option<Pool<Ipv6Addr>>, NetdError> {
    if !ipv6 {
        return Ok(None);
    }
    let taken = subnets_taken::<Ipv6Addr>(state, Some(bridge_id));
    let subnet = match fixed {
        Some(n) => {
            check_free::<Ipv6Addr>("--fixed-cidr-v6", &n, &taken)?;
            n
        }
        None => {
            let base = ula_base(&state.instance_id)?;
            let used: Vec<Ipv6Network> = taken.iter().map(|(_, t)| *t).collect();
            let kept = state
                .networks
                .iter()
                .find(|n| n.id == bridge_id)
                .and_then(|n| n.subnet6())
                .filter(|s| {
                    s.prefix() == AUTO_PREFIX
                        && base.contains(s.network())
                        && !used.iter().any(|t| overlap::<Ipv6Addr>(s, t))
                });
            match kept {
                Some(s) => s,
                None => next_free_64(&base, &used).ok_or_else(|| {
                    NetdError::Conflict(format!(
                        "no free IPv6 /64 left in this host's pool {base} for the default bridge"
                    ))
                })?,
            }
        }
    };
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
    use crate::model::{test_network, Network};

    fn net(id: &str, name: &str, subnet6: Option<&str>) -> Network {
        let mut n = Network {
            id: id.into(),
            name: name.into(),
            ..test_network()
        };
        n.subnets.extend(subnet6.map(crate::model::test_subnet));
        n
    }

    fn state(nets: Vec<Network>) -> State {
        State {
            instance_id: "abc".into(),
            networks: nets,
            ..Default::default()
        }
    }

    #[test]
    fn fixed_cidr_v6_is_checked_like_a_subnet() {
        assert_eq!(
            parse_fixed_cidr_v6("fd00:dead:beef::/64")
                .unwrap()
                .to_string(),
            "fd00:dead:beef::/64"
        );
        let e = parse_fixed_cidr_v6("fd00:dead:beef::1/64").unwrap_err();
        assert!(
            e.to_string().contains("did you mean fd00:dead:beef::/64"),
            "{e}"
        );
        for bad in ["10.0.0.0/8", "fe80::/64", "ff02::/16", "fd00::/127", "nope"] {
            let e = parse_fixed_cidr_v6(bad).unwrap_err();
            assert!(matches!(e, NetdError::InvalidArgument(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn the_default_bridge_follows_the_flags() {
        let st = state(vec![net("br", "bridge", None)]);
        assert_eq!(plan_default_bridge(&st, "br", false, None).unwrap(), None);
        let fixed: Ipv6Network = "fd00:dead:beef::/64".parse().unwrap();
        let p = plan_default_bridge(&st, "br", true, Some(fixed))
            .unwrap()
            .unwrap();
        assert_eq!(p.subnet, fixed);
        assert_eq!(p.gateway, "fd00:dead:beef::1".parse::<Ipv6Addr>().unwrap());
        assert!(!p.user && p.ip_range.is_none());
        // Without --fixed-cidr-v6: the first free /64 of the ULA pool (as for user
        // networks), skipping other networks' subnets.
        let st = state(vec![
            net("br", "bridge", None),
            net("u", "user", Some("fdbf:8f01:cfea::/64")),
        ]);
        let p = plan_default_bridge(&st, "br", true, None).unwrap().unwrap();
        assert_eq!(p.subnet, "fdbf:8f01:cfea:1::/64".parse().unwrap());
        // A fixed subnet another network has is a conflict naming it.
        let e = plan_default_bridge(
            &st,
            "br",
            true,
            Some("fdbf:8f01:cfea::/48".parse().unwrap()),
        )
        .unwrap_err();
        assert!(
            matches!(&e, NetdError::Conflict(m) if m.contains("network user")),
            "{e}"
        );
    }

    #[test]
    fn a_pool_subnet_the_bridge_has_is_kept_and_its_own_subnet_is_no_conflict() {
        // The bridge got ...:2::/64 when ::/64 was taken; that network is gone now.
        let st = state(vec![net("br", "bridge", Some("fdbf:8f01:cfea:2::/64"))]);
        let p = plan_default_bridge(&st, "br", true, None).unwrap().unwrap();
        assert_eq!(p.subnet, "fdbf:8f01:cfea:2::/64".parse().unwrap());
        // Its own fixed subnet again: the same plan, no conflict with itself.
        let st = state(vec![net("br", "bridge", Some("fd00:dead:beef::/64"))]);
        let fixed = "fd00:dead:beef::/64".parse().unwrap();
        let p = plan_default_bridge(&st, "br", true, Some(fixed))
            .unwrap()
            .unwrap();
        assert_eq!(p.subnet, fixed);
        // A fixed subnet dropped from the flags: back to the pool.
        let p = plan_default_bridge(&st, "br", true, None).unwrap().unwrap();
        assert_eq!(p.subnet, "fdbf:8f01:cfea::/64".parse().unwrap());
    }
}
