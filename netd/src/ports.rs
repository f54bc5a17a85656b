//! Host ports: which ones host processes use, and picking free ones for `-p CP` / `-P`.
use std::{
    cell::OnceCell,
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::{
    error::NetdError,
    model::{PortMapping, Proto},
    store::State,
};

/// Sockets of the host namespace (the daemon's), from sock_diag (`sockdiag`), or from
/// /proc/net if that fails.
#[derive(Default)]
pub struct HostSockets {
    /// (proto, local address, port) of listening TCP and bound UDP sockets, both
    /// families.
    bound: Vec<(Proto, IpAddr, u16)>,
    /// Every local port in use, any state: read only when a port is picked at random
    /// (it takes the whole connection table).
    any: OnceCell<HashSet<(Proto, u16)>>,
}

impl HostSockets {
    /// The address a host socket of `m`'s family listens on that `m` would take
    /// traffic from.
    pub fn listening(&self, m: &PortMapping) -> Option<String> {
        self.bound
            .iter()
            .find(|(p, ip, port)| {
                *p == m.proto
                    && *port == m.host_port
                    && ip.is_ipv4() == m.host_ip.is_ipv4()
                    && (*ip == m.host_ip || ip.is_unspecified() || m.host_ip.is_unspecified())
            })
            .map(|(_, ip, port)| std::net::SocketAddr::new(*ip, *port).to_string())
    }

    fn any(&self) -> &HashSet<(Proto, u16)> {
        self.any.get_or_init(|| {
            let mut any = match diag_any() {
                Ok(any) => any,
                Err(e) => {
                    log::debug!("sock_diag: {e}; reading /proc/net");
                    proc_sockets().any.take().unwrap_or_default()
                }
            };
            any.extend(sctp_bound().into_iter().map(|(p, _, port)| (p, port)));
            any
        })
    }
}

/// Listening TCP and bound UDP sockets, from sock_diag.
fn diag_bound() -> std::io::Result<Vec<(Proto, IpAddr, u16)>> {
    use crate::sockdiag::{sockets, States, UDP_BOUND};
    let tcp = sockets(false, States::LISTEN)?;
    let udp = sockets(true, States::CLOSE)?;
    Ok(tcp
        .into_iter()
        .map(|s| (Proto::Tcp, s.ip, s.port))
        .chain(
            udp.into_iter()
                .filter(|s| s.state == UDP_BOUND)
                .map(|s| (Proto::Udp, s.ip, s.port)),
        )
        .collect())
}

/// Every local port in use, any state, from sock_diag.
fn diag_any() -> std::io::Result<HashSet<(Proto, u16)>> {
    use crate::sockdiag::{sockets, States};
    let tcp = sockets(false, States::all())?;
    let udp = sockets(true, States::all())?;
    Ok(tcp
        .into_iter()
        .map(|s| (Proto::Tcp, s.port))
        .chain(udp.into_iter().map(|s| (Proto::Udp, s.port)))
        .collect())
}

/// An address as /proc/net/{tcp,udp}[6] print it: the network-order bytes read as
/// native u32s, one for IPv4, four for IPv6.
fn proc_net_addr(hex: &str) -> Option<IpAddr> {
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(hex.get(i * 8..i * 8 + 8)?)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

pub fn host_sockets() -> HostSockets {
    let mut hs = match diag_bound() {
        Ok(bound) => HostSockets {
            bound,
            any: OnceCell::new(),
        },
        Err(e) => {
            log::debug!("sock_diag: {e}; reading /proc/net");
            proc_sockets()
        }
    };
    hs.bound.extend(sctp_bound());
    hs
}

fn proc_sockets() -> HostSockets {
    let mut any = HashSet::new();
    let mut hs = HostSockets::default();
    for (proto, file) in [
        (Proto::Tcp, "/proc/net/tcp"),
        (Proto::Udp, "/proc/net/udp"),
        (Proto::Tcp, "/proc/net/tcp6"),
        (Proto::Udp, "/proc/net/udp6"),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let Some((ip_hex, port_hex)) = local.split_once(':') else {
                continue;
            };
            let (Some(ip), Ok(port)) = (proc_net_addr(ip_hex), u16::from_str_radix(port_hex, 16))
            else {
                continue;
            };
            any.insert((proto, port));
            // TCP_LISTEN is 0A; an unconnected bound UDP socket is 07 (TCP_CLOSE).
            let bound = match proto {
                Proto::Tcp => *state == "0A",
                _ => *state == "07",
            };
            if bound {
                hs.bound.push((proto, ip, port));
            }
        }
    }
    hs.any = OnceCell::from(any);
    hs
}

/// The SCTP endpoints of /proc/net/sctp/eps (only there when the kernel has SCTP):
/// `ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS...`, the port in decimal and each
/// local address in its text form.
fn sctp_endpoints(text: &str) -> Vec<(Proto, IpAddr, u16)> {
    let mut bound = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(Ok(port)) = cols.get(5).map(|p| p.parse::<u16>()) else {
            continue;
        };
        for a in cols.iter().skip(8) {
            if let Ok(ip) = a.parse::<IpAddr>() {
                bound.push((Proto::Sctp, ip, port));
            }
        }
    }
    bound
}

