//! The agent's side of conntrack: listing, flushing and expiring flows in the pinned
//! maps, IPv4's pair and IPv6's pair, with one copy of the logic for both (`family`:
//! what it needs of a key and entry type). The table can hold hundreds of thousands of
//! entries, so every walk is batched (`batch`), and the garbage collector runs on a
//! thread of its own with a handle of its own on the pinned maps: it never takes the
//! daemon's lock, so API latency does not grow with the table.
mod batch;
mod family;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

pub use batch::{CtMap, CtMapCount};
pub use family::{CtEntryOf, CtKeyOf, Stamp};
use netd_common::{
    ct_kind, ct_tcp, map_names, CtKey, CtKey6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
    IPPROTO_TCP, IPPROTO_UDP,
};

use crate::model::IpProto;

/// Idle timeouts of conntrack entries, by protocol and state.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    /// FIN seen in one direction.
    pub tcp_closing: Duration,
    /// FIN seen both ways, or RST.
    pub tcp_closed: Duration,
    /// UDP with traffic one way only.
    pub udp: Duration,
    /// UDP with replies (a "stream").
    pub udp_stream: Duration,
    pub icmp: Duration,
    /// SCTP with replies (the kernel's ESTABLISHED; netd does not follow SCTP's states).
    pub sctp: Duration,
    /// Other protocols with replies (GRE, ESP, ...: the kernel's generic timeout).
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(86_400),
            tcp_closing: Duration::from_secs(120),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
            sctp: Duration::from_secs(210),
            other: Duration::from_secs(600),
        }
    }
}

/// The clock bpf_ktime_get_ns() reads.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The idle timeout of a flow of protocol `proto` whose two directions are `a` and `b`.
pub fn timeout_of(proto: u8, a: &Stamp, b: Option<&Stamp>, t: &Timeouts) -> Duration {
    let flags_b = b.map(|b| b.tcp_flags).unwrap_or(0);
    let replied = b.is_some_and(|b| b.packets > 0) && a.packets > 0;
    match proto {
        IPPROTO_TCP => {
            let flags = a.tcp_flags | flags_b;
            let fin_both = a.tcp_flags & ct_tcp::FIN != 0 && flags_b & ct_tcp::FIN != 0;
            if flags & ct_tcp::RST != 0 || fin_both {
                t.tcp_closed
            } else if flags & ct_tcp::FIN != 0 {
                t.tcp_closing
            } else if flags & ct_tcp::ESTABLISHED != 0 && replied {
                t.tcp_established
            } else {
                t.tcp_syn
            }
        }
        IPPROTO_UDP if replied => t.udp_stream,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => t.icmp,
        IPPROTO_SCTP if replied => t.sctp,
        _ if replied => t.other,
        // Unanswered, any other protocol waits as long as unanswered UDP.
        _ => t.udp,
    }
}

/// The keys of the flows in `all` that have been idle past their timeout at `now_ns`.
/// A flow's idle time is that of its most recent direction.
pub fn expired<K: CtKeyOf>(all: &HashMap<K, K::Entry>, now_ns: u64, t: &Timeouts) -> Vec<K> {
    all.iter()
        .filter(|(k, e)| {
            let peer = all.get(&k.peer(e)).map(|p| p.stamp());
            let e = e.stamp();
            let last = peer.map_or(e.last_seen_ns, |p| p.last_seen_ns.max(e.last_seen_ns));
            let idle = Duration::from_nanos(now_ns.saturating_sub(last));
            idle > timeout_of(k.proto(), &e, peer.as_ref(), t)
        })
        .map(|(k, _)| *k)
        .collect()
}

/// One direction of a tracked flow, in domain terms (for `netd conntrack ls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub proto: IpProto,
    /// The tuple as packets carry it.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// "dnat", "dnat-reply", "snat", "snat-reply", "direct", "direct-reply".
    pub kind: &'static str,
    /// The tuple packets are rewritten to.
    pub to_src: SocketAddr,
    pub to_dst: SocketAddr,
    /// TCP flags seen in this direction: "syn", "syn-ack", "established", "fin", "rst".
    pub tcp: Vec<&'static str>,
    pub packets: u64,
    pub bytes: u64,
    pub idle: Duration,
}

