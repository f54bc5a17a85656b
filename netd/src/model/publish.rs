//! Ports and protocols: the one table of protocol names, published ports, and the
//! parsing of Docker's `-p` and `--expose` specs.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::error::NetdError;

/// The IP protocols netd tracks, and the one table of their names: what users type
/// (`-p 53/udp`, `conntrack ls --proto icmp`), what the API and the store carry. Their
/// numbers belong to the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProto {
    Tcp,
    Udp,
    Icmp,
}

impl IpProto {
    pub const ALL: [IpProto; 3] = [IpProto::Tcp, IpProto::Udp, IpProto::Icmp];

    pub fn name(self) -> &'static str {
        match self {
            IpProto::Tcp => "tcp",
            IpProto::Udp => "udp",
            IpProto::Icmp => "icmp",
        }
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IpProto {
    type Err = NetdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpProto::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                NetdError::InvalidArgument(format!("unknown protocol {s:?}: use tcp, udp or icmp"))
            })
    }
}

/// The protocols a port is published for: the part of [`IpProto`] with ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl From<Proto> for IpProto {
    fn from(p: Proto) -> IpProto {
        match p {
            Proto::Tcp => IpProto::Tcp,
            Proto::Udp => IpProto::Udp,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(IpProto::from(*self).name())
    }
}

impl FromStr for Proto {
    type Err = NetdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<IpProto>() {
            Ok(IpProto::Tcp) => Ok(Proto::Tcp),
            Ok(IpProto::Udp) => Ok(Proto::Udp),
            _ => Err(NetdError::InvalidArgument(format!(
                "unknown protocol {s:?} (use tcp or udp)"
            ))),
        }
    }
}

/// Both travel as their names, in the store and on the wire.
macro_rules! serde_by_name {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_by_name!(IpProto);
serde_by_name!(Proto);

/// One published port: host_ip:host_port -> container_port, as Docker's PortBinding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// 0.0.0.0 means every host address.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// Two mappings collide if they share protocol and host port and their host IPs
    /// overlap (equal, or either is the wildcard).
    pub fn collides_with(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.proto, self.host_ip, self.host_port
        )
    }
}

/// Parses a Docker `-p` spec: `[ip:][hostPort[-end]:]containerPort[-end][/tcp|/udp]`.
/// A missing host port (`-p 80`, `-p ip::80`) yields host port 0: the daemon picks a
/// free one for each container port.
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, NetdError> {
    let bad =
        |why: &str| NetdError::InvalidArgument(format!("invalid publish spec {spec:?}: {why}"));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.parse::<Proto>().map_err(|e| bad(&e.to_string()))?),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, cont) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), Some(*h), *c),
        _ => return Err(bad("too many ':'")),
    };
    let host_ip = match ip {
        None | Some("") => Ipv4Addr::UNSPECIFIED,
        Some(s) => s
            .parse::<Ipv4Addr>()
            .map_err(|_| bad(&format!("{s:?} is not an IPv4 address")))?,
    };
    let (c_lo, c_hi) = parse_range(cont).map_err(|w| bad(&w))?;
    let (h_lo, h_hi) = match host {
        None | Some("") => {
            return Ok((c_lo..=c_hi)
                .map(|c| PortMapping {
                    host_ip,
                    host_port: 0,
                    container_port: c,
                    proto,
                })
                .collect())
        }
        Some(h) => parse_range(h).map_err(|w| bad(&w))?,
    };
    if h_hi - h_lo != c_hi - c_lo {
        return Err(bad("host and container port ranges differ in length"));
    }
    Ok((0..=(c_hi - c_lo))
        .map(|i| PortMapping {
            host_ip,
            host_port: h_lo + i,
            container_port: c_lo + i,
            proto,
        })
        .collect())
}

