//! The agent's domain types: what the store keeps and the API carries. Ports,
//! protocols and Docker's publish specs are in `publish`.
use std::sync::Arc;
use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::error::NetdError;

mod detach;
mod drivers;
mod endpoint;
mod family;
mod gateway;
mod names;
mod pool;
mod publish;
mod request;
#[cfg(test)]
mod testing;
#[cfg(test)]
pub use testing::{
    test_attachment, test_container, test_network, test_network6, test_network_on, test_subnet,
};

pub use detach::{parse_detach_keys, DetachScanner, Scanned, DEFAULT_DETACH_KEYS};
pub use drivers::{
    creatable_drivers, driver_names, driver_traits, split_parent, Joins, Plumbing, Traits,
};
pub use endpoint::{
    check_driver_opts, check_ifname, check_ns_sysctls, gateways, if_sysctls_of, mac_bytes,
    parse_if_sysctls, parse_mac, sysctl_exists, EndpointRequest, IfSysctl, ENDPOINT_IFNAME,
    ENDPOINT_OPTIONS, ENDPOINT_SYSCTLS,
};
pub use family::{legacy, overlap, IpFamily, Pool, Subnet};
pub use gateway::{
    check_options as check_gateway_options, parse_sources, GatewayMode, GATEWAY_MODE_IPV4,
    GATEWAY_MODE_IPV6, OPT_PUBLISHED_SOURCES, OPT_TRUSTED_INTERFACES,
};
pub use names::{is_dns_name, parse_link, DnsConfig, Link};
pub use pool::{default_pools, overlaps, pick_subnet, PoolSpec, IPAM_OPTIONS, IPAM_SERIAL};
pub use publish::{
    expand_specs, is_twin, parse_expose, parse_publish, IpProto, PortMapping, PortSpec, Proto,
};
pub use request::{ConnectRequest, RunRequest};

/// Network drivers, as Docker names them.
pub const DRIVER_BRIDGE: &str = "bridge";
pub const DRIVER_HOST: &str = "host";
pub const DRIVER_NULL: &str = "null";
/// Cluster-scoped networks across nodes (needs `netd daemon --cluster-store`).
pub const DRIVER_OVERLAY: &str = "overlay";
/// Containers on a parent interface's segment (`-o parent=IF` or `IF.VLAN`).
pub const DRIVER_MACVLAN: &str = "macvlan";
pub const OPT_PARENT: &str = "parent";
pub const OPT_MACVLAN_MODE: &str = "macvlan_mode";
/// The macvlan driver's options, as Docker's (`bridge` is its one mode).
pub const MACVLAN_OPTIONS: [&str; 3] = [OPT_PARENT, OPT_MACVLAN_MODE, OPT_MTU];

/// The bridge driver's options netd understands (`-o KEY=VALUE`); any other is an error.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
pub const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
pub const KNOWN_OPTIONS: [&str; 9] = [
    OPT_BRIDGE_NAME,
    OPT_ICC,
    OPT_MASQUERADE,
    OPT_HOST_BINDING,
    OPT_MTU,
    GATEWAY_MODE_IPV4,
    GATEWAY_MODE_IPV6,
    OPT_TRUSTED_INTERFACES,
    OPT_PUBLISHED_SOURCES,
];

