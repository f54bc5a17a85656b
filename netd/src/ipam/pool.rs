//! A user's subnet of either family, checked by the same rules: parsed without host
//! bits, big enough for a gateway and a container, clear of the ranges the kernel
//! reserves and of other networks' subnets, with a gateway and an ip-range inside it.
//! What differs between the families (reserved ranges, which addresses no host may
//! have) is `Rules` and `IpFamily`.
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::invalid;
use crate::{
    error::NetdError,
    model::{overlap, IpFamily, Pool},
    store::State,
};

/// A family's rules for a container subnet.
pub trait Rules: IpFamily {
    /// A subnet to show in messages.
    const EXAMPLE: &'static str;
    /// The longest prefix that leaves room for a gateway and a container.
    const MAX_PREFIX: u8;
    /// Ranges a container subnet may not touch, and why (the kernel gives them
    /// meanings of their own: a bridge holding them breaks routing or fails outright).
    const RESERVED: &'static [(&'static str, &'static str)];
    fn parse_net(s: &str) -> Option<Self::Net>;
    fn parse_addr(s: &str) -> Option<Self>;
    /// The address `n` was written with (host bits included).
    fn written(n: &Self::Net) -> Self;
}

impl Rules for Ipv4Addr {
    const EXAMPLE: &'static str = "10.1.0.0/24";
    const MAX_PREFIX: u8 = 30;
    const RESERVED: &'static [(&'static str, &'static str)] = &[
        ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        (
            "240.0.0.0/4",
            "reserved, class E and broadcast (240.0.0.0/4)",
        ),
    ];
    fn parse_net(s: &str) -> Option<Ipv4Network> {
        s.parse().ok()
    }
    fn parse_addr(s: &str) -> Option<Self> {
        s.parse().ok()
    }
    fn written(n: &Ipv4Network) -> Self {
        n.ip()
    }
}

impl Rules for Ipv6Addr {
    const EXAMPLE: &'static str = "fd00:1::/64";
    const MAX_PREFIX: u8 = 126;
    const RESERVED: &'static [(&'static str, &'static str)] = &[
        (
            "::/8",
            "the IETF's reserved ::/8 (unspecified, loopback, IPv4-mapped)",
        ),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("ff00::/8", "multicast (ff00::/8)"),
    ];
    fn parse_net(s: &str) -> Option<Ipv6Network> {
        s.parse().ok()
    }
    fn parse_addr(s: &str) -> Option<Self> {
        s.parse().ok()
    }
    fn written(n: &Ipv6Network) -> Self {
        n.ip()
    }
}

/// A CIDR of family `A` written as a network address (`what` names it in errors).
pub fn parse_cidr<A: Rules>(what: &str, s: &str) -> Result<A::Net, NetdError> {
    let n = A::parse_net(s).ok_or_else(|| {
        invalid(format!(
            "invalid {what} {s:?}: not an {} CIDR such as {}",
            A::NAME,
            A::EXAMPLE
        ))
    })?;
    if A::written(&n) != A::first(&n) {
        return Err(super::host_bits_set(what, s, A::first(&n), A::prefix(&n)));
    }
    Ok(n)
}

pub fn parse_ip<A: Rules>(what: &str, s: &str) -> Result<A, NetdError> {
    A::parse_addr(s)
        .ok_or_else(|| invalid(format!("invalid {what} {s:?}: not an {} address", A::NAME)))
}

/// A container subnet the user gave as `what`: a network address, room for a gateway
/// and a container, no reserved range.
pub fn parse_subnet<A: Rules>(what: &str, s: &str) -> Result<A::Net, NetdError> {
    let n = parse_cidr::<A>(what, s)?;
    if A::prefix(&n) > A::MAX_PREFIX {
        return Err(invalid(format!(
            "invalid {what} {s}: too small for a gateway and a container"
        )));
    }
    check_subnet::<A>(&n)?;
    Ok(n)
}

/// `n` touches none of the family's reserved ranges.
pub fn check_subnet<A: Rules>(n: &A::Net) -> Result<(), NetdError> {
    for (range, what) in A::RESERVED {
        let r = A::parse_net(range)
            .ok_or_else(|| NetdError::Internal(format!("reserved range {range}")))?;
        if overlap::<A>(n, &r) {
            return Err(invalid(format!(
                "subnet {n} is not usable for containers: it overlaps {what}"
            )));
        }
    }
    Ok(())
}

/// Every network's subnets of family `A`, by network name (except the network `skip`).
pub fn subnets_taken<A: IpFamily>(state: &State, skip: Option<&str>) -> Vec<(String, A::Net)> {
    state
        .networks
        .iter()
        .filter(|n| Some(n.id.as_str()) != skip)
        .flat_map(|n| {
            n.pools::<A>()
                .into_iter()
                .map(|p| (n.name.clone(), p.subnet))
        })
        .collect()
}

/// The conflict of `n` with another network's subnet, if there is one.
pub fn check_free<A: IpFamily>(
    what: &str,
    n: &A::Net,
    taken: &[(String, A::Net)],
) -> Result<(), NetdError> {
    match taken.iter().find(|(_, t)| overlap::<A>(n, t)) {
        Some((name, other)) => Err(NetdError::Conflict(format!(
            "{what} {n} overlaps with network {name} ({other})"
        ))),
        None => Ok(()),
    }
}

/// A user's subnet with its gateway (default: its first host address) and ip-range.
pub fn plan_pool<A: Rules>(
    subnet: &str,
    gateway: Option<&str>,
    ip_range: Option<&str>,
    taken: &[(String, A::Net)],
) -> Result<Pool<A>, NetdError> {
    let subnet = parse_subnet::<A>("subnet", subnet)?;
    check_free::<A>("subnet", &subnet, taken)?;
    let gateway = match gateway {
        Some(g) => {
            let g = parse_ip::<A>("gateway", g)?;
            if let Some(why) = A::host_problem(&subnet, g) {
                return Err(invalid(format!("gateway {g} {why}")));
            }
            g
        }
        None => first_host::<A>(&subnet)?,
    };
    let ip_range = ip_range.map(|r| plan_range::<A>(r, &subnet)).transpose()?;
    Ok(Pool {
        subnet,
        gateway,
        ip_range,
        user: true,
    })
}

/// The first address of `subnet` a host may have: the default gateway.
pub fn first_host<A: IpFamily>(subnet: &A::Net) -> Result<A, NetdError> {
    let ip = A::from_bits(A::first(subnet).bits() + 1);
    match A::host_problem(subnet, ip) {
        None => Ok(ip),
        Some(_) => Err(invalid(format!("subnet {subnet} is too small"))),
    }
}

/// `--ip-range`: inside the subnet, holding a usable address.
pub fn plan_range<A: Rules>(r: &str, subnet: &A::Net) -> Result<A::Net, NetdError> {
    let r = parse_cidr::<A>("ip-range", r)?;
    if !(A::contains(subnet, A::first(&r)) && A::contains(subnet, A::last(&r))) {
        return Err(invalid(format!(
            "ip-range {r} is not inside subnet {subnet}"
        )));
    }
    // A range at the subnet's edge may hold only addresses no host can have (an IPv4
    // /31 at the network or broadcast address): every container would then fail with
    // "no free address".
    let usable = (A::first(&r).bits()..=A::last(&r).bits())
        .take(4)
        .any(|b| A::host_problem(subnet, A::from_bits(b)).is_none());
    if !usable {
        return Err(invalid(format!(
            "ip-range {r} holds no usable address of subnet {subnet}"
        )));
    }
    Ok(r)
}
