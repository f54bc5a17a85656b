//! The network configuration a runtime passes on stdin (SPEC.md section 1 and 3, and
//! the capabilities of CONVENTIONS.md).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use netd::model::{PortSpec, Proto};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    error::{code, CniError},
    version::SUPPORTED_VERSIONS,
};

/// Where `netd daemon` listens unless the configuration says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/netd/netd.sock";

/// The plugin configuration object, as the runtime derived it for one invocation.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The netd network to attach to (default: `name`).
    pub network: Option<String>,
    /// The daemon's API socket (default: /run/netd/netd.sock).
    pub socket: Option<PathBuf>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    /// Conventions' `args.cni.ips`: static addresses, as the `ips` capability.
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The capability arguments netd-cni declares (`capabilities` in the conflist).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<CniPortMapping>,
    #[serde(default)]
    pub ips: Vec<String>,
    pub mac: Option<String>,
    #[serde(default)]
    pub aliases: Aliases,
}

/// CONVENTIONS.md's `portMappings` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CniPortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

/// `aliases`: a list (CONVENTIONS.md), or Podman's map of network name to list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Aliases {
    List(Vec<String>),
    PerNetwork(BTreeMap<String, Vec<String>>),
}

impl Default for Aliases {
    fn default() -> Self {
        Aliases::List(Vec::new())
    }
}

fn invalid(details: String) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        "invalid network configuration",
        details,
    )
}

