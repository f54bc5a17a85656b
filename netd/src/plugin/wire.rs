//! The JSON of Docker's network plugin protocol (libnetwork's remote driver, protocol
//! v1.2), field for field as dockerd sends and reads it. Go marshals nil maps and
//! slices as `null`, so every collection is an Option.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The media type of every request and reply.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Option keys libnetwork puts in CreateNetwork's and Join's `Options`.
pub const OPT_GENERIC: &str = "com.docker.network.generic";
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
pub const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
pub const OPT_EXPOSED: &str = "com.docker.network.endpoint.exposedports";
pub const OPT_MAC: &str = "com.docker.network.endpoint.macaddress";

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    pub implements: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    pub scope: &'static str,
    pub connectivity_scope: &'static str,
}

/// Every other reply: empty, or `{"Err": ...}` for a failure.
#[derive(Debug, Default, Serialize)]
pub struct ErrResponse {
    #[serde(rename = "Err", skip_serializing_if = "String::is_empty")]
    pub err: String,
}

/// Docker's IPAM result for one pool; addresses are CIDR strings ("172.18.0.1/16").
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    pub aux_addresses: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options")]
    pub options: Option<Map<String, Value>>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
    #[serde(rename = "Options")]
    pub options: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    pub interface: EndpointInterface,
}

#[derive(Debug, Serialize)]
pub struct EndpointInfoResponse {
    #[serde(rename = "Value")]
    pub value: Map<String, Value>,
}

/// Join, and ProgramExternalConnectivity (which has no SandboxKey).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
    #[serde(rename = "Options")]
    pub options: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub static_routes: Vec<Value>,
    pub disable_gateway_service: bool,
}

/// libnetwork's types.PortBinding: Proto is the IP protocol number, addresses are
/// strings ("" for none).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct PortBinding {
    #[serde(rename = "Proto")]
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    #[serde(rename = "HostPort")]
    pub host_port: u16,
    #[serde(rename = "HostPortEnd")]
    pub host_port_end: u16,
}

/// libnetwork's types.TransportPort (an exposed port).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct TransportPort {
    #[serde(rename = "Proto")]
    pub proto: u8,
    #[serde(rename = "Port")]
    pub port: u16,
}