/// A network: a bridge with a subnet (driver bridge), or Docker's built-in `host` and
/// `none`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// Small integer the datapath uses for this network (0 for host/none).
    pub net_id: u32,
    /// Bridge device (driver bridge only).
    pub bridge: String,
    /// The bridge's MAC, recorded when the bridge was set up: the source MAC of packets
    /// the datapath redirects into containers.
    #[serde(default)]
    pub bridge_mac: [u8; 6],
    /// Every subnet, IPv4 ones first (Docker's IPAM config order); within a family the
    /// first is the one the bridge's primary address and a container's default route
    /// come from, and addresses come from the first with room. None of a family: the
    /// network does not have it (`--ipv4=false`, no `--ipv6`).
    pub subnets: Vec<Subnet>,
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    /// Host address published ports bind to when `-p` names none.
    pub host_binding_ipv4: Ipv4Addr,
    pub mtu: Option<u32>,
    pub labels: BTreeMap<String, String>,
    /// The options as the user gave them (shown by inspect).
    pub options: BTreeMap<String, String>,
    pub builtin: bool,
    pub created: u64,
    /// Docker's --attachable (recorded and shown; every netd network takes containers).
    #[serde(default)]
    pub attachable: bool,
    /// Overlay only: the VXLAN network identifier, allocated cluster-wide.
    #[serde(default)]
    pub vni: u32,
    /// `--ipam-opt`s of Docker's default IPAM driver (see `IPAM_OPTIONS`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipam_options: BTreeMap<String, String>,
}

/// The traits of a network of a driver netd no longer has (a record of another
/// release): nothing to plumb, nothing to join.
static UNKNOWN_DRIVER: Traits = Traits {
    name: "",
    plumbing: Plumbing::Nothing,
    joins: Joins::Nothing,
    creatable: false,
    connect: false,
    multi_host: false,
    many_subnets: false,
    ipv6: false,
    default_mtu: None,
    dns: false,
    bridge: false,
    programs: false,
    options: &[],
};

impl Network {
    /// What its driver does (see `drivers`).
    pub fn traits(&self) -> &'static Traits {
        driver_traits(&self.driver).unwrap_or(&UNKNOWN_DRIVER)
    }

    /// A network across nodes: its record lives in the cluster store, every node
    /// mirrors it.
    pub fn is_multi_host(&self) -> bool {
        self.traits().multi_host
    }

    /// Docker's EnableIPv4: false for an IPv6-only network (`--ipv4=false`), which has
    /// no IPv4 subnet; its endpoints' `ip` is 0.0.0.0.
    pub fn ipv4(&self) -> bool {
        self.pool::<Ipv4Addr>().is_some()
    }

    /// Docker's EnableIPv6: the network has an IPv6 subnet.
    pub fn ipv6(&self) -> bool {
        self.pool::<Ipv6Addr>().is_some()
    }

    /// Every subnet of family `A`, the first one first.
    pub fn pools<A: IpFamily>(&self) -> Vec<Pool<A>> {
        self.subnets.iter().filter_map(Pool::of).collect()
    }

    /// The first subnet of family `A`.
    pub fn pool<A: IpFamily>(&self) -> Option<Pool<A>> {
        self.subnets.iter().find_map(Pool::of)
    }

    /// Replaces the subnets of family `A` with `pools`, IPv4 ones kept first.
    pub fn set_pools<A: IpFamily>(&mut self, pools: impl IntoIterator<Item = Pool<A>>) {
        self.subnets.retain(|s| Pool::<A>::of(s).is_none());
        self.subnets.extend(pools.into_iter().map(Subnet::from));
        self.subnets.sort_by_key(|s| s.subnet.is_ipv6());
    }

    pub fn subnet4(&self) -> Option<Ipv4Network> {
        self.pool::<Ipv4Addr>().map(|p| p.subnet)
    }

    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        self.pool::<Ipv4Addr>().map(|p| p.gateway)
    }

    pub fn subnet6(&self) -> Option<Ipv6Network> {
        self.pool::<Ipv6Addr>().map(|p| p.subnet)
    }

    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.pool::<Ipv6Addr>().map(|p| p.gateway)
    }

    /// The subnet `ip` is in (None: in none of them).
    pub fn pool_of<A: IpFamily>(&self, ip: A) -> Option<Pool<A>> {
        self.pools::<A>()
            .into_iter()
            .find(|p| A::contains(&p.subnet, ip))
    }

    /// The gateway of an endpoint with address `ip`: its own subnet's.
    pub fn gateway_for<A: IpFamily>(&self, ip: A) -> Option<A> {
        self.pool_of(ip)
            .or_else(|| self.pool::<A>())
            .map(|p| p.gateway)
    }

    /// The prefix length of `ip`'s subnet (the address alone when it is in none).
    pub fn prefix_for<A: IpFamily>(&self, ip: A) -> u8 {
        self.pool_of(ip).map_or(A::BITS, |p| A::prefix(&p.subnet))
    }

    /// Whether addresses are handed out serially (`IPAM_SERIAL`).
    pub fn serial_ipam(&self) -> bool {
        self.ipam_options.get(IPAM_SERIAL).map(String::as_str) == Some("true")
    }

    /// Docker's scope: `global` for overlay networks (pre-Swarm cluster store), `local`
    /// for the others.
    pub fn scope(&self) -> &'static str {
        if self.is_multi_host() {
            "global"
        } else {
            "local"
        }
    }
}

