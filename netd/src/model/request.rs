//! What `netd run`/`create` and `network connect` ask the daemon for (the Engine API's
//! container create and connect are turned into these).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};

use super::{EndpointRequest, PortSpec, Proto};

/// What `netd run` / `netd create` asks the daemon for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRequest {
    pub name: Option<String>,
    pub hostname: Option<String>,
    /// NET, host, none or container:NAME (default: bridge).
    pub network: Option<String>,
    pub ip: Option<Ipv4Addr>,
    /// `--ip6`: a static IPv6 address (networks with a user IPv6 subnet only).
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    pub aliases: Vec<String>,
    /// `-p` as given; the daemon turns them into mappings (`expand_specs`).
    pub ports: Vec<PortSpec>,
    pub cmd: Vec<String>,
    /// Start the command now (run) or only create the sandbox (create).
    pub start: bool,
    pub auto_remove: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--expose`: ports the container serves, published or not.
    #[serde(default)]
    pub exposed: Vec<(u16, Proto)>,
    /// `--dns`, `--dns-search`, `--dns-option` as given (checked by the daemon).
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--link NAME[:ALIAS]`.
    #[serde(default)]
    pub links: Vec<String>,
    /// `--link-local-ip`s on the first network.
    #[serde(default)]
    pub link_local_ips: Vec<IpAddr>,
    /// `-t`, `-i`, and whether a client attaches (`run` without `-d`).
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub attached: bool,
    /// `--mac-address`: the container's MAC on its first network.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// Every network the container joins, in order, with what it asks of each
    /// (`--network` given several times, or in its long form). Empty: `network` alone.
    /// The options above (`network` aside) are the first one's, as Docker's CLI
    /// applies them; given in both places they are an error.
    #[serde(default)]
    pub networks: Vec<EndpointRequest>,
    /// `--sysctl KEY=VALUE`s of the container's own network namespace.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

/// What `network connect` asks for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub container: String,
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    pub aliases: Vec<String>,
    /// `--link NAME[:ALIAS]`.
    #[serde(default)]
    pub links: Vec<String>,
    /// `--link-local-ip`s.
    #[serde(default)]
    pub link_local_ips: Vec<IpAddr>,
    /// `--mac-address` on this network (checked by `parse_mac`).
    #[serde(default)]
    pub mac_address: Option<String>,
    /// `--driver-opt KEY=VALUE`s (`ENDPOINT_OPTIONS`).
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    /// `--gw-priority`.
    #[serde(default)]
    pub gw_priority: i32,
}