/// The host's SCTP endpoints (sock_diag would need the sctp_diag module loaded).
fn sctp_bound() -> Vec<(Proto, IpAddr, u16)> {
    std::fs::read_to_string("/proc/net/sctp/eps")
        .map(|text| sctp_endpoints(&text))
        .unwrap_or_default()
}

/// The namespace's ephemeral range: Docker picks random host ports from it.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999))
}

/// Gives every mapping with host port 0 a free port: not published by any container
/// (same protocol, either family), not used by a host socket, not in the masquerade
/// range. The IPv6 half of a both-families pair (`model::is_twin`) gets its IPv4
/// half's port.
pub fn assign_random(
    ports: &mut [PortMapping],
    state: &State,
    host: &HostSockets,
    snat: (u16, u16),
) -> Result<(), NetdError> {
    if ports.iter().all(|m| m.host_port != 0) {
        return Ok(());
    }
    let (lo, hi) = ephemeral_range();
    let mut taken: HashSet<(Proto, u16)> = state
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().map(|m| (m.proto, m.host_port)))
        .chain(
            ports
                .iter()
                .filter(|m| m.host_port != 0)
                .map(|m| (m.proto, m.host_port)),
        )
        .collect();
    if ports.iter().any(|m| m.host_port == 0) {
        taken.extend(host.any().iter().copied());
    }
    let span = (hi - lo) as u32 + 1;
    let start = (std::process::id() ^ nanos()) % span;
    for i in 0..ports.len() {
        if ports[i].host_port != 0 {
            continue;
        }
        if i > 0 && crate::model::is_twin(&ports[i - 1], &ports[i]) {
            ports[i].host_port = ports[i - 1].host_port;
            continue;
        }
        let m = &mut ports[i];
        let found = (0..span)
            .map(|i| lo + ((start + i) % span) as u16)
            .find(|p| !taken.contains(&(m.proto, *p)) && !(snat.0..=snat.1).contains(p));
        let Some(p) = found else {
            return Err(NetdError::Conflict(format!(
                "no free host port for {}/{} in {lo}-{hi}",
                m.container_port, m.proto
            )));
        };
        m.host_port = p;
        taken.insert((m.proto, p));
    }
    Ok(())
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{expand_specs, parse_publish};

    #[test]
    fn sctp_endpoints_are_host_sockets_of_their_own_protocol() {
        let eps = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
            ffff8881 ffff8882 2   10  29   9000      0 31337 10.0.0.1 fd00::1\n";
        let hs = HostSockets {
            bound: sctp_endpoints(eps),
            any: OnceCell::new(),
        };
        let m = |ip: &str, proto| PortMapping {
            host_ip: ip.parse().unwrap(),
            host_port: 9000,
            container_port: 9000,
            proto,
        };
        assert_eq!(
            hs.listening(&m("0.0.0.0", Proto::Sctp)).as_deref(),
            Some("10.0.0.1:9000")
        );
        assert!(hs.listening(&m("::", Proto::Sctp)).is_some());
        assert!(hs.listening(&m("0.0.0.0", Proto::Tcp)).is_none());
    }

    #[test]
    fn proc_net_addresses_of_both_families() {
        assert_eq!(
            proc_net_addr("0100007F"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            proc_net_addr("00000000000000000000000001000000"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            proc_net_addr("000000000000000000000000000000000"),
            None,
            "33 digits"
        );
    }

    #[test]
    fn a_random_port_serves_both_families_of_a_pair() {
        let specs = parse_publish("80").unwrap();
        let mut ports = expand_specs(&specs, Ipv4Addr::UNSPECIFIED, true);
        let state = State::default();
        assign_random(&mut ports, &state, &HostSockets::default(), (1, 2)).unwrap();
        assert_ne!(ports[0].host_port, 0);
        assert_eq!(ports[0].host_port, ports[1].host_port);
        assert!(ports[1].host_ip.is_ipv6());
    }

    #[test]
    fn host_sockets_block_their_own_family_only() {
        let hs = HostSockets {
            bound: vec![(Proto::Tcp, "::".parse().unwrap(), 8080)],
            any: OnceCell::from(HashSet::new()),
        };
        let m = expand_specs(
            &parse_publish("8080:80").unwrap(),
            Ipv4Addr::UNSPECIFIED,
            true,
        );
        assert_eq!(hs.listening(&m[0]), None);
        assert_eq!(hs.listening(&m[1]).as_deref(), Some("[::]:8080"));
    }
}