impl Flow {
    /// The flow direction an entry of either family records.
    pub fn new<K: CtKeyOf>(k: &K, v: &K::Entry, now_ns: u64) -> Flow {
        let st = v.stamp();
        let tcp = [
            (ct_tcp::SYN, "syn"),
            (ct_tcp::SYN_ACK, "syn-ack"),
            (ct_tcp::ESTABLISHED, "established"),
            (ct_tcp::FIN, "fin"),
            (ct_tcp::RST, "rst"),
        ]
        .into_iter()
        .filter(|(bit, _)| st.tcp_flags & bit != 0)
        .map(|(_, name)| name)
        .collect();
        let (src, dst) = k.ends();
        let (to_src, to_dst) = v.rewrite();
        Flow {
            proto: k.ip_proto(),
            src,
            dst,
            kind: match st.kind {
                ct_kind::DNAT => "dnat",
                ct_kind::DNAT_REPLY => "dnat-reply",
                ct_kind::SNAT => "snat",
                ct_kind::SNAT_REPLY => "snat-reply",
                ct_kind::DIRECT => "direct",
                ct_kind::DIRECT_REPLY => "direct-reply",
                _ => "other",
            },
            to_src,
            to_dst,
            tcp,
            packets: st.packets,
            bytes: st.bytes,
            idle: Duration::from_nanos(now_ns.saturating_sub(st.last_seen_ns)),
        }
    }

    /// Whether `ip` is on either side of this flow or of its rewrite.
    pub fn involves(&self, ip: IpAddr) -> bool {
        [self.src, self.dst, self.to_src, self.to_dst]
            .iter()
            .any(|e| e.ip() == ip)
    }
}

/// One family's conntrack maps: confirmed flows and new ones (see netd-ebpf's
/// conntrack.rs for why there are two).
pub struct CtPair<K> {
    confirmed: CtMap<K>,
    new: CtMap<K>,
}

impl<K: CtKeyOf> CtPair<K> {
    fn open(bpf_dir: &Path, confirmed: &str, new: &str) -> anyhow::Result<CtPair<K>> {
        Ok(CtPair {
            confirmed: CtMap::open(&bpf_dir.join(confirmed))?,
            new: CtMap::open(&bpf_dir.join(new))?,
        })
    }

    /// Every entry of both maps.
    pub fn entries(&self) -> anyhow::Result<Vec<(K, K::Entry)>> {
        let mut all = self.confirmed.entries()?;
        all.extend(self.new.entries()?);
        Ok(all)
    }

    /// Deletes `keys` wherever they are; returns how many entries went.
    pub fn delete(&self, keys: &[K]) -> usize {
        self.confirmed.delete(keys) + self.new.delete(keys)
    }

    fn flows(&self, now_ns: u64) -> anyhow::Result<Vec<Flow>> {
        Ok(self
            .entries()?
            .iter()
            .map(|(k, v)| Flow::new(k, v, now_ns))
            .collect())
    }

    /// Removes every flow (both directions) one of whose entries `pred` selects.
    fn flush(&self, pred: impl Fn(&K, &K::Entry) -> bool) -> anyhow::Result<usize> {
        let mut doomed: HashSet<K> = HashSet::new();
        for (k, e) in self.entries()? {
            if pred(&k, &e) {
                doomed.insert(k.peer(&e));
                doomed.insert(k);
            }
        }
        let doomed: Vec<K> = doomed.into_iter().collect();
        Ok(self.delete(&doomed))
    }

    fn gc(&self, now_ns: u64, t: &Timeouts) -> anyhow::Result<usize> {
        let all: HashMap<K, K::Entry> = self.entries()?.into_iter().collect();
        let doomed = expired(&all, now_ns, t);
        drop(all);
        Ok(self.delete(&doomed))
    }
}