impl NetConf {
    /// Parses stdin. An empty or missing `cniVersion` means 0.1.0 (the spec's rule),
    /// which netd-cni cannot answer in: error 1 like any unsupported version.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {:?} is not one of {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    /// The netd network: `network`, else the configuration's `name`.
    pub fn network(&self) -> Result<String, CniError> {
        match self.network.as_deref().unwrap_or(&self.name) {
            "" => Err(invalid("neither \"network\" nor \"name\" is set".into())),
            n => Ok(n.to_string()),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The runtime's `portMappings` as netd's published ports. A mapping without
    /// `hostIP` publishes on both families when the endpoint has IPv6 (as netd's own
    /// `-p` and the portmap plugin on a dual-stack container); one with an IPv4 or
    /// IPv6 `hostIP` on that address only.
    pub fn port_mappings(&self) -> Result<Vec<PortSpec>, CniError> {
        self.runtime_config
            .port_mappings
            .iter()
            .map(|p| {
                let proto = match p.protocol.as_deref().unwrap_or("tcp") {
                    "tcp" | "TCP" | "" => Proto::Tcp,
                    "udp" | "UDP" => Proto::Udp,
                    "sctp" | "SCTP" => Proto::Sctp,
                    other => {
                        return Err(invalid(format!(
                            "portMappings: protocol {other:?} of host port {} is not supported (tcp, udp or sctp)",
                            p.host_port
                        )))
                    }
                };
                let host_ip = match p.host_ip.as_deref().unwrap_or("") {
                    "" => None,
                    s => Some(
                        s.trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<IpAddr>()
                            .map_err(|_| {
                                invalid(format!(
                                    "portMappings: hostIP {s:?} of host port {} is not an IP address",
                                    p.host_port
                                ))
                            })?,
                    ),
                };
                if p.container_port == 0 {
                    return Err(invalid(format!(
                        "portMappings: containerPort 0 of host port {}",
                        p.host_port
                    )));
                }
                Ok(PortSpec {
                    host_ip,
                    host_port: p.host_port,
                    container_port: p.container_port,
                    proto,
                })
            })
            .collect()
    }

    /// The static addresses asked for: the `ips` capability, else `args.cni.ips`. netd
    /// gives an endpoint one IPv4 address and, on a network with IPv6, one IPv6
    /// address: at most one of each family; anything else is refused, not ignored.
    pub fn static_ips(&self) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), CniError> {
        let from_args: Vec<String> = self
            .args
            .as_ref()
            .and_then(|a| a.pointer("/cni/ips"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let ips = if self.runtime_config.ips.is_empty() {
            &from_args
        } else {
            &self.runtime_config.ips
        };
        let (mut v4, mut v6) = (None, None);
        for one in ips {
            let addr = one.split('/').next().unwrap_or(one);
            match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => {
                    if let Some(first) = v4.replace(ip) {
                        return Err(invalid(format!(
                            "ips: two IPv4 addresses ({first} and {ip}): netd gives an endpoint one IPv4 and one IPv6 address"
                        )));
                    }
                }
                Ok(IpAddr::V6(ip)) => {
                    if let Some(first) = v6.replace(ip) {
                        return Err(invalid(format!(
                            "ips: two IPv6 addresses ({first} and {ip}): netd gives an endpoint one IPv4 and one IPv6 address"
                        )));
                    }
                }
                Err(_) => return Err(invalid(format!("ips: {one:?} is not an IP address"))),
            }
        }
        Ok((v4, v6))
    }

    /// The aliases of this network's endpoint.
    pub fn aliases(&self) -> Vec<String> {
        match &self.runtime_config.aliases {
            Aliases::List(l) => l.clone(),
            Aliases::PerNetwork(m) => m.get(&self.name).cloned().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::at_least;

    /// The spec's example configuration as passed to `tuning` (mac capability) and to
    /// `portmap` (portMappings capability), with netd-cni's own keys.
    #[test]
    fn spec_examples_parse() {
        let tuning = r#"{
          "cniVersion": "1.1.0", "name": "dbnet", "type": "tuning",
          "sysctl": {"net.core.somaxconn": "500"},
          "runtimeConfig": {"mac": "00:11:22:33:44:66"},
          "prevResult": {"ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}]}
        }"#;
        let c = NetConf::parse(tuning.as_bytes()).unwrap();
        assert_eq!(c.runtime_config.mac.as_deref(), Some("00:11:22:33:44:66"));
        assert_eq!(c.network().unwrap(), "dbnet");
        assert!(c.prev_result.is_some());
        let portmap = r#"{
          "cniVersion": "1.1.0", "name": "dbnet", "type": "netd-cni", "network": "web",
          "socket": "/tmp/x.sock",
          "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8000, "containerPort": 8001, "protocol": "udp", "hostIP": "10.0.0.1"}]}
        }"#;
        let c = NetConf::parse(portmap.as_bytes()).unwrap();
        assert_eq!(c.network().unwrap(), "web");
        assert_eq!(c.socket(), PathBuf::from("/tmp/x.sock"));
        let ports = c.port_mappings().unwrap();
        assert_eq!(
            ports,
            vec![
                PortSpec {
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                    proto: Proto::Tcp
                },
                PortSpec {
                    host_ip: Some(Ipv4Addr::new(10, 0, 0, 1).into()),
                    host_port: 8000,
                    container_port: 8001,
                    proto: Proto::Udp
                },
            ]
        );
    }

    #[test]
    fn versions_outside_the_supported_set_are_error_1() {
        for v in ["0.2.0", "", "2.0.0", "x"] {
            let conf = format!(r#"{{"cniVersion": "{v}", "name": "n", "type": "netd-cni"}}"#);
            let e = NetConf::parse(conf.as_bytes()).unwrap_err();
            assert_eq!(e.code, code::INCOMPATIBLE_VERSION, "{v}");
        }
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
        assert!(at_least("1.1.0", "0.4.0") && at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0") && !at_least("1.0.0", "1.1.0"));
    }

    #[test]
    fn capabilities_become_a_request_or_a_clear_error() {
        let conf = |rc: &str| {
            NetConf::parse(
                format!(
                    r#"{{"cniVersion":"1.0.0","name":"n","type":"netd-cni","runtimeConfig":{rc}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(
            conf(r#"{"ips":["10.2.2.42/24"]}"#).static_ips().unwrap(),
            (Some(Ipv4Addr::new(10, 2, 2, 42)), None)
        );
        // One address of each family: a dual-stack endpoint's.
        assert_eq!(
            conf(r#"{"ips":["fd00:5::42/64","10.2.2.42/24"]}"#)
                .static_ips()
                .unwrap(),
            (
                Some(Ipv4Addr::new(10, 2, 2, 42)),
                Some("fd00:5::42".parse().unwrap())
            )
        );
        let e = conf(r#"{"ips":["10.0.0.1","10.0.0.2"]}"#)
            .static_ips()
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.details.contains("two IPv4 addresses"), "{e}");
        let e = conf(r#"{"ips":["fd00::1","fd00::2"]}"#)
            .static_ips()
            .unwrap_err();
        assert!(e.details.contains("two IPv6 addresses"), "{e}");
        let e = conf(r#"{"ips":["nonsense"]}"#).static_ips().unwrap_err();
        assert!(e.details.contains("not an IP address"), "{e}");
        // portMappings on IPv6: a hostIP of that family, or none (both families).
        let six = conf(
            r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"hostIP":"::"},
                                {"hostPort":8081,"containerPort":80,"hostIP":"fd00:199::1"}]}"#,
        )
        .port_mappings()
        .unwrap();
        assert_eq!(six[0].host_ip, Some(Ipv6Addr::UNSPECIFIED.into()));
        assert_eq!(six[1].host_ip, Some("fd00:199::1".parse().unwrap()));
        let e = conf(r#"{"portMappings":[{"hostPort":1,"containerPort":2,"hostIP":"x::y"}]}"#)
            .port_mappings()
            .unwrap_err();
        assert!(e.details.contains("not an IP address"), "{e}");
        let e = conf(r#"{"portMappings":[{"hostPort":1,"containerPort":2,"protocol":"icmp"}]}"#)
            .port_mappings()
            .unwrap_err();
        assert!(e.details.contains("icmp"), "{e}");
        let sctp = conf(r#"{"portMappings":[{"hostPort":1,"containerPort":2,"protocol":"SCTP"}]}"#)
            .port_mappings()
            .unwrap();
        assert_eq!(sctp[0].proto, Proto::Sctp);
        assert_eq!(
            conf(r#"{"aliases":["db","primary-db"]}"#).aliases(),
            ["db", "primary-db"]
        );
        assert_eq!(
            conf(r#"{"aliases":{"n":["web"],"other":["x"]}}"#).aliases(),
            ["web"]
        );
        let with_args = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"netd-cni","args":{"cni":{"ips":["10.2.2.42"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            with_args.static_ips().unwrap(),
            (Some(Ipv4Addr::new(10, 2, 2, 42)), None)
        );
    }

    #[test]
    fn gc_attachments_parse() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"netd-cni",
                "cni.dev/valid-attachments":[{"containerID":"a1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![ValidAttachment {
                container_id: "a1".into(),
                ifname: "eth0".into()
            }]
        );
    }
}