/// A container's address on an overlay network, as its node records it in the
/// cluster store (`cluster::endpoints`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    /// The id of the node that runs the container (its daemon's instance id).
    pub node: String,
    /// That node's underlay (VTEP) address.
    pub vtep: Ipv4Addr,
    /// The network's id (the same on every node) and VXLAN id.
    pub network: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    /// The container's name (what PTR answers) and every name it has on the network.
    pub container: String,
    pub names: Vec<String>,
}

/// What `network create` asks for (Docker's POST /networks/create, flattened).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub aux_addresses: BTreeMap<String, String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Docker's --ipv4 (EnableIPv4): Some(false) asks for an IPv6-only network.
    #[serde(default)]
    pub ipv4: Option<bool>,
    /// Docker's --ipv6, and the IPv6 values of --subnet, --gateway and --ip-range.
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub gateway6: Option<String>,
    #[serde(default)]
    pub ip_range6: Option<String>,
    /// IPv4 subnets after the first (overlay networks only); their aux addresses are in
    /// `aux_addresses` with the first's.
    #[serde(default)]
    pub more_subnets: Vec<PoolSpec>,
    /// `--ipam-opt KEY=VALUE`.
    #[serde(default)]
    pub ipam_options: BTreeMap<String, String>,
}

/// How a container is networked (`--network`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Own namespace, attached to netd networks.
    Bridge,
    /// The host's namespace.
    Host,
    /// Own namespace with loopback only.
    None,
    /// Another container's namespace (by id).
    Container(String),
}

/// A container's attachment to one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    /// Interface name inside the container: eth0, eth1, ...
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// Host-side veth name (on the network's bridge).
    pub veth: String,
    pub aliases: Vec<String>,
    /// ifindex of the host-side veth, recorded when it was plumbed (the endpoint map
    /// needs it; asking netlink on every map sync cost two round trips an attachment).
    #[serde(default)]
    pub host_ifindex: u32,
    /// The address the user asked for (--ip), shown as the endpoint's IPAMConfig.
    #[serde(default)]
    pub requested_ip: Option<Ipv4Addr>,
    /// Its IPv6 address on a network with IPv6 (None elsewhere, and for a Docker
    /// endpoint to which Docker's IPAM gave none).
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The IPv6 address the user asked for (--ip6).
    #[serde(default)]
    pub requested_ip6: Option<Ipv6Addr>,
    /// `--link-local-ip`s: further addresses on the interface (169.254.0.0/16 as /16,
    /// fe80::/10 as /64, as Docker adds them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<IpAddr>,
    /// Docker 28's gw-priority: the endpoint with the highest gives the container its
    /// default routes (see `gateways`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gw_priority: i32,
    /// Endpoint driver options as given (`ENDPOINT_OPTIONS`: the interface name is
    /// `ifname` already; the sysctls are applied at every plumbing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// The MAC was the user's (`--mac-address`), not Docker's `02:42:<ip>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_mac: bool,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl Attachment {
    /// Its IPv4 address; None on an IPv6-only network (where `ip` is 0.0.0.0).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        (!self.ip.is_unspecified()).then_some(self.ip)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
        })
    }
}