/// The conntrack table, both families. Each holder (the API's datapath, the GC thread)
/// opens its own handles, so none waits for another.
pub struct CtTable {
    v4: CtPair<CtKey>,
    v6: CtPair<CtKey6>,
}

impl CtTable {
    /// Opens the four maps pinned under `bpf_dir`.
    pub fn open(bpf_dir: &Path) -> anyhow::Result<CtTable> {
        Ok(CtTable {
            v4: CtPair::open(bpf_dir, map_names::CONNTRACK, map_names::CONNTRACK_NEW)?,
            v6: CtPair::open(bpf_dir, map_names::CONNTRACK6, map_names::CONNTRACK6_NEW)?,
        })
    }

    /// Confirmed entries a family's table can hold (both directions of a flow take one
    /// each): --ct-max flows, for IPv4 and again for IPv6.
    pub fn capacity(&self) -> u32 {
        self.v4.confirmed.capacity()
    }

    /// Entries a family's map of new, unanswered flows holds at most.
    pub fn new_capacity(&self) -> u32 {
        self.v4.new.capacity()
    }

    /// Entries of each map now, IPv4's then IPv6's, and the maps' capacities (a walk
    /// of the maps that keeps nothing).
    pub fn census(&self) -> anyhow::Result<[super::CtCensus; 2]> {
        let of =
            |answered: &dyn CtMapCount, new: &dyn CtMapCount| -> anyhow::Result<super::CtCensus> {
                Ok(super::CtCensus {
                    answered: answered.count()?,
                    new: new.count()?,
                    answered_capacity: answered.capacity(),
                    new_capacity: new.capacity(),
                })
            };
        Ok([
            of(&self.v4.confirmed, &self.v4.new)?,
            of(&self.v6.confirmed, &self.v6.new)?,
        ])
    }

    /// How many entries the table holds now, both families (a full walk of the maps).
    pub fn count(&self) -> anyhow::Result<usize> {
        Ok(self.v4.entries()?.len() + self.v6.entries()?.len())
    }

    /// Every IPv4 entry (both maps), as the maps hold them.
    pub fn entries(&self) -> anyhow::Result<Vec<(CtKey, netd_common::CtEntry)>> {
        self.v4.entries()
    }

    /// Every IPv6 entry (both maps), as the maps hold them.
    pub fn entries6(&self) -> anyhow::Result<Vec<(CtKey6, netd_common::CtEntry6)>> {
        self.v6.entries()
    }

    /// Every flow direction of both families, for listings.
    pub fn flows(&self) -> anyhow::Result<Vec<Flow>> {
        let now = monotonic_ns();
        let mut all = self.v4.flows(now)?;
        all.extend(self.v6.flows(now)?);
        Ok(all)
    }

    /// Removes the flows of protocol `proto`, or all of them, in both families.
    pub fn flush_proto(&self, proto: Option<IpProto>) -> anyhow::Result<usize> {
        Ok(self
            .v4
            .flush(|k, _| proto.is_none_or(|p| k.proto() == CtKey::proto_number(p)))?
            + self
                .v6
                .flush(|k, _| proto.is_none_or(|p| k.proto() == CtKey6::proto_number(p)))?)
    }

    /// Removes every flow that has `ip` on either side or as a rewrite target.
    pub fn flush_involving(&self, ip: IpAddr) -> anyhow::Result<usize> {
        let hit = |ends: [SocketAddr; 4]| ends.iter().any(|e| e.ip() == ip);
        match ip {
            IpAddr::V4(_) => self.v4.flush(|k, e| hit(ends_of(k, e))),
            IpAddr::V6(_) => self.v6.flush(|k, e| hit(ends_of(k, e))),
        }
    }

    /// Removes flows idle for longer than their timeout, both families; returns how
    /// many entries went.
    pub fn gc(&self, now_ns: u64, t: &Timeouts) -> anyhow::Result<usize> {
        Ok(self.v4.gc(now_ns, t)? + self.v6.gc(now_ns, t)?)
    }
}

