//! The IPv4 subnets of a network beyond Docker's single-subnet fields, and the options
//! of its IPAM.
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// One IPv4 subnet of a network, with its gateway (on the network's bridge) and the
/// range automatic addresses come from (default: the whole subnet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool4 {
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub ip_range: Option<Ipv4Network>,
}

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
