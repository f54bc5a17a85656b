//! Docker's default address pools, the further subnets `network create` takes, and the
//! options of the default IPAM.
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// Docker's default IPAM option for serial allocation: with `true`, a new address is
/// the next free one after the last handed out (wrapping around), so an address a
/// container just gave back is not reused at once; default `false`: the lowest free.
pub const IPAM_SERIAL: &str = "com.docker.network.ipam.serial";
/// The `--ipam-opt`s netd's (default) IPAM takes; any other is an error.
pub const IPAM_OPTIONS: [&str; 1] = [IPAM_SERIAL];

/// A further subnet as `network create` gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub subnet: String,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
}

/// Docker's default address pools, in order: each base is cut into subnets of the
/// given prefix length (172.17-31.0.0/16, then 192.168.0-240.0/20).
pub fn default_pools() -> Vec<(Ipv4Network, u8)> {
    (17..=31)
        .filter_map(|b| Ipv4Network::new(Ipv4Addr::new(172, b, 0, 0), 16).ok())
        .map(|n| (n, 16))
        .chain(
            Ipv4Network::new(Ipv4Addr::new(192, 168, 0, 0), 16)
                .ok()
                .map(|n| (n, 20)),
        )
        .collect()
}

/// Picks a subnet for a network created without --subnet: the first of the default
/// pools' subnets that overlaps none of `taken` (other networks, routes of the host).
pub fn pick_subnet(taken: &[Ipv4Network]) -> Option<Ipv4Network> {
    default_pools()
        .into_iter()
        .flat_map(|(base, size)| {
            let step = 1u32 << (32 - u32::from(size));
            let count = 1u32 << (u32::from(size) - u32::from(base.prefix()));
            (0..count).filter_map(move |i| {
                Ipv4Network::new(Ipv4Addr::from(u32::from(base.network()) + i * step), size).ok()
            })
        })
        .find(|c| !taken.iter().any(|t| overlaps(c, t)))
}

pub fn overlaps(a: &Ipv4Network, b: &Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}