/// Who made a sandbox, and so who owns its namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `netd run|create`: netd made the namespace and runs the process in it.
    #[default]
    Netd,
    /// A container runtime through the endpoint API (the CNI plugin): the namespace is
    /// the runtime's (`netns` is its absolute path), so netd never deletes it nor kills
    /// its processes. The runtime names the attachment by (container id, interface).
    Cni {
        container_id: String,
        ifname: String,
        /// This attachment carries the namespace's default route (the runtime's first
        /// netd attachment of that namespace does).
        default_route: bool,
        /// The namespace's inode (nsfs), to tell when no process and no mount holds
        /// it any more: the runtime is gone without a DEL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns_ino: Option<u64>,
    },
    /// Docker's libnetwork through the network plugin protocol (`netd daemon
    /// --docker-plugin`): the record's id is Docker's endpoint id. netd makes the veth
    /// and hands its container side to dockerd, which moves it into the sandbox and
    /// configures it; `sandbox_key` (set at Join) is a path in dockerd's mount
    /// namespace that netd never opens.
    Docker { sandbox_key: Option<String> },
}

/// A container's network sandbox and the process netd runs in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub hostname: Option<String>,
    pub mode: NetMode,
    /// Its namespace under /run/netns: its own (bridge, none), the other container's
    /// (container:N), none for host.
    pub netns: Option<String>,
    pub attachments: Vec<Attachment>,
    pub ports: Vec<PortMapping>,
    pub cmd: Vec<String>,
    pub state: ContainerState,
    pub pid: Option<u32>,
    /// Start time of `pid` (field 22 of /proc/PID/stat), so a reused pid is not adopted.
    pub pid_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub auto_remove: bool,
    pub created: u64,
    /// When its process last started and ended (seconds since the epoch), for Docker's
    /// "Up 3 minutes" / "Exited (0) 2 seconds ago".
    #[serde(default)]
    pub started: Option<u64>,
    #[serde(default)]
    pub finished: Option<u64>,
    /// `--label`s: Docker's Config.Labels, what `ps --filter label=` selects on.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--expose`d ports, published or not: part of Docker's Config.ExposedPorts.
    #[serde(default)]
    pub exposed: Vec<(u16, Proto)>,
    #[serde(default)]
    pub origin: Origin,
    /// `--dns`, `--dns-search`, `--dns-option`.
    #[serde(default)]
    pub dns: DnsConfig,
    /// `--link`s (default bridge: hosts entries, env, the icc=false exception).
    #[serde(default)]
    pub links: Vec<Link>,
    /// What `run`/`create` asked for beyond the network (Docker's Config and
    /// HostConfig fields that netd keeps).
    #[serde(default)]
    pub config: CreateConfig,
}

/// A container's settings from `run`/`create` that its inspect shows as asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateConfig {
    /// Docker's HostConfig.NetworkMode as created (`--network`, by name): connecting
    /// and disconnecting networks later does not change it.
    #[serde(default)]
    pub network_mode: Option<String>,
    /// `-t`: the process gets a pseudo-terminal (the daemon holds its master side).
    #[serde(default)]
    pub tty: bool,
    /// `-i`: the process's stdin stays open for `attach`.
    #[serde(default)]
    pub open_stdin: bool,
    /// Created by a `run` in the foreground (no `-d`): its client attached. With `-i`
    /// that is Docker's StdinOnce: the process's stdin closes when that client's
    /// input ends.
    #[serde(default)]
    pub attached: bool,
    /// `--sysctl`s of its namespace (applied when it was made).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
}

impl CreateConfig {
    pub fn stdin_once(&self) -> bool {
        self.attached && self.open_stdin
    }
}

