//! Published ports in the maps, one code path for both families: `PortMap<W>` over the
//! port map of a family (`NETD_PORTS`, `NETD_PORTS6`) and its direct-port map for
//! gateway mode `routed` (`NETD_DIRECT`, `NETD_DIRECT6`), where `W` is the family's
//! wire form of an address (`Wire`), as the eBPF conntrack's `Family` is.
use std::{collections::HashMap as StdHashMap, hash::Hash, net::IpAddr};

use aya::maps::{HashMap, MapData};
use netd_common::{Backend, Backend6, PortKey, PortKey6};

use super::{maps::ipproto, sync::sync, Datapath};
use crate::model::PortMapping;

/// One family's addresses as the maps hold them: IPv4's `u32` and IPv6's 16 bytes, in
/// network byte order; its port map's key and value types.
pub trait Wire: aya::Pod + Copy + Eq + Hash {
    type Key: aya::Pod + Copy + Eq + Hash;
    type Backend: aya::Pod + Copy + PartialEq;
    /// `ip` in this family's wire form; None for the other family.
    fn of(ip: IpAddr) -> Option<Self>;
    fn key(host: Self, port: u16, proto: u8) -> Self::Key;
    fn key_proto(k: &Self::Key) -> u8;
    fn backend(ip: Self, port: u16) -> Self::Backend;
    /// The backend's (address, port).
    fn backend_parts(b: &Self::Backend) -> (Self, u16);
}

impl Wire for u32 {
    type Key = PortKey;
    type Backend = Backend;
    fn of(ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => Some(u32::from(a).to_be()),
            IpAddr::V6(_) => None,
        }
    }
    fn key(host_ip: u32, host_port: u16, proto: u8) -> PortKey {
        PortKey {
            host_ip,
            host_port,
            proto,
            _pad: 0,
        }
    }
    fn key_proto(k: &PortKey) -> u8 {
        k.proto
    }
    fn backend(ip: u32, port: u16) -> Backend {
        Backend { ip, port, _pad: 0 }
    }
    fn backend_parts(b: &Backend) -> (u32, u16) {
        (b.ip, b.port)
    }
}

impl Wire for [u8; 16] {
    type Key = PortKey6;
    type Backend = Backend6;
    fn of(ip: IpAddr) -> Option<[u8; 16]> {
        match ip {
            IpAddr::V6(a) => Some(a.octets()),
            IpAddr::V4(_) => None,
        }
    }
    fn key(host_ip: [u8; 16], host_port: u16, proto: u8) -> PortKey6 {
        PortKey6 {
            host_ip,
            host_port,
            proto,
            _pad: 0,
        }
    }
    fn key_proto(k: &PortKey6) -> u8 {
        k.proto
    }
    fn backend(ip: [u8; 16], port: u16) -> Backend6 {
        Backend6 { ip, port, _pad: 0 }
    }
    fn backend_parts(b: &Backend6) -> ([u8; 16], u16) {
        (b.ip, b.port)
    }
}

/// `m`'s key in its family's port map: (protocol, host address or the unspecified one
/// for every address, host port). None when `m` is on the other family's address.
pub fn port_key<W: Wire>(m: &PortMapping) -> Option<W::Key> {
    let host = W::of(m.host_ip)?;
    Some(W::key(host, m.host_port.to_be(), ipproto(m.proto.into())))
}

/// `m`'s key in its family's direct-port map, leading to container address `c`.
fn direct_key<W: Wire>(m: &PortMapping, c: W) -> W::Key {
    W::key(c, m.container_port.to_be(), ipproto(m.proto.into()))
}

/// One family's published ports: where each leads, and the container ports a `routed`
/// network opens straight at the container.
pub struct PortMap<W: Wire> {
    ports: HashMap<MapData, W::Key, W::Backend>,
    direct: HashMap<MapData, W::Key, u32>,
}

impl<W: Wire> PortMap<W> {
    pub fn new(ports: aya::maps::Map, direct: aya::maps::Map) -> anyhow::Result<PortMap<W>> {
        Ok(PortMap {
            ports: HashMap::try_from(ports)?,
            direct: HashMap::try_from(direct)?,
        })
    }

    /// Publishes `m` (of this family) to container address `c`; `routed`: its
    /// container port opens straight at `c` too.
    pub fn insert(&mut self, m: &PortMapping, c: W, routed: bool) -> anyhow::Result<()> {
        let k = port_key::<W>(m)
            .ok_or_else(|| anyhow::anyhow!("port mapping {m} is on the other address family"))?;
        let b = W::backend(c, m.container_port.to_be());
        self.ports.insert(k, b, 0)?;
        if routed {
            self.direct.insert(direct_key(m, c), 1, 0)?;
        }
        Ok(())
    }

    /// Unpublishes `m`; its direct port closes unless another mapping still opens it.
    pub fn remove(&mut self, m: &PortMapping) {
        let Some(k) = port_key::<W>(m) else {
            return;
        };
        let led_to = self.ports.get(&k, 0).ok();
        let _ = self.ports.remove(&k);
        let Some(b) = led_to else {
            return;
        };
        let (c, port) = W::backend_parts(&b);
        let dk = direct_key(m, c);
        // Only a routed container's ports are open directly; for the others (nearly
        // every removal) nothing is scanned: a scan per removal made removing N ports
        // cost N^2 map reads.
        if self.direct.get(&dk, 0).is_err() {
            return;
        }
        let proto = W::key_proto(&k);
        let shared =
            self.ports.iter().flatten().any(|(pk, other)| {
                W::key_proto(&pk) == proto && W::backend_parts(&other) == (c, port)
            });
        if !shared {
            let _ = self.direct.remove(&dk);
        }
    }