/// The four addresses of an entry: the tuple, then its rewrite.
fn ends_of<K: CtKeyOf>(k: &K, e: &K::Entry) -> [SocketAddr; 4] {
    let ((a, b), (c, d)) = (k.ends(), e.rewrite());
    [a, b, c, d]
}
/// Runs the garbage collector every `every` on a thread of its own, until the process
/// ends. It holds its own map handle and no lock of the daemon's.
pub fn spawn_gc(table: CtTable, every: Duration, timeouts: Timeouts) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("netd-ct-gc".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match table.gc(monotonic_ns(), &timeouts) {
                Ok(0) => {}
                Ok(n) => log::debug!("conntrack gc: {n} entries expired"),
                Err(e) => log::warn!("conntrack gc: {e:#}"),
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use netd_common::{CtEntry, CtEntry6};

    use super::*;

    fn entry(last_seen_s: u64, packets: u64, tcp_flags: u8) -> CtEntry {
        CtEntry {
            last_seen_ns: last_seen_s * 1_000_000_000,
            packets,
            tcp_flags,
            ..Default::default()
        }
    }

    /// A flow a->b rewritten to c: its two keys point at each other through `peer`.
    fn flow(proto: u8, fwd: CtEntry, rev: CtEntry) -> [(CtKey, CtEntry); 2] {
        let k = CtKey {
            saddr: 1,
            daddr: 2,
            sport: 10,
            dport: 20,
            proto,
            _pad: [0; 3],
        };
        let fwd = CtEntry {
            saddr: 1,
            daddr: 3,
            sport: 10,
            dport: 30,
            ..fwd
        };
        let rk = k.peer(&fwd);
        let rev = CtEntry {
            saddr: 2,
            daddr: 1,
            sport: 20,
            dport: 10,
            ..rev
        };
        assert_eq!(rk.peer(&rev), k, "the pair must point at each other");
        [(k, fwd), (rk, rev)]
    }

    #[test]
    fn a_flow_lives_as_long_as_its_most_recent_direction() {
        let t = Timeouts {
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            ..Default::default()
        };
        // Answered UDP: the stream timeout applies, from the newest of the two.
        let all: HashMap<_, _> = flow(IPPROTO_UDP, entry(0, 5, 0), entry(100, 5, 0))
            .into_iter()
            .collect();
        assert!(expired(&all, 150 * 1_000_000_000, &t).is_empty());
        assert_eq!(expired(&all, 221 * 1_000_000_000, &t).len(), 2);
        // One-way UDP: the short timeout.
        let all: HashMap<_, _> = flow(IPPROTO_UDP, entry(0, 5, 0), entry(0, 0, 0))
            .into_iter()
            .collect();
        assert_eq!(expired(&all, 31 * 1_000_000_000, &t).len(), 2);
    }

    #[test]
    fn tcp_state_picks_the_timeout() {
        let t = Timeouts::default();
        let est = ct_tcp::SYN | ct_tcp::ESTABLISHED;
        let all: HashMap<_, _> = flow(IPPROTO_TCP, entry(0, 3, est), entry(0, 3, est))
            .into_iter()
            .collect();
        assert!(expired(&all, 3_600 * 1_000_000_000, &t).is_empty());
        let all: HashMap<_, _> = flow(
            IPPROTO_TCP,
            entry(0, 3, est | ct_tcp::FIN),
            entry(0, 3, est | ct_tcp::FIN),
        )
        .into_iter()
        .collect();
        assert_eq!(expired(&all, 11 * 1_000_000_000, &t).len(), 2);
    }

    /// An IPv6 flow from a client to a published port, DNATed to a container.
    fn flow6() -> [(CtKey6, CtEntry6); 2] {
        let client: Ipv6Addr = "fd00:199::2".parse().unwrap();
        let host: Ipv6Addr = "fd00:199::1".parse().unwrap();
        let ctr: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let k = CtKey6 {
            saddr: client.octets(),
            daddr: host.octets(),
            sport: 40000u16.to_be(),
            dport: 8080u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let fwd = CtEntry6 {
            saddr: client.octets(),
            daddr: ctr.octets(),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            kind: ct_kind::DNAT,
            tcp_flags: ct_tcp::SYN | ct_tcp::ESTABLISHED,
            packets: 3,
            last_seen_ns: 1_000_000_000,
            ..Default::default()
        };
        let rk = k.peer(&fwd);
        let rev = CtEntry6 {
            saddr: host.octets(),
            daddr: client.octets(),
            sport: 8080u16.to_be(),
            dport: 40000u16.to_be(),
            kind: ct_kind::DNAT_REPLY,
            packets: 2,
            last_seen_ns: 1_000_000_000,
            ..Default::default()
        };
        assert_eq!(rk.peer(&rev), k, "the pair must point at each other");
        [(k, fwd), (rk, rev)]
    }

    #[test]
    fn ipv6_keys_become_flows_with_bracketed_addresses() {
        let [(k, fwd), (rk, _)] = flow6();
        let f = Flow::new(&k, &fwd, 3_000_000_000);
        assert_eq!(f.proto, IpProto::Tcp);
        assert_eq!(f.src.to_string(), "[fd00:199::2]:40000");
        assert_eq!(f.dst.to_string(), "[fd00:199::1]:8080");
        assert_eq!(f.to_dst.to_string(), "[fd00:1::2]:80");
        assert_eq!(f.kind, "dnat");
        assert_eq!(f.tcp, ["syn", "established"]);
        assert_eq!(f.idle, Duration::from_secs(2));
        assert!(f.involves("fd00:1::2".parse().unwrap()));
        assert!(!f.involves("10.0.0.2".parse().unwrap()));
        // The reply direction's key: from the container to the client.
        assert_eq!(
            rk.ends().0.to_string(),
            "[fd00:1::2]:80",
            "reply key starts at the container"
        );
        // ICMPv6 is netd's icmp; any other protocol is a flow too, by name or number.
        let icmp = CtKey6 {
            proto: netd_common::IPPROTO_ICMPV6,
            ..k
        };
        assert_eq!(icmp.ip_proto(), IpProto::Icmp);
        assert_eq!(
            CtKey6::proto_number(IpProto::Icmp),
            netd_common::IPPROTO_ICMPV6
        );
        let v4_icmp = CtKey {
            proto: netd_common::IPPROTO_ICMP,
            ..Default::default()
        };
        assert_eq!(v4_icmp.ip_proto(), IpProto::Icmp);
        let gre = CtKey6 { proto: 47, ..k };
        assert_eq!(Flow::new(&gre, &fwd, 0).proto, IpProto::Gre);
        let ospf = CtKey6 { proto: 89, ..k };
        assert_eq!(Flow::new(&ospf, &fwd, 0).proto, IpProto::Other(89));
    }

    #[test]
    fn every_protocol_has_an_idle_timeout_of_its_own_kind() {
        let t = Timeouts::default();
        let stamp = |packets| Stamp {
            packets,
            ..Default::default()
        };
        let (one_way, answered) = (stamp(1), stamp(1));
        let timeout = |p, b: Option<&Stamp>| timeout_of(p, &one_way, b, &t);
        assert_eq!(timeout(IPPROTO_SCTP, Some(&answered)), t.sctp);
        assert_eq!(timeout(47, Some(&answered)), t.other);
        // Unanswered, a GRE or SCTP flow holds its tuple no longer than UDP's.
        assert_eq!(timeout(47, Some(&stamp(0))), t.udp);
        assert_eq!(timeout(IPPROTO_SCTP, None), t.udp);
        assert_eq!(timeout(IPPROTO_ICMPV6, Some(&answered)), t.icmp);
    }

    #[test]
    fn ipv6_flows_expire_as_ipv4_ones() {
        let t = Timeouts::default();
        let all: HashMap<_, _> = flow6().into_iter().collect();
        // Established and answered: a day.
        assert!(expired(&all, 3_600 * 1_000_000_000, &t).is_empty());
        assert_eq!(expired(&all, 86_402 * 1_000_000_000, &t).len(), 2);
    }
}
