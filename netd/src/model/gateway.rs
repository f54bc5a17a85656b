//! Docker 28's gateway modes (per address family), trusted host interfaces, and netd's
//! own restriction of who may reach published ports: what a network lets in from
//! outside the host, and how its containers' traffic leaves.
use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

use super::Network;
use crate::error::NetdError;

pub const GATEWAY_MODE_IPV4: &str = "com.docker.network.bridge.gateway_mode_ipv4";
/// The network option that picks IPv6's gateway mode.
pub const GATEWAY_MODE_IPV6: &str = "com.docker.network.bridge.gateway_mode_ipv6";
/// Host interfaces (colon-separated) from which the network's containers may be reached
/// straight at their addresses, whatever the gateway mode.
pub const OPT_TRUSTED_INTERFACES: &str = "com.docker.network.bridge.trusted_host_interfaces";
/// netd's own: the source networks (comma-separated CIDRs, both families) that may
/// reach the network's published ports from outside; others are dropped. Overrides the
/// daemon's `--published-sources` for this network.
pub const OPT_PUBLISHED_SOURCES: &str = "netd.published_sources";

/// How a network's traffic of one family meets the outside (Docker's gateway modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayMode {
    /// Masquerade out; from outside only published host ports (the default).
    Nat,
    /// Masquerade out; from outside, direct routing to any container port too.
    NatUnprotected,
    /// No NAT; from outside, direct routing to published container ports, ICMP and
    /// replies.
    Routed,
    /// Internal networks only: no address on the bridge, so not even the host reaches
    /// the containers.
    Isolated,
}

const MODES: &str = "nat, nat-unprotected, routed, isolated";

impl GatewayMode {
    /// The mode `value` of option `key`, or one line naming both and the allowed values.
    pub fn parse(key: &str, value: &str) -> Result<GatewayMode, NetdError> {
        match value {
            "nat" => Ok(GatewayMode::Nat),
            "nat-unprotected" => Ok(GatewayMode::NatUnprotected),
            "routed" => Ok(GatewayMode::Routed),
            "isolated" => Ok(GatewayMode::Isolated),
            _ => Err(NetdError::InvalidArgument(format!(
                "invalid value {value:?} for option {key}: use one of {MODES}"
            ))),
        }
    }
}

/// Checks the gateway-mode, trusted-interface and published-source options of a
/// network being created (`internal`: `--internal`).
pub fn check_options(options: &BTreeMap<String, String>, internal: bool) -> Result<(), NetdError> {
    for key in [GATEWAY_MODE_IPV4, GATEWAY_MODE_IPV6] {
        let Some(v) = options.get(key) else { continue };
        if GatewayMode::parse(key, v)? == GatewayMode::Isolated && !internal {
            return Err(NetdError::InvalidArgument(format!(
                "gateway mode isolated of {key} needs an --internal network"
            )));
        }
    }
    if let Some(v) = options.get(OPT_TRUSTED_INTERFACES) {
        trusted_interfaces(v)?;
    }
    if let Some(v) = options.get(OPT_PUBLISHED_SOURCES) {
        parse_sources(OPT_PUBLISHED_SOURCES, v)?;
    }
    Ok(())
}

/// The interface names of a `trusted_host_interfaces` value: colon-separated, each a
/// valid Linux interface name.
pub fn trusted_interfaces(value: &str) -> Result<Vec<String>, NetdError> {
    value
        .split(':')
        .filter(|s| !s.is_empty())
        .map(|name| {
            let ok = name.len() < 16
                && name != "."
                && name != ".."
                && !name.contains(['/', ' ', '\t', '\n', '\0']);
            if ok {
                Ok(name.to_string())
            } else {
                Err(NetdError::InvalidArgument(format!(
                    "invalid interface name {name:?} in option {OPT_TRUSTED_INTERFACES}: names are colon-separated, at most 15 characters, without '/' or spaces"
                )))
            }
        })
        .collect()
}

/// Comma-separated source networks (`10.0.0.0/8,2001:db8::/32`; a bare address is a
/// host), named `what` in the error.
pub fn parse_sources(what: &str, value: &str) -> Result<Vec<IpNetwork>, NetdError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNetwork>().map_err(|_| {
                NetdError::InvalidArgument(format!(
                    "invalid source network {s:?} in {what}: use CIDRs such as 192.0.2.0/24 or 2001:db8::/32, comma-separated"
                ))
            })
        })
        .collect()
}

impl Network {
    /// The gateway mode of the network's IPv4 (`v6` false) or IPv6 side.
    pub fn gateway_mode(&self, v6: bool) -> GatewayMode {
        let key = if v6 {
            GATEWAY_MODE_IPV6
        } else {
            GATEWAY_MODE_IPV4
        };
        self.options
            .get(key)
            .and_then(|v| GatewayMode::parse(key, v).ok())
            .unwrap_or(GatewayMode::Nat)
    }

    /// Whether the family's traffic leaves masqueraded.
    pub fn masquerades(&self, v6: bool) -> bool {
        self.masquerade
            && !self.internal
            && matches!(
                self.gateway_mode(v6),
                GatewayMode::Nat | GatewayMode::NatUnprotected
            )
    }

    /// The trusted host interfaces' names (none when the option is absent or broken).
    pub fn trusted_interfaces(&self) -> Vec<String> {
        self.options
            .get(OPT_TRUSTED_INTERFACES)
            .and_then(|v| trusted_interfaces(v).ok())
            .unwrap_or_default()
    }

    /// The network's own published-port source restriction, if it has one.
    pub fn published_sources(&self) -> Option<Vec<IpNetwork>> {
        let v = self.options.get(OPT_PUBLISHED_SOURCES)?;
        parse_sources(OPT_PUBLISHED_SOURCES, v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_ones_name_the_option_and_the_values() {
        assert_eq!(
            GatewayMode::parse(GATEWAY_MODE_IPV4, "nat-unprotected").unwrap(),
            GatewayMode::NatUnprotected
        );
        let e = GatewayMode::parse(GATEWAY_MODE_IPV4, "bogus")
            .unwrap_err()
            .to_string();
        assert!(e.contains(GATEWAY_MODE_IPV4) && e.contains(MODES), "{e}");
    }

    #[test]
    fn isolated_needs_internal() {
        let mut o = BTreeMap::new();
        o.insert(GATEWAY_MODE_IPV4.to_string(), "isolated".to_string());
        assert!(check_options(&o, true).is_ok());
        let e = check_options(&o, false).unwrap_err().to_string();
        assert!(e.contains("--internal"), "{e}");
    }

    #[test]
    fn trusted_interfaces_and_sources_parse() {
        assert_eq!(
            trusted_interfaces("vxlan.1:eth3").unwrap(),
            ["vxlan.1", "eth3"]
        );
        assert!(trusted_interfaces("a/b").is_err());
        assert!(trusted_interfaces("averyveryverylongname").is_err());
        let s = parse_sources("x", "10.0.0.0/8, 2001:db8::/32,192.0.2.7").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].prefix(), 32);
        let e = parse_sources("x", "10.0.0.0/33").unwrap_err().to_string();
        assert!(e.contains("10.0.0.0/33") && e.contains("x"), "{e}");
    }
}