    /// Whether `m` leads to `c`.
    pub fn has(&self, m: &PortMapping, c: W) -> bool {
        port_key::<W>(m).is_some_and(|k| {
            self.ports
                .get(&k, 0)
                .is_ok_and(|v| v == W::backend(c, m.container_port.to_be()))
        })
    }

    /// Makes both maps hold exactly `want`: (mapping, container address, routed).
    pub fn sync(&mut self, want: &[(&PortMapping, W, bool)]) -> anyhow::Result<()> {
        let (mut ports, mut direct) = (StdHashMap::new(), StdHashMap::new());
        for (m, c, routed) in want {
            if let Some(k) = port_key::<W>(m) {
                ports.insert(k, W::backend(*c, m.container_port.to_be()));
                if *routed {
                    direct.insert(direct_key(m, *c), 1u32);
                }
            }
        }
        sync(&mut self.ports, &ports)?;
        sync(&mut self.direct, &direct)?;
        Ok(())
    }

    pub fn entries(&self) -> usize {
        self.ports.keys().flatten().count()
    }
}

impl Datapath {
    /// Publishes `m`, leading to `container_ip`, in the port map of `m`'s host address
    /// family; the container address must be of the same family. A container of a
    /// `routed` network (its endpoint entry says so; written before its ports) gets its
    /// container port opened straight at its address too.
    pub fn publish(
        &mut self,
        m: &PortMapping,
        container_ip: impl Into<IpAddr>,
    ) -> anyhow::Result<()> {
        let c = container_ip.into();
        let routed = self.routed_endpoint(c);
        match (m.host_ip, c) {
            (IpAddr::V4(_), IpAddr::V4(_)) => self.ports4.insert(m, wire(c)?, routed),
            (IpAddr::V6(_), IpAddr::V6(_)) => self.ports6.insert(m, wire(c)?, routed),
            _ => Err(anyhow::anyhow!(
                "port mapping {m} cannot lead to {c}: another address family"
            )),
        }
    }

    pub fn unpublish(&mut self, m: &PortMapping) {
        self.port_stats.remove(m);
        match m.host_ip {
            IpAddr::V4(_) => self.ports4.remove(m),
            IpAddr::V6(_) => self.ports6.remove(m),
        }
    }

    /// Whether the port map of `m`'s family leads `m` to `container_ip`.
    pub fn has_port(&self, m: &PortMapping, container_ip: impl Into<IpAddr>) -> bool {
        let c = container_ip.into();
        match (u32::of(c), <[u8; 16]>::of(c)) {
            (Some(w), _) => self.ports4.has(m, w),
            (_, Some(w)) => self.ports6.has(m, w),
            _ => false,
        }
    }

    /// Makes both families' port maps hold exactly `want` (mapping, container address of
    /// the mapping's family; pairs of mixed families are left out). The endpoint maps
    /// must be synced first: a `routed` endpoint's entry says which ports open.
    pub fn sync_ports(&mut self, want: &[(&PortMapping, IpAddr)]) -> anyhow::Result<()> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (m, c) in want {
            let routed = self.routed_endpoint(*c);
            match (m.host_ip, u32::of(*c), <[u8; 16]>::of(*c)) {
                (IpAddr::V4(_), Some(w), _) => v4.push((*m, w, routed)),
                (IpAddr::V6(_), _, Some(w)) => v6.push((*m, w, routed)),
                _ => {}
            }
        }
        self.ports4.sync(&v4)?;
        self.ports6.sync(&v6)
    }

    /// Entries of both port maps.
    pub fn port_entries(&self) -> usize {
        self.ports4.entries() + self.ports6.entries()
    }
}

/// `c` in the wire form `W`, or the error of an address of the other family.
fn wire<W: Wire>(c: IpAddr) -> anyhow::Result<W> {
    W::of(c).ok_or_else(|| anyhow::anyhow!("{c} is of the other address family"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;
    use std::net::Ipv6Addr;

    fn pm(host: &str, hp: u16, cp: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: host.parse().unwrap(),
            host_port: hp,
            container_port: cp,
            proto,
        }
    }

    #[test]
    fn keys_carry_the_wire_address_and_network_order_ports_per_family() {
        let k = port_key::<[u8; 16]>(&pm("::", 8080, 80, Proto::Tcp)).unwrap();
        assert_eq!(k.host_ip, [0; 16], ":: is every host address");
        assert_eq!(
            k.host_port.to_ne_bytes(),
            [0x1f, 0x90],
            "big endian on the wire"
        );
        assert_eq!(k.proto, netd_common::IPPROTO_TCP);
        let k = port_key::<[u8; 16]>(&pm("fd00:199::1", 53, 5353, Proto::Udp)).unwrap();
        assert_eq!(
            k.host_ip,
            "fd00:199::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(k.proto, netd_common::IPPROTO_UDP);
        assert!(port_key::<[u8; 16]>(&pm("0.0.0.0", 8080, 80, Proto::Tcp)).is_none());
        let k = port_key::<u32>(&pm("10.0.0.1", 8080, 80, Proto::Sctp)).unwrap();
        assert_eq!(k.host_ip.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(k.proto, netd_common::IPPROTO_SCTP);
        assert!(port_key::<u32>(&pm("::", 8080, 80, Proto::Tcp)).is_none());
        let b = <[u8; 16]>::backend(
            "fd00:1::2".parse::<Ipv6Addr>().unwrap().octets(),
            80u16.to_be(),
        );
        assert_eq!(b.ip[15], 2);
        assert_eq!(<[u8; 16]>::backend_parts(&b).1, 80u16.to_be());
        assert_eq!(
            u32::of("10.0.0.2".parse().unwrap()),
            Some(u32::from_ne_bytes([10, 0, 0, 2]))
        );
    }
}
