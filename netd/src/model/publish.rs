//! Ports and protocols: the one table of protocol names, published ports, and the
//! parsing of Docker's `-p` and `--expose` specs.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::error::NetdError;

/// The IP protocols netd tracks, and the one table of their names: what users type
/// (`-p 53/udp`, `conntrack ls --proto icmp`), what the API and the store carry. Their
/// numbers belong to the datapath (`datapath::ipproto`). The NAT tracks every IP
/// protocol; those without a name here travel as their number (`Other`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProto {
    Tcp,
    Udp,
    Icmp,
    Sctp,
    Gre,
    Esp,
    /// Any other IP protocol, by its number.
    Other(u8),
}

impl IpProto {
    /// The protocols with a name.
    pub const ALL: [IpProto; 6] = [
        IpProto::Tcp,
        IpProto::Udp,
        IpProto::Icmp,
        IpProto::Sctp,
        IpProto::Gre,
        IpProto::Esp,
    ];

    /// The name (`Other`'s is "ip": its number is in `Display`).
    pub fn name(self) -> &'static str {
        match self {
            IpProto::Tcp => "tcp",
            IpProto::Udp => "udp",
            IpProto::Icmp => "icmp",
            IpProto::Sctp => "sctp",
            IpProto::Gre => "gre",
            IpProto::Esp => "esp",
            IpProto::Other(_) => "ip",
        }
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProto::Other(n) => write!(f, "{n}"),
            p => f.write_str(p.name()),
        }
    }
}

impl FromStr for IpProto {
    type Err = NetdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = IpProto::ALL.into_iter().find(|p| p.name() == s) {
            return Ok(p);
        }
        s.parse::<u8>().map(IpProto::Other).map_err(|_| {
            NetdError::InvalidArgument(format!(
                "unknown protocol {s:?}: use tcp, udp, icmp, sctp, gre, esp or a protocol number"
            ))
        })
    }
}

