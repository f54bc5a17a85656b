//! Host ports: which ones host processes use, and picking free ones for `-p CP` / `-P`.
use std::{collections::HashSet, net::Ipv4Addr};

use crate::{
    error::NetdError,
    model::{PortMapping, Proto},
    store::State,
};

/// Sockets of the host namespace, read from /proc/net (which shows the reading
/// process's namespace: the daemon's).
#[derive(Default)]
pub struct HostSockets {
    /// (proto, local address, port) of listening TCP and bound UDP sockets.
    bound: Vec<(Proto, Ipv4Addr, u16)>,
    /// Every local port in use, any state.
    any: HashSet<(Proto, u16)>,
}

impl HostSockets {
    /// The address a host socket listens on that `m` would take traffic from.
    pub fn listening(&self, m: &PortMapping) -> Option<String> {
        self.bound
            .iter()
            .find(|(p, ip, port)| {
                *p == m.proto
                    && *port == m.host_port
                    && (*ip == m.host_ip || ip.is_unspecified() || m.host_ip.is_unspecified())
            })
            .map(|(_, ip, port)| format!("{ip}:{port}"))
    }
}

pub fn host_sockets() -> HostSockets {
    let mut hs = HostSockets::default();
    for (proto, file) in [(Proto::Tcp, "/proc/net/tcp"), (Proto::Udp, "/proc/net/udp")] {
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
            let (Ok(ip), Ok(port)) = (
                u32::from_str_radix(ip_hex, 16),
                u16::from_str_radix(port_hex, 16),
            ) else {
                continue;
            };
            // /proc/net prints the network-order address as a native u32.
            let ip = Ipv4Addr::from(ip.to_ne_bytes());
            hs.any.insert((proto, port));
            // TCP_LISTEN is 0A; an unconnected bound UDP socket is 07 (TCP_CLOSE).
            let bound = match proto {
                Proto::Tcp => *state == "0A",
                Proto::Udp => *state == "07",
            };
            if bound {
                hs.bound.push((proto, ip, port));
            }
        }
    }
    hs
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
/// (same protocol), not used by a host socket, not in the masquerade range.
pub fn assign_random(
    ports: &mut [PortMapping],
    state: &State,
    host: &HostSockets,
    snat: (u16, u16),
) -> Result<(), NetdError> {
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
    taken.extend(host.any.iter().copied());
    let span = (hi - lo) as u32 + 1;
    let start = (std::process::id() ^ nanos()) % span;
    for m in ports.iter_mut().filter(|m| m.host_port == 0) {
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
