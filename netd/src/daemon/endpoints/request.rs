//! The endpoint API's wire types (what the CNI plugin and other front doors send and
//! read) and the checks of a request that need no state.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::{
    error::{NetdError, Result},
    model::{PortMapping, PortSpec},
};

/// POST /netd/endpoints: attach the runtime's namespace `netns` to `network` as
/// interface `ifname`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointRequest {
    /// The runtime's id of the container (CNI_CONTAINERID).
    pub container_id: String,
    /// The interface inside the namespace (CNI_IFNAME).
    pub ifname: String,
    /// The namespace, an absolute path (CNI_NETNS).
    pub netns: String,
    /// A netd network, by name or id.
    pub network: String,
    /// A static address (the `ips` capability); else IPAM picks one.
    pub ip: Option<Ipv4Addr>,
    /// A static IPv6 address, on a network with IPv6 only; else IPAM picks one there.
    pub ip6: Option<Ipv6Addr>,
    /// A static MAC, "aa:bb:cc:dd:ee:ff" (the `mac` capability); else Docker's scheme.
    pub mac: Option<String>,
    /// Published ports as `-p` asks them: one without a host address publishes on
    /// both families when the endpoint has IPv6 (`model::expand_specs`).
    pub port_mappings: Vec<PortSpec>,
    /// Names of the endpoint on its network (recorded for netd's DNS).
    pub aliases: Vec<String>,
}

/// A route inside the namespace, of either family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
}

/// An endpoint: what a runtime needs to report the attachment (a CNI result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// netd's record of it (the NAMES column of `netd ps`).
    pub container: String,
    pub network: String,
    pub network_id: String,
    /// The address with the network's prefix length.
    pub address: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 address with the prefix length of the network's IPv6 subnet, on a
    /// network with IPv6 (absent from the JSON elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The host side: the veth on the network's bridge.
    pub host_veth: String,
    pub bridge: String,
    pub bridge_mac: String,
    pub routes: Vec<Route>,
    pub port_mappings: Vec<PortMapping>,
    pub aliases: Vec<String>,
}

/// One attachment a runtime still wants (CNI's `cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointKey {
    pub container_id: String,
    pub ifname: String,
}

/// POST /netd/endpoints/gc: remove the endpoints of `network` not in `keep`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GcRequest {
    pub network: String,
    pub keep: Vec<EndpointKey>,
}

/// Parses "aa:bb:cc:dd:ee:ff" (or with '-'): a unicast MAC.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    crate::model::mac_bytes(s)
        .map_err(|why| NetdError::InvalidArgument(format!("invalid MAC address {s:?}: {why}")))
}

/// The checks of a request that need no state: one error naming the field.
pub(super) fn validate(req: &EndpointRequest) -> Result<()> {
    let bad = |m: String| Err(NetdError::InvalidArgument(m));
    let id_ok = req
        .container_id
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && req
            .container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !id_ok {
        return bad(format!(
            "invalid container id {:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]* expected",
            req.container_id
        ));
    }
    // The kernel's rule for interface names (dev_valid_name).
    let ifname_ok = !req.ifname.is_empty()
        && req.ifname.len() <= 15
        && req.ifname != "."
        && req.ifname != ".."
        && !req
            .ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !ifname_ok {
        return bad(format!(
            "invalid interface name {:?}: 1-15 characters without '/', ':' or spaces",
            req.ifname
        ));
    }
    if !req.netns.starts_with('/') {
        return bad(format!(
            "invalid network namespace {:?}: an absolute path expected",
            req.netns
        ));
    }
    if req.network.is_empty() {
        return bad("no network given".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> EndpointRequest {
        EndpointRequest {
            container_id: "abc123".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            network: "bridge".into(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        assert!(validate(&req()).is_ok());
        for (r, what) in [
            (
                EndpointRequest {
                    container_id: "-x".into(),
                    ..req()
                },
                "container id",
            ),
            (
                EndpointRequest {
                    ifname: "a/b".into(),
                    ..req()
                },
                "interface name",
            ),
            (
                EndpointRequest {
                    ifname: "0123456789abcdef".into(),
                    ..req()
                },
                "interface name",
            ),
            (
                EndpointRequest {
                    netns: "x".into(),
                    ..req()
                },
                "absolute path",
            ),
        ] {
            let e = validate(&r).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn macs_parse_and_multicast_is_refused() {
        assert_eq!(
            parse_mac("c2:11:22:33:44:55").unwrap(),
            [0xc2, 0x11, 0x22, 0x33, 0x44, 0x55]
        );
        assert!(parse_mac("c2:11:22:33:44").is_err());
        assert!(parse_mac("zz:11:22:33:44:55").is_err());
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .to_string()
            .contains("multicast"));
    }
}
