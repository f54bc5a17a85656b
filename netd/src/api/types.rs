//! The wire contract: Docker Engine API 1.41 shapes (field names as Docker spells them)
//! and netd's own, as serde structs the server writes and the CLI reads. Presentation
//! (tables, "Up 3 minutes") belongs to the CLI, not here.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Docker's `{"message": ...}` error body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auxiliary_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Option<Vec<IpamConfig>>,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

/// `POST /networks/create`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkCreate {
    pub name: String,
    pub check_duplicate: bool,
    pub driver: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Option<Ipam>,
    pub options: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateResponse {
    pub id: String,
    pub warning: String,
}

/// A container's membership as `GET /networks/{id}` lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigReference {
    pub network: String,
}

/// `GET /networks/{id}` and the entries of `GET /networks`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkResource {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: ConfigReference,
    pub config_only: bool,
    pub containers: BTreeMap<String, NetworkContainer>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PrunedNetworks {
    pub networks_deleted: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointIpamConfig {
    #[serde(
        rename = "IPv4Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
    #[serde(
        rename = "IPv6Address",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<String>,
}

/// An endpoint as `NetworkSettings.Networks` shows it (also `network connect`'s config).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct EndpointSettings {
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpamConfig>,
    pub links: Option<Vec<String>>,
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub gateway: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: u8,
    pub mac_address: String,
    pub driver_opts: Option<BTreeMap<String, String>>,
    /// Every name the embedded DNS answers with this endpoint's address (user-defined
    /// networks only; null elsewhere, as Docker).
    #[serde(rename = "DNSNames")]
    pub dns_names: Option<Vec<String>>,
}

/// `POST /networks/{id}/connect` and `/disconnect`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkConnect {
    pub container: String,
    pub endpoint_config: Option<EndpointSettings>,
    pub force: bool,
}

/// One port in a container list entry: published (with the host side), or only
/// exposed (no IP, no PublicPort, as Docker leaves them out).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Port {
    #[serde(rename = "IP", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(rename = "PrivatePort")]
    pub private_port: u16,
    #[serde(
        rename = "PublicPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_port: Option<u16>,
    #[serde(rename = "Type")]
    pub proto: String,
}

/// One host binding of a container port (`80/tcp -> [{0.0.0.0, 8080}]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

/// By `PORT/PROTO`; null for a port that is exposed but not published.
pub type PortMap = BTreeMap<String, Option<Vec<PortBinding>>>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryHostConfig {
    pub network_mode: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryNetworkSettings {
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// An entry of `GET /containers/json`, plus netd's own `Netns` and `HostVeths`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: u64,
    pub ports: Vec<Port>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub status: String,
    pub host_config: SummaryHostConfig,
    pub network_settings: SummaryNetworkSettings,
    pub mounts: Vec<serde_json::Value>,
    pub netns: String,
    pub host_veths: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: u32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    pub network_mode: String,
    pub port_bindings: PortMap,
    pub auto_remove: bool,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// Docker's `/target:/linker/alias`; null without links.
    #[serde(default)]
    pub links: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub hostname: String,
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    pub cmd: Vec<String>,
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

/// `NetworkSettings` of an inspect. The top-level address fields are Docker's legacy
/// ones: filled for the default `bridge` network only, as Docker does.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    pub bridge: String,
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    pub sandbox_key: String,
    pub ports: PortMap,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub gateway: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: u8,
    pub mac_address: String,
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// `GET /containers/{id}/json`, plus netd's own `Netns` and `HostVeths`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: ContainerState,
    pub image: String,
    pub name: String,
    pub restart_count: u32,
    pub host_config: HostConfig,
    pub config: ContainerConfig,
    pub network_settings: NetworkSettings,
    pub netns: String,
    pub host_veths: Vec<String>,
}

/// `GET /version`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub version: String,
    pub api_version: String,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
    pub git_commit: String,
    pub components: Vec<Component>,
}

/// One part of the server in `GET /version` (docker version prints each).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Component {
    pub name: String,
    pub version: String,
    pub details: BTreeMap<String, String>,
}

/// `GET /info`: what `docker info`, docker-py and Testcontainers read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    pub containers_stopped: usize,
    pub images: usize,
    pub driver: String,
    pub driver_status: Vec<[String; 2]>,
    pub plugins: BTreeMap<String, Vec<String>>,
    pub memory_limit: bool,
    pub swap_limit: bool,
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    pub debug: bool,
    #[serde(rename = "NFd")]
    pub n_fd: usize,
    pub n_goroutines: usize,
    pub system_time: String,
    pub logging_driver: String,
    pub cgroup_driver: String,
    pub cgroup_version: String,
    pub kernel_version: String,
    pub operating_system: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    pub architecture: String,
    #[serde(rename = "NCPU")]
    pub ncpu: usize,
    pub mem_total: u64,
    pub docker_root_dir: String,
    pub server_version: String,
    pub labels: Vec<String>,
    pub experimental_build: bool,
    pub security_options: Vec<String>,
    pub warnings: Vec<String>,
    /// Always inactive: clients read an empty state as an active swarm node.
    pub swarm: SwarmInfo,
    /// `--cluster-store` and the address this node advertises (Docker's pre-Swarm
    /// fields), empty without a cluster.
    pub cluster_store: String,
    pub cluster_advertise: String,
    /// netd's own: the underlay addresses of the cluster's live nodes, this one included.
    pub cluster_nodes: Vec<String>,
    /// Containers keep running while the agent restarts (Docker's live restore).
    pub live_restore_enabled: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    pub local_node_state: String,
    pub control_available: bool,
}

/// `GET /system/df`: netd has no images or volumes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiskUsage {
    pub layers_size: u64,
    pub images: Vec<serde_json::Value>,
    pub containers: Vec<ContainerSummary>,
    pub volumes: Vec<serde_json::Value>,
    pub build_cache: Vec<serde_json::Value>,
}

/// `DELETE /netd/conntrack`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Flushed {
    pub removed: usize,
}
