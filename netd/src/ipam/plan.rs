//! `network create`: a request checked against Docker's rules (and the ranges no
//! container network may use), turned into a network, or one error naming the problem.
use std::{collections::BTreeMap, collections::HashSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

use super::{
    invalid,
    pool::{first_host, parse_ip, plan_pool, subnets_taken},
};
use crate::{
    error::NetdError,
    model::{
        self, IpFamily, Network, NetworkSpec, Plumbing, Pool, Subnet, Traits, IPAM_OPTIONS,
        IPAM_SERIAL, OPT_BRIDGE_NAME, OPT_HOST_BINDING, OPT_ICC, OPT_MASQUERADE, OPT_MTU,
    },
    store::State,
};

pub fn validate_network_name(name: &str) -> Result<(), NetdError> {
    model::validate_docker_name("network", name)
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
    let driver = check_request(spec, state)?;
    let opt = |k: &str| spec.options.get(k).map(String::as_str);
    let icc = opt(OPT_ICC)
        .map(|v| parse_bool_opt(OPT_ICC, v))
        .transpose()?
        .unwrap_or(true);
    let masquerade = opt(OPT_MASQUERADE)
        .map(|v| parse_bool_opt(OPT_MASQUERADE, v))
        .transpose()?
        .unwrap_or(true)
        && driver.programs;
    let host_binding_ipv4 = opt(OPT_HOST_BINDING)
        .map(|v| parse_ip::<Ipv4Addr>(OPT_HOST_BINDING, v))
        .transpose()?
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    model::check_gateway_options(&spec.options, spec.internal)?;
    let mtu = mtu_of(opt(OPT_MTU), driver)?;
    let bridge = match driver.plumbing {
        Plumbing::Macvlan => super::macvlan::own_link(spec, state, links)?,
        _ if driver.bridge => bridge_name(opt(OPT_BRIDGE_NAME), state, links, bridge_prefix, &id)?,
        _ => String::new(),
    };
    let (pools, aux) = if spec.ipv4 == Some(false) {
        check_ipv6_only(spec, driver)?;
        (Vec::new(), Default::default())
    } else {
        plan_pools(spec, state, routes, driver)?
    };
    let ipam_options = check_ipam_options(&spec.ipam_options)?;
    let v6 = super::v6::plan(spec, state, driver)?;
    let net_id = state.next_net_id.max(1);
    Ok(Network {
        id,
        name: spec.name.clone(),
        driver: driver.name.into(),
        net_id,
        bridge,
        bridge_mac: [0; 6],
        subnets: pools
            .into_iter()
            .map(Subnet::from)
            .chain(v6.map(Subnet::from))
            .collect(),
        aux_addresses: aux,
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
        vni: 0,
        ipam_options,
    })
}

/// An IPv6-only network (`--ipv4=false`): it needs IPv6, takes no IPv4 values, and only
/// the bridge driver makes one.
fn check_ipv6_only(spec: &NetworkSpec, driver: &Traits) -> Result<(), NetdError> {
    if !spec.ipv6 {
        return Err(invalid(
            "--ipv4=false needs --ipv6: a network needs at least one address family".into(),
        ));
    }
    let v4_values = spec.subnet.is_some()
        || spec.gateway.is_some()
        || spec.ip_range.is_some()
        || !spec.aux_addresses.is_empty()
        || !spec.more_subnets.is_empty();
    if v4_values {
        return Err(invalid(
            "--ipv4=false takes no IPv4 --subnet, --gateway, --ip-range or --aux-address".into(),
        ));
    }
    if driver.plumbing != Plumbing::Bridge {
        return Err(invalid(format!(
            "--ipv4=false: the {} driver makes no IPv6-only networks (bridge does)",
            driver.name
        )));
    }
    Ok(())
}

/// The request's name, driver, option keys and labels, checked; the driver's traits.
fn check_request(spec: &NetworkSpec, state: &State) -> Result<&'static Traits, NetdError> {
    validate_network_name(&spec.name)?;
    if state.networks.iter().any(|n| n.name == spec.name) {
        return Err(NetdError::Conflict(format!(
            "network with name {} already exists",
            spec.name
        )));
    }
    let driver = spec.driver.as_deref().unwrap_or(model::DRIVER_BRIDGE);
    let traits = match model::driver_traits(driver) {
        Some(t) if t.creatable => t,
        Some(_) => {
            return Err(NetdError::Conflict(format!(
                "only one instance of \"{driver}\" network is allowed (the built-in one)"
            )))
        }
        None => {
            let names: Vec<String> = model::creatable_drivers()
                .iter()
                .map(|d| format!("{d:?}"))
                .collect();
            return Err(invalid(format!(
                "unsupported network driver {driver:?}: netd has {}",
                names.join(" and ")
            )));
        }
    };
    for k in spec.options.keys() {
        if !traits.options.contains(&k.as_str()) {
            return Err(invalid(format!(
                "unsupported network option {k:?} for driver {} (netd knows {})",
                traits.name,
                traits.options.join(", ")
            )));
        }
    }
    for k in spec.labels.keys() {
        if k.is_empty() {
            return Err(invalid("invalid label: the key is empty".into()));
        }
    }
    Ok(traits)
}

/// `com.docker.network.driver.mtu`, or the driver's default.
fn mtu_of(given: Option<&str>, driver: &Traits) -> Result<Option<u32>, NetdError> {
    let given = given
        .map(|v| match v.parse::<u32>() {
            Ok(m) if (68..=65535).contains(&m) => Ok(m),
            _ => Err(invalid(format!(
                "invalid value {v:?} for option {OPT_MTU}: an MTU from 68 to 65535"
            ))),
        })
        .transpose()?;
    Ok(given.or(driver.default_mtu))
}