/// Docker's name of a network mode: `bridge`, `host`, `none` or `container:NAME`.
pub fn mode_name(mode: &NetMode, containers: &[Arc<Container>]) -> String {
    match mode {
        NetMode::Bridge => "bridge".into(),
        NetMode::Host => "host".into(),
        NetMode::None => "none".into(),
        NetMode::Container(id) => format!(
            "container:{}",
            containers
                .iter()
                .find(|c| &c.id == id)
                .map(|c| c.name.as_str())
                .unwrap_or(id)
        ),
    }
}

impl Container {
    /// Whether the container side of its interfaces is the runtime's to move and
    /// configure (Docker's Join): netd can neither recreate nor check it.
    pub fn handed_off(&self) -> bool {
        matches!(self.origin, Origin::Docker { .. })
    }

    /// Whether the namespace is this container's own (removed with it). A runtime's
    /// namespace (origin CNI) never is.
    pub fn owns_netns(&self) -> bool {
        self.origin == Origin::Netd && matches!(self.mode, NetMode::Bridge | NetMode::None)
    }

    /// Whether a runtime's attachment `i` carries the namespace's default routes: its
    /// first does if it got them when it was made (a netd sandbox: `default_routes`).
    pub fn default_route_on(&self, i: usize) -> bool {
        match &self.origin {
            Origin::Netd => i == 0,
            Origin::Cni { default_route, .. } => i == 0 && *default_route,
            // dockerd sets the sandbox's routes itself from Join's gateway.
            Origin::Docker { .. } => false,
        }
    }

    /// The attachments that give a netd sandbox its IPv4 and IPv6 default routes, as
    /// Docker 28 picks them (`gateways`).
    pub fn gateways(&self, nets: &[Network]) -> (Option<usize>, Option<usize>) {
        gateways(&self.attachments, |a| {
            nets.iter().find(|n| n.id == a.network)
        })
    }

    /// Which default routes attachment `i` gives the namespace (IPv4's, IPv6's).
    pub fn default_routes(&self, i: usize, nets: &[Network]) -> (bool, bool) {
        match &self.origin {
            Origin::Netd => {
                let (g4, g6) = self.gateways(nets);
                (g4 == Some(i), g6 == Some(i))
            }
            _ => {
                let r = self.default_route_on(i);
                (r, r)
            }
        }
    }

    /// The attachment published ports lead to: Docker's gateway endpoint, which gives
    /// the IPv4 default route (replies leave through it), else the first one.
    pub fn primary(&self, nets: &[Network]) -> Option<usize> {
        let gw = match self.origin {
            Origin::Netd => self.gateways(nets).0,
            _ => None,
        };
        gw.or((!self.attachments.is_empty()).then_some(0))
    }
}

/// Docker's MAC scheme: 02:42 followed by the IPv4 address.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The MAC of an endpoint without IPv4 (an IPv6-only network): from the low 32 bits of
/// its IPv6 address, unique on its /64 as the IPv4 one is on its subnet.
pub fn mac_for_ip6(ip: std::net::Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[12], o[13], o[14], o[15]]
}

pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Container names follow Docker's rule.
pub fn validate_name(name: &str) -> Result<(), NetdError> {
    validate_docker_name("container", name)
}

/// Docker's rule for container and network names: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64.
pub fn validate_docker_name(what: &str, name: &str) -> Result<(), NetdError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetdError::InvalidArgument(format!(
            "invalid {what} name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed (at most 64)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_pool_skips_routes() {
        let taken = vec![
            "172.17.0.0/16".parse().unwrap(),
            "172.18.5.0/24".parse().unwrap(),
        ];
        assert_eq!(pick_subnet(&taken), Some("172.19.0.0/16".parse().unwrap()));
        assert_eq!(pick_subnet(&[]), Some("172.17.0.0/16".parse().unwrap()));
        let all: Vec<Ipv4Network> = vec!["172.16.0.0/12".parse().unwrap()];
        assert_eq!(pick_subnet(&all), Some("192.168.0.0/20".parse().unwrap()));
    }

    #[test]
    fn names_and_macs() {
        assert!(validate_name("web-1.a_b").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert_eq!(
            fmt_mac(&mac_for_ip(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }
}