/// The protocols a port is published for: the part of [`IpProto`] with ports (as
/// Docker's `-p PORT/tcp|udp|sctp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl From<Proto> for IpProto {
    fn from(p: Proto) -> IpProto {
        match p {
            Proto::Tcp => IpProto::Tcp,
            Proto::Udp => IpProto::Udp,
            Proto::Sctp => IpProto::Sctp,
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
            Ok(IpProto::Sctp) => Ok(Proto::Sctp),
            _ => Err(NetdError::InvalidArgument(format!(
                "unknown protocol {s:?} (use tcp, udp or sctp)"
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
/// The host address's family is the mapping's: 0.0.0.0 is every IPv4 address of the
/// host, :: every IPv6 one (stored values from before IPv6, "0.0.0.0" and the like,
/// read as they always did).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// Two mappings collide if they share protocol, address family and host port and
    /// their host IPs overlap (equal, or either is the family's wildcard): 0.0.0.0:80
    /// and [::]:80 are two sockets, as in Docker.
    pub fn collides_with(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && self.host_ip.is_ipv4() == other.host_ip.is_ipv4()
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }

    /// The host side as Docker prints it: `0.0.0.0:8080`, `[::]:8080`.
    pub fn host(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.host_port)
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.container_port,
            self.proto,
            self.host()
        )
    }
}

/// A `-p` as the user wrote it: `host_ip` is None when it names no host address, which
/// Docker 27 publishes on both families (`expand_specs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub host_ip: Option<IpAddr>,
    /// 0: the daemon picks a free one.
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortSpec {
    /// The mapping of this spec on host address `host_ip`.
    pub fn on(&self, host_ip: IpAddr) -> PortMapping {
        PortMapping {
            host_ip,
            host_port: self.host_port,
            container_port: self.container_port,
            proto: self.proto,
        }
    }
}

/// What `-p` specs publish, as Docker 27 does it: a spec with a host address on that
/// address only; one without on `default_v4` (the network's host_binding_ipv4, 0.0.0.0
/// unless set) and, when the container has an IPv6 address on the network it is
/// published through (`ipv6`) and no IPv4 default binding is set, on :: too, with the
/// same host port. Such a pair comes out adjacent, IPv4 first (`is_twin`).
pub fn expand_specs(specs: &[PortSpec], default_v4: Ipv4Addr, ipv6: bool) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for s in specs {
        match s.host_ip {
            Some(ip) => out.push(s.on(ip)),
            None => {
                out.push(s.on(IpAddr::V4(default_v4)));
                if ipv6 && default_v4.is_unspecified() {
                    out.push(s.on(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
                }
            }
        }
    }
    out
}

/// Whether `m` is the IPv6 half of a both-families pair whose IPv4 half is `prev`
/// (`expand_specs`): a random host port is picked once for the two.
pub fn is_twin(prev: &PortMapping, m: &PortMapping) -> bool {
    prev.host_ip.is_ipv4()
        && m.host_ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        && prev.proto == m.proto
        && prev.container_port == m.container_port
        && m.host_port == 0
}

/// Parses a Docker `-p` spec: `[ip:][hostPort[-end]:]containerPort[-end][/tcp|/udp]`,
/// where an IPv6 `ip` is written in brackets (`[::]:8080:80`, `[fd00::1]::53/udp`). A
/// missing host port (`-p 80`, `-p ip::80`) yields host port 0: the daemon picks a free
/// one for each container port.
pub fn parse_publish(spec: &str) -> Result<Vec<PortSpec>, NetdError> {
    let bad =
        |why: &str| NetdError::InvalidArgument(format!("invalid publish spec {spec:?}: {why}"));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.parse::<Proto>().map_err(|e| bad(&e.to_string()))?),
        None => (spec, Proto::Tcp),
    };
    let (ip, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (inside, after) = r
                .split_once(']')
                .ok_or_else(|| bad("'[' without its ']'"))?;
            let ip = inside
                .parse::<Ipv6Addr>()
                .map_err(|_| bad(&format!("{inside:?} is not an IPv6 address")))?;
            let after = after
                .strip_prefix(':')
                .ok_or_else(|| bad("a host port must follow the ']'"))?;
            (Some(IpAddr::V6(ip)), after)
        }
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip_part, host, cont) = match (ip, parts.as_slice()) {
        (None, [c]) => (None, None, *c),
        (None, [h, c]) => (None, Some(*h), *c),
        (None, [ip, h, c]) => (Some(*ip), Some(*h), *c),
        (Some(_), [h, c]) => (None, Some(*h), *c),
        (None, _) => {
            return Err(bad(
                "too many ':' (write an IPv6 host address in brackets: [::1]:8080:80)",
            ))
        }
        (Some(_), _) => return Err(bad("expected [IPv6]:hostPort:containerPort")),
    };
    let host_ip = match (ip, ip_part) {
        (Some(ip), _) => Some(ip),
        (None, None | Some("")) => None,
        (None, Some(s)) => Some(IpAddr::V4(s.parse::<Ipv4Addr>().map_err(|_| {
            bad(&format!(
                "{s:?} is not an IPv4 address (an IPv6 one goes in brackets)"
            ))
        })?)),
    };
    let (c_lo, c_hi) = parse_range(cont).map_err(|w| bad(&w))?;
    let (h_lo, h_hi) = match host {
        None | Some("") => {
            return Ok((c_lo..=c_hi)
                .map(|c| PortSpec {
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
        .map(|i| PortSpec {
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
        for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
            assert_eq!(p.to_string().parse::<Proto>().unwrap(), p);
            assert_eq!(IpProto::from(p).name(), p.to_string());
        }
        assert!("icmp"
            .parse::<Proto>()
            .unwrap_err()
            .to_string()
            .contains("use tcp, udp or sctp"));
        assert!("ospf"
            .parse::<IpProto>()
            .unwrap_err()
            .to_string()
            .contains("unknown protocol"));
        // A protocol without a name travels as its number, both ways.
        assert_eq!("89".parse::<IpProto>().unwrap(), IpProto::Other(89));
        assert_eq!(
            serde_json::to_string(&IpProto::Other(89)).unwrap(),
            "\"89\""
        );
        // The store's form is unchanged: a name.
        assert_eq!(
            serde_json::from_str::<Proto>("\"udp\"").unwrap(),
            Proto::Udp
        );
        assert!(serde_json::from_str::<Proto>("\"icmp\"").is_err());
    }

    fn pm(ip: [u8; 4], h: u16, c: u16, p: Proto) -> PortMapping {
        PortMapping {
            host_ip: IpAddr::from(ip),
            host_port: h,
            container_port: c,
            proto: p,
        }
    }

    fn spec(ip: Option<&str>, h: u16, c: u16, p: Proto) -> PortSpec {
        PortSpec {
            host_ip: ip.map(|i| i.parse().unwrap()),
            host_port: h,
            container_port: c,
            proto: p,
        }
    }

    #[test]
    fn publish_specs() {
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            vec![spec(None, 8080, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("0.0.0.0:8080:80").unwrap(),
            vec![spec(Some("0.0.0.0"), 8080, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1:53:5353/udp").unwrap(),
            vec![spec(Some("127.0.0.1"), 53, 5353, Proto::Udp)]
        );
        assert_eq!(
            parse_publish("8000-8002:80-82").unwrap(),
            vec![
                spec(None, 8000, 80, Proto::Tcp),
                spec(None, 8001, 81, Proto::Tcp),
                spec(None, 8002, 82, Proto::Tcp)
            ]
        );
    }

    #[test]
    fn ipv6_publish_specs_take_brackets() {
        assert_eq!(
            parse_publish("[::]:8081:80").unwrap(),
            vec![spec(Some("::"), 8081, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("[fd00:199::1]:53:5353/udp").unwrap(),
            vec![spec(Some("fd00:199::1"), 53, 5353, Proto::Udp)]
        );
        assert_eq!(
            parse_publish("[::1]::80").unwrap(),
            vec![spec(Some("::1"), 0, 80, Proto::Tcp)],
            "no host port: a random one"
        );
        assert_eq!(parse_publish("[::]:9000-9001:90-91").unwrap().len(), 2);
        for (bad, why) in [
            ("[::1:8080:80", "without its ']'"),
            ("[10.0.0.1]:8080:80", "not an IPv6 address"),
            ("[::1]8080:80", "must follow"),
            ("[::1]:80", "expected [IPv6]"),
            ("::1:8080:80", "in brackets"),
            ("fd00::1:8080:80", "in brackets"),
        ] {
            let e = parse_publish(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_spec_without_host_address_publishes_on_both_families_with_one_port() {
        let specs = parse_publish("8080:80").unwrap();
        let both = expand_specs(&specs, Ipv4Addr::UNSPECIFIED, true);
        assert_eq!(
            both.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]
        );
        // Without IPv6 on the network: IPv4 only.
        assert_eq!(
            expand_specs(&specs, Ipv4Addr::UNSPECIFIED, false),
            vec![pm([0; 4], 8080, 80, Proto::Tcp)]
        );
        // A network's IPv4 default binding replaces the wildcards: no IPv6 half.
        assert_eq!(
            expand_specs(&specs, Ipv4Addr::new(10, 199, 0, 1), true),
            vec![pm([10, 199, 0, 1], 8080, 80, Proto::Tcp)]
        );
        // An address names the family: one mapping.
        for (s, host) in [
            ("0.0.0.0:8082:80", "0.0.0.0:8082"),
            ("[::]:8081:80", "[::]:8081"),
        ] {
            let m = expand_specs(&parse_publish(s).unwrap(), Ipv4Addr::UNSPECIFIED, true);
            assert_eq!(m.len(), 1, "{s}");
            assert_eq!(m[0].host().to_string(), host);
        }
        // Random ports: the pair is marked so that one port serves both.
        let r = expand_specs(&parse_publish("80").unwrap(), Ipv4Addr::UNSPECIFIED, true);
        assert_eq!(r.len(), 2);
        assert!(is_twin(&r[0], &r[1]));
        assert!(!is_twin(&r[1], &r[0]));
        assert!(
            !is_twin(&pm([0; 4], 0, 81, Proto::Tcp), &r[1]),
            "another port"
        );
    }

    #[test]
    fn stored_mappings_from_before_ipv6_still_read() {
        let m: PortMapping = serde_json::from_str(
            r#"{"host_ip":"0.0.0.0","host_port":8080,"container_port":80,"proto":"tcp"}"#,
        )
        .unwrap();
        assert_eq!(m, pm([0; 4], 8080, 80, Proto::Tcp));
        let m6 = PortMapping {
            host_ip: "::".parse().unwrap(),
            ..m
        };
        let back: PortMapping = serde_json::from_str(&serde_json::to_string(&m6).unwrap()).unwrap();
        assert_eq!(back, m6);
    }

    #[test]
    fn bad_publish_specs_name_the_problem() {
        for (spec, why) in [
            ("0:80", "out of range"),
            ("70000:80", "out of range"),
            ("abc:80", "not a port"),
            ("8080:80/dccp", "unknown protocol"),
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
    fn sctp_is_published_as_in_docker() {
        assert_eq!(
            parse_publish("8132:132/sctp").unwrap(),
            vec![spec(None, 8132, 132, Proto::Sctp)]
        );
        assert_eq!(
            parse_expose("9000-9001/sctp").unwrap(),
            vec![(9000, Proto::Sctp), (9001, Proto::Sctp)]
        );
    }

    #[test]
    fn missing_host_ports_are_left_to_the_daemon() {
        assert_eq!(
            parse_publish("80").unwrap(),
            vec![spec(None, 0, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse_publish("127.0.0.1::53/udp").unwrap(),
            vec![spec(Some("127.0.0.1"), 0, 53, Proto::Udp)]
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

    #[test]
    fn collisions_are_per_family() {
        let v4 = pm([0; 4], 8080, 80, Proto::Tcp);
        let any6 = PortMapping {
            host_ip: "::".parse().unwrap(),
            ..v4.clone()
        };
        let one6 = PortMapping {
            host_ip: "fd00:199::1".parse().unwrap(),
            ..v4.clone()
        };
        assert!(!v4.collides_with(&any6), "0.0.0.0 and :: are two sockets");
        assert!(!any6.collides_with(&v4));
        assert!(
            any6.collides_with(&any6.clone()),
            "two :: wildcards collide"
        );
        assert!(any6.collides_with(&one6), ":: covers every IPv6 address");
        assert!(!one6.collides_with(&PortMapping {
            host_ip: "fd00:199::2".parse().unwrap(),
            ..v4.clone()
        }));
        assert!(!one6.collides_with(&pm([10, 199, 0, 1], 8080, 80, Proto::Tcp)));
    }
}