/// The network's bridge: the name asked for (Linux's rules) or one made from the id,
/// used by no other network and by no interface of the host namespace.
fn bridge_name(
    asked: Option<&str>,
    state: &State,
    links: &HashSet<String>,
    bridge_prefix: &str,
    id: &str,
) -> Result<String, NetdError> {
    // Overlay networks get a bridge on every node too, for their containers there; the
    // node's one VXLAN device carries them to the others'.
    let bridge = match asked {
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
    if let Some(other) = state
        .networks
        .iter()
        .find(|n| !bridge.is_empty() && n.bridge == bridge)
    {
        return Err(NetdError::Conflict(format!(
            "bridge name {bridge} is already used by network {}",
            other.name
        )));
    }
    if !bridge.is_empty() && links.contains(&bridge) {
        return Err(NetdError::Conflict(format!(
            "an interface named {bridge} already exists in the host namespace"
        )));
    }
    Ok(bridge)
}

/// `--ipam-opt`s: netd's IPAM is Docker's default, whose one option is serial
/// allocation (`IPAM_SERIAL`, true or false, checked). Others are kept as given and
/// shown by inspect, as Docker does, but have no effect: `unused_ipam_options` names
/// them for the create's warning (Docker ignores them without a word).
fn check_ipam_options(
    opts: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, NetdError> {
    opts.iter()
        .map(|(k, v)| {
            if IPAM_OPTIONS.contains(&k.as_str()) {
                parse_bool_opt(k, v)?;
                Ok((k.clone(), matches!(v.as_str(), "true" | "1").to_string()))
            } else {
                Ok((k.clone(), v.clone()))
            }
        })
        .collect()
}

/// Docker's `Warning` for `--ipam-opt`s the default IPAM driver does not use.
pub fn unused_ipam_options(net: &Network) -> Option<String> {
    let unused: Vec<&str> = net
        .ipam_options
        .keys()
        .map(String::as_str)
        .filter(|k| !IPAM_OPTIONS.contains(k))
        .collect();
    (!unused.is_empty()).then(|| {
        format!(
            "the default IPAM driver does not use --ipam-opt {}: kept (inspect shows it) without effect; it takes {IPAM_SERIAL}=true|false",
            unused.join(", ")
        )
    })
}

/// A network's IPv4 addressing as planned: its subnets (each says whether the user
/// chose it), its aux addresses.
type Pools = (Vec<Pool<Ipv4Addr>>, BTreeMap<String, Ipv4Addr>);

/// The network's IPv4 subnets (the first from `subnet`, `gateway`, `ip_range`, then
/// `more_subnets`, which only overlay networks take, as in Docker), whether the user
/// chose them, and the aux addresses, each in one of them.
fn plan_pools(
    spec: &NetworkSpec,
    state: &State,
    routes: &[Ipv4Network],
    driver: &Traits,
) -> Result<Pools, NetdError> {
    if !spec.more_subnets.is_empty() && !driver.many_subnets {
        return Err(invalid(format!(
            "--subnet given {} times for IPv4: the {} driver takes one IPv4 subnet (several are for -d overlay)",
            spec.more_subnets.len() + 1,
            driver.name
        )));
    }
    let taken = subnets_taken::<Ipv4Addr>(state, None);
    let mut pools: Vec<Pool<Ipv4Addr>> = Vec::new();
    let first = match spec.subnet.as_deref() {
        Some(s) => plan_pool(s, spec.gateway.as_deref(), spec.ip_range.as_deref(), &taken)?,
        None => {
            if spec.gateway.is_some() || spec.ip_range.is_some() || !spec.aux_addresses.is_empty() {
                return Err(invalid(
                    "--gateway, --ip-range and --aux-address need --subnet".into(),
                ));
            }
            let mut avoid: Vec<Ipv4Network> = taken.iter().map(|(_, t)| *t).collect();
            avoid.extend_from_slice(routes);
            let subnet = model::pick_subnet(&avoid).ok_or_else(|| {
                NetdError::Conflict("no free subnet left in the default pools".into())
            })?;
            Pool {
                subnet,
                gateway: first_host::<Ipv4Addr>(&subnet)?,
                ip_range: None,
                user: false,
            }
        }
    };
    pools.push(first);
    for p in &spec.more_subnets {
        let mut taken = taken.clone();
        taken.extend(pools.iter().map(|q| (spec.name.clone(), q.subnet)));
        pools.push(plan_pool::<Ipv4Addr>(
            &p.subnet,
            p.gateway.as_deref(),
            p.ip_range.as_deref(),
            &taken,
        )?);
    }
    let aux = plan_aux(&spec.aux_addresses, &pools)?;
    Ok((pools, aux))
}

/// Aux addresses: each a host address of one of the subnets, none a gateway, none
/// given twice.
fn plan_aux(
    given: &BTreeMap<String, String>,
    pools: &[Pool<Ipv4Addr>],
) -> Result<BTreeMap<String, Ipv4Addr>, NetdError> {
    let mut aux = BTreeMap::new();
    for (name, ip) in given {
        if name.is_empty() {
            return Err(invalid(format!(
                "invalid aux-address ={ip}: the name is empty"
            )));
        }
        let ip = parse_ip::<Ipv4Addr>("aux-address", ip)?;
        let pool = pools
            .iter()
            .find(|p| p.subnet.contains(ip))
            .unwrap_or(&pools[0]);
        if let Some(why) = Ipv4Addr::host_problem(&pool.subnet, ip) {
            return Err(invalid(format!("aux-address {name}={ip} {why}")));
        }
        if pools.iter().any(|p| p.gateway == ip) {
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
    Ok(aux)
}