/// Parses a Docker `--expose` spec: `port[-end][/tcp|/udp]`.
pub fn parse_expose(spec: &str) -> Result<Vec<(u16, Proto)>, NetdError> {
    let bad =
        |why: &str| NetdError::InvalidArgument(format!("invalid expose spec {spec:?}: {why}"));
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.parse::<Proto>().map_err(|e| bad(&e.to_string()))?),
        None => (spec, Proto::Tcp),
    };
    let (lo, hi) = parse_range(ports).map_err(|w| bad(&w))?;
    Ok((lo..=hi).map(|p| (p, proto)).collect())
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is out of range 1-65535")),
            Err(_) => Err(format!("{p:?} is not a port number")),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!("port range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_have_one_table() {
        for p in IpProto::ALL {
            assert_eq!(p.name().parse::<IpProto>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        for p in [Proto::Tcp, Proto::Udp] {
            assert_eq!(p.to_string().parse::<Proto>().unwrap(), p);
            assert_eq!(IpProto::from(p).name(), p.to_string());
        }
        assert!("icmp"
            .parse::<Proto>()
            .unwrap_err()
            .to_string()
            .contains("use tcp or udp"));
        assert!("sctp"
            .parse::<IpProto>()
            .unwrap_err()
            .to_string()
            .contains("unknown protocol"));
        // The store's form is unchanged: a name.
        assert_eq!(
            serde_json::from_str::<Proto>("\"udp\"").unwrap(),
            Proto::Udp
        );
        assert!(serde_json::from_str::<Proto>("\"icmp\"").is_err());
    }

    fn pm(ip: [u8; 4], h: u16, c: u16, p: Proto) -> PortMapping {
        PortMapping {
            host_ip: Ipv4Addr::from(ip),
            host_port: h,
            container_port: c,
            proto: p,
        }
    }

    #[test]
    fn publish_specs() {
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            vec![pm([0; 4], 8080, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1:53:5353/udp").unwrap(),
            vec![pm([127, 0, 0, 1], 53, 5353, Proto::Udp)]
        );
        assert_eq!(
            parse_publish("8000-8002:80-82").unwrap(),
            vec![
                pm([0; 4], 8000, 80, Proto::Tcp),
                pm([0; 4], 8001, 81, Proto::Tcp),
                pm([0; 4], 8002, 82, Proto::Tcp)
            ]
        );
    }

    #[test]
    fn bad_publish_specs_name_the_problem() {
        for (spec, why) in [
            ("0:80", "out of range"),
            ("70000:80", "out of range"),
            ("abc:80", "not a port"),
            ("8080:80/sctp", "unknown protocol"),
            ("1.2.3:8080:80", "not an IPv4"),
            ("8000-8001:80", "differ in length"),
            ("8002-8001:80-81", "ends before"),
            ("1:2:3:4", "too many"),
            ("80/icmp", "unknown protocol"),
        ] {
            let e = parse_publish(spec).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
            assert!(e.contains(spec), "{spec}: {e}");
        }
    }

    #[test]
    fn missing_host_ports_are_left_to_the_daemon() {
        assert_eq!(
            parse_publish("80").unwrap(),
            vec![pm([0; 4], 0, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1::53/udp").unwrap(),
            vec![pm([127, 0, 0, 1], 0, 53, Proto::Udp)]
        );
        assert_eq!(parse_publish("80-81").unwrap().len(), 2);
    }

    #[test]
    fn expose_specs() {
        assert_eq!(parse_expose("80").unwrap(), vec![(80, Proto::Tcp)]);
        assert_eq!(parse_expose("53/udp").unwrap(), vec![(53, Proto::Udp)]);
        assert_eq!(parse_expose("8000-8001").unwrap().len(), 2);
        assert!(parse_expose("0").is_err());
    }

    #[test]
    fn collisions() {
        let a = pm([0; 4], 80, 80, Proto::Tcp);
        assert!(a.collides_with(&pm([10, 0, 0, 1], 80, 81, Proto::Tcp)));
        assert!(!a.collides_with(&pm([0; 4], 80, 80, Proto::Udp)));
        assert!(!pm([10, 0, 0, 1], 80, 80, Proto::Tcp).collides_with(&pm(
            [10, 0, 0, 2],
            80,
            80,
            Proto::Tcp
        )));
    }
}
