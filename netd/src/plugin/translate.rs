//! Docker's words to netd's: CreateNetwork's IPAM data and options to a
//! `DockerNetwork`, an endpoint's CIDR address and MAC, port bindings to
//! `PortMapping`s and back. Pure functions; every refusal names the field.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde_json::{Map, Value};

use super::wire::{
    CreateNetworkRequest, PortBinding, TransportPort, OPT_ENABLE_IPV6, OPT_EXPOSED, OPT_GENERIC,
    OPT_INTERNAL, OPT_PORTMAP,
};
use crate::{
    daemon::{parse_mac, DockerNetwork},
    error::{NetdError, Result},
    model::{PortMapping, PortSpec, Proto},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

fn invalid(m: String) -> NetdError {
    NetdError::InvalidArgument(m)
}

/// "172.18.0.1/16" (or a bare address) as an IPv4 address.
fn cidr_ip(field: &str, s: &str) -> Result<Ipv4Addr> {
    let ip = s.split('/').next().unwrap_or_default();
    ip.parse()
        .map_err(|_| invalid(format!("{field} {s:?} is not an IPv4 address")))
}

/// "fd00:1::1/64" (or a bare address) as an IPv6 address.
fn cidr_ip6(field: &str, s: &str) -> Result<Ipv6Addr> {
    let ip = s.split('/').next().unwrap_or_default();
    ip.parse()
        .map_err(|_| invalid(format!("{field} {s:?} is not an IPv6 address")))
}

/// An option's value as the string `-o` gave (libnetwork keeps them as strings, but
/// a JSON number or bool is taken as written).
fn option_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// CreateNetwork as a netd network: one IPv4 pool, its gateway and auxiliary
/// addresses, `-o` options and `--internal`; with `--ipv6`, one IPv6 pool and its
/// gateway too (a dual-stack netd network).
pub fn network(req: &CreateNetworkRequest) -> Result<DockerNetwork> {
    let options = req.options.clone().unwrap_or_default();
    let pools6 = req.ipv6_data.as_deref().unwrap_or_default();
    let ipv6 = is_true(options.get(OPT_ENABLE_IPV6)) || !pools6.is_empty();
    let (subnet6, gateway6) = match (ipv6, pools6) {
        (false, _) => (None, None),
        (true, [ipam]) => {
            let subnet6: Ipv6Network = ipam
                .pool
                .parse()
                .map_err(|_| invalid(format!("IPAM pool {:?} is not an IPv6 subnet", ipam.pool)))?;
            let gateway6 = match ipam.gateway.as_str() {
                "" => None,
                g => Some(cidr_ip6("IPAM IPv6 gateway", g)?),
            };
            // Auxiliary IPv6 addresses need nothing of netd: Docker's IPAM keeps them
            // out of what it hands out, and netd uses the addresses Docker picks.
            (Some(subnet6), gateway6)
        }
        (true, pools) => {
            return Err(invalid(format!(
                "a netd network with --ipv6 has exactly one IPv6 subnet, Docker gave {}",
                pools.len()
            )))
        }
    };
    let pools = req.ipv4_data.as_deref().unwrap_or_default();
    let [ipam] = pools else {
        return Err(invalid(format!(
            "a netd network has exactly one IPv4 subnet, Docker gave {}",
            pools.len()
        )));
    };
    let subnet: Ipv4Network = ipam
        .pool
        .parse()
        .map_err(|_| invalid(format!("IPAM pool {:?} is not an IPv4 subnet", ipam.pool)))?;
    let gateway = match ipam.gateway.as_str() {
        "" => None,
        g => Some(cidr_ip("IPAM gateway", g)?),
    };
    let mut aux_addresses = BTreeMap::new();
    for (k, v) in ipam.aux_addresses.iter().flatten() {
        let s = option_string(v);
        aux_addresses.insert(k.clone(), cidr_ip("auxiliary address", &s)?);
    }
    let generic: BTreeMap<String, String> = match options.get(OPT_GENERIC) {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), option_string(v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    Ok(DockerNetwork {
        id: req.network_id.clone(),
        subnet,
        gateway,
        aux_addresses,
        options: generic,
        internal: is_true(options.get(OPT_INTERNAL)),
        subnet6,
        gateway6,
    })
}

/// CreateEndpoint's interface: the addresses Docker's IPAM chose (IPv6 on a network
/// with `--ipv6`) and its MAC, if any.
pub struct EndpointAddresses {
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<[u8; 6]>,
}

pub fn endpoint_address(address: &str, address6: &str, mac: &str) -> Result<EndpointAddresses> {
    if address.is_empty() {
        return Err(invalid(
            "the endpoint has no IPv4 address: netd works with Docker's IPAM addresses".into(),
        ));
    }
    let ip = cidr_ip("endpoint address", address)?;
    let ip6 = match address6 {
        "" => None,
        a => Some(cidr_ip6("endpoint IPv6 address", a)?),
    };
    let mac = match mac {
        "" => None,
        m => Some(parse_mac(m)?),
    };
    Ok(EndpointAddresses { ip, ip6, mac })
}

fn proto(n: u8) -> Result<Proto> {
    match n {
        TCP => Ok(Proto::Tcp),
        UDP => Ok(Proto::Udp),
        SCTP => Ok(Proto::Sctp),
        other => Err(invalid(format!(
            "netd publishes tcp, udp and sctp ports only, not IP protocol {other}"
        ))),
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => TCP,
        Proto::Udp => UDP,
        Proto::Sctp => SCTP,
    }
}

/// What ProgramExternalConnectivity publishes: the port bindings and exposed ports.
pub struct Publish {
    pub ports: Vec<PortSpec>,
    pub exposed: Vec<(u16, Proto)>,
}

/// ProgramExternalConnectivity's options: the port bindings (`-p`) as `-p` specs and
/// the exposed ports. A binding without a host address (dockerd 20.10 sends `-p
/// 8080:80` so) stays without one: the core publishes it on both families when the
/// endpoint has IPv6; a host port range gives its first port.
pub fn ports(options: &Map<String, Value>) -> Result<Publish> {
    let bindings: Vec<PortBinding> = match options.get(OPT_PORTMAP) {
        Some(v) if !v.is_null() => {
            serde_json::from_value(v.clone()).map_err(|e| invalid(format!("{OPT_PORTMAP}: {e}")))?
        }
        _ => Vec::new(),
    };
    let exposed: Vec<TransportPort> = match options.get(OPT_EXPOSED) {
        Some(v) if !v.is_null() => {
            serde_json::from_value(v.clone()).map_err(|e| invalid(format!("{OPT_EXPOSED}: {e}")))?
        }
        _ => Vec::new(),
    };
    let mut maps: Vec<PortSpec> = Vec::new();
    for b in &bindings {
        let host_ip = match b.host_ip.as_str() {
            "" => None,
            s if s.contains(':') => Some(IpAddr::V6(cidr_ip6("host address", s)?)),
            s => Some(IpAddr::V4(cidr_ip("host address", s)?)),
        };
        let m = PortSpec {
            host_ip,
            host_port: b.host_port,
            container_port: b.port,
            proto: proto(b.proto)?,
        };
        // Docker may list a binding twice (one per address family it resolved).
        if !maps.contains(&m) {
            maps.push(m);
        }
    }
    let exposed = exposed
        .iter()
        .map(|t| Ok((t.port, proto(t.proto)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Publish {
        ports: maps,
        exposed,
    })
}

/// Published mappings as Docker's port bindings (EndpointOperInfo).
pub fn bindings(ports: &[PortMapping]) -> Vec<PortBinding> {
    ports
        .iter()
        .map(|m| PortBinding {
            proto: proto_number(m.proto),
            ip: String::new(),
            port: m.container_port,
            host_ip: m.host_ip.to_string(),
            host_port: m.host_port,
            host_port_end: m.host_port,
        })
        .collect()
}

pub fn transport_ports(exposed: &[(u16, Proto)]) -> Vec<TransportPort> {
    exposed
        .iter()
        .map(|(port, p)| TransportPort {
            proto: proto_number(*p),
            port: *port,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> Result<DockerNetwork> {
        network(&serde_json::from_value(body).unwrap())
    }

    #[test]
    fn create_network_takes_the_pool_gateway_options_and_internal() {
        let n = create(json!({
            "NetworkID": "ab".repeat(32),
            "Options": {
                "com.docker.network.enable_ipv6": false,
                "com.docker.network.generic": {"com.docker.network.bridge.enable_icc": "false"},
                "com.docker.network.internal": true
            },
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.55.0.0/24",
                          "Gateway": "10.55.0.1/24", "AuxAddresses": {"r": "10.55.0.9/24"}}],
            "IPv6Data": null
        }))
        .unwrap();
        assert_eq!(n.subnet.to_string(), "10.55.0.0/24");
        assert_eq!(n.gateway, Some(Ipv4Addr::new(10, 55, 0, 1)));
        assert_eq!(n.aux_addresses["r"], Ipv4Addr::new(10, 55, 0, 9));
        assert_eq!(n.options["com.docker.network.bridge.enable_icc"], "false");
        assert!(n.internal);
    }

    #[test]
    fn ipv6_data_makes_a_dual_stack_network() {
        let n = create(json!({
            "NetworkID": "x", "Options": {"com.docker.network.enable_ipv6": true},
            "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
            "IPv6Data": [{"AddressSpace": "LocalDefault", "Pool": "fd00:77::/64",
                          "Gateway": "fd00:77::1/64"}]
        }))
        .unwrap();
        assert_eq!(n.subnet6, Some("fd00:77::/64".parse().unwrap()));
        assert_eq!(n.gateway6, Some("fd00:77::1".parse().unwrap()));
        let v4 = create(json!({"NetworkID": "x", "IPv4Data": [{"Pool": "10.1.0.0/24"}]})).unwrap();
        assert_eq!((v4.subnet6, v4.gateway6), (None, None));
    }

    #[test]
    fn bad_pools_are_refused_by_name() {
        let e = create(
            json!({"NetworkID": "x", "Options": {"com.docker.network.enable_ipv6": true},
                              "IPv4Data": [{"Pool": "10.1.0.0/24"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("exactly one IPv6 subnet"), "{e}");
        let e = create(
            json!({"NetworkID": "x", "IPv4Data": [{"Pool": "10.1.0.0/24"}],
                              "IPv6Data": [{"Pool": "10.2.0.0/24"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an IPv6 subnet"), "{e}");
        let e = create(json!({"NetworkID": "x", "IPv4Data": [{"Pool": "10.1.0.0/24"}, {"Pool": "10.2.0.0/24"}]}))
            .unwrap_err();
        assert!(e.to_string().contains("exactly one IPv4 subnet"), "{e}");
        let e = create(json!({"NetworkID": "x", "IPv4Data": [{"Pool": "nonsense"}]})).unwrap_err();
        assert!(e.to_string().contains("IPAM pool"), "{e}");
    }

    #[test]
    fn endpoint_addresses_are_cidrs_and_macs_optional() {
        let a = endpoint_address("10.55.0.2/24", "", "").unwrap();
        assert_eq!(
            (a.ip, a.ip6, a.mac),
            (Ipv4Addr::new(10, 55, 0, 2), None, None)
        );
        let a = endpoint_address("10.55.0.2/24", "fd00:55::2/64", "02:42:0a:37:00:02").unwrap();
        assert_eq!(a.mac, Some([2, 0x42, 10, 55, 0, 2]));
        assert_eq!(a.ip6, Some("fd00:55::2".parse().unwrap()));
        assert!(endpoint_address("", "", "").is_err());
        assert!(endpoint_address("10.55.0.2/24", "", "zz").is_err());
        let e = endpoint_address("10.55.0.2/24", "10.0.0.1/24", "")
            .err()
            .unwrap();
        assert!(e.to_string().contains("not an IPv6 address"), "{e}");
    }

    #[test]
    fn port_bindings_become_specs_of_either_family_without_duplicates() {
        let opts = json!({
            "com.docker.network.portmap": [
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                {"Proto": 6, "IP": "", "Port": 81, "HostIP": "::", "HostPort": 8081, "HostPortEnd": 8081},
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0}
            ],
            "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}, {"Proto": 17, "Port": 53}]
        });
        let Publish {
            ports: specs,
            exposed,
        } = ports(opts.as_object().unwrap()).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!((specs[0].host_ip, specs[0].host_port), (None, 8080));
        assert_eq!(specs[0].proto, Proto::Tcp);
        assert_eq!(specs[1].host_ip, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(specs[2].host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(exposed, vec![(80, Proto::Tcp), (53, Proto::Udp)]);
        let maps: Vec<PortMapping> = specs
            .iter()
            .map(|s| s.on(s.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
            .collect();
        let back = bindings(&maps);
        assert_eq!(back[0].proto, 6);
        assert_eq!(back[1].host_ip, "::");
        assert_eq!(back[2].host_port, 0);
        // SCTP publishes as in Docker; other protocols have no ports to publish.
        let sctp =
            json!({"com.docker.network.portmap": [{"Proto": 132, "Port": 9, "HostPort": 9}]});
        let specs = ports(sctp.as_object().unwrap()).unwrap().ports;
        assert_eq!((specs[0].proto, specs[0].host_port), (Proto::Sctp, 9));
        assert_eq!(
            bindings(&[specs[0].on(IpAddr::V4(Ipv4Addr::UNSPECIFIED))])[0].proto,
            132
        );
        let gre = json!({"com.docker.network.portmap": [{"Proto": 47, "Port": 9, "HostPort": 9}]});
        let e = ports(gre.as_object().unwrap()).err().unwrap();
        assert!(e.to_string().contains("tcp, udp and sctp"), "{e}");
    }
}
