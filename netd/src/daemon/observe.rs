//! What `netd stats` and `netd conntrack` show. Conntrack reads go through the
//! datapath's batched walks and never hold the daemon's lock for the walk.
use serde::{Deserialize, Serialize};

use super::Daemon;
use std::net::{IpAddr, SocketAddr};

use crate::{
    datapath::{self, Flow},
    error::NetdError,
    error::Result,
    model::IpProto,
};

/// Packets and bytes through one published port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortStats {
    pub container: String,
    pub mapping: String,
    pub packets: u64,
    pub bytes: u64,
}

/// `GET /netd/stats`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    pub uplink: String,
    /// Datapath counters by name (drop reasons and events).
    pub counters: std::collections::BTreeMap<String, u64>,
    pub ports: Vec<PortStats>,
    pub port_map_entries: usize,
    pub endpoint_entries: usize,
    /// Conntrack entries (two a flow), IPv4 and IPv6.
    pub conntrack_entries: u64,
    /// Answered flows' entries the table holds at most (2 x --ct-max).
    pub conntrack_capacity: u32,
    /// Entries of flows not answered yet, held apart (an LRU: floods churn it, and
    /// never evict an answered flow).
    pub conntrack_new_capacity: u32,
    /// Flows the datapath could not record or confirm (the table was full).
    pub conntrack_insert_failures: u64,
}

/// One direction of a tracked flow (`GET /netd/conntrack`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConntrackRow {
    pub proto: IpProto,
    /// `IP:PORT` (`[IPv6]:PORT`) on the wire; for ICMP the port is the echo id.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub kind: String,
    pub to_src: SocketAddr,
    pub to_dst: SocketAddr,
    pub tcp: String,
    pub packets: u64,
    pub bytes: u64,
    pub idle_s: u64,
}

/// Which flows a listing shows: by protocol, and by an address or port on any side of
/// the flow or of its rewrite.
#[derive(Clone, Debug, Default)]
pub struct FlowFilter {
    pub proto: Option<IpProto>,
    /// Either family.
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
}

impl FlowFilter {
    /// A traced packet: by protocol, and by an address or port on either side.
    pub fn matches_trace(&self, l: &super::trace::TraceLine) -> bool {
        let ends = [l.src, l.dst];
        self.proto
            .is_none_or(|p| datapath::ipproto_of(datapath::ipproto(p)).to_string() == l.proto)
            && self.addr.is_none_or(|a| ends.iter().any(|e| e.ip() == a))
            && self.port.is_none_or(|p| ends.iter().any(|e| e.port() == p))
    }

    fn matches(&self, f: &Flow) -> bool {
        let ends = [f.src, f.dst, f.to_src, f.to_dst];
        // By number: `--proto 47` is gre.
        self.proto
            .is_none_or(|p| datapath::ipproto(p) == datapath::ipproto(f.proto))
            && self.addr.is_none_or(|a| f.involves(a))
            && self.port.is_none_or(|p| ends.iter().any(|e| e.port() == p))
    }
}

impl From<Flow> for ConntrackRow {
    fn from(f: Flow) -> Self {
        ConntrackRow {
            proto: f.proto,
            src: f.src,
            dst: f.dst,
            kind: f.kind.into(),
            to_src: f.to_src,
            to_dst: f.to_dst,
            tcp: f.tcp.join(","),
            packets: f.packets,
            bytes: f.bytes,
            idle_s: f.idle.as_secs(),
        }
    }
}

impl Daemon {
    pub async fn stats(&self) -> Result<Stats> {
        // The table is counted first, off the lock: a full table takes a while to walk.
        let table = {
            let g = self.inner.lock().await;
            g.dp.conntrack_handle()?
        };
        let (ct_entries, capacity, new_capacity) = tokio::task::spawn_blocking(move || {
            table
                .count()
                .map(|n| (n as u64, table.capacity(), table.new_capacity()))
        })
        .await
        .map_err(|e| NetdError::Internal(format!("conntrack count: {e}")))??;
        let g = self.inner.lock().await;
        let counters: std::collections::BTreeMap<String, u64> =
            g.dp.stats()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        // New flows the table refused, and answered ones it could not confirm.
        let insert_failures = ["drop_ct_insert_failed", "ct_confirm_failed"]
            .iter()
            .map(|k| counters.get(*k).copied().unwrap_or(0))
            .sum();
        let ports = g
            .state
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().map(move |m| (c, m)))
            .map(|(c, m)| {
                let pc = g.dp.port_counters(m);
                PortStats {
                    container: c.name.clone(),
                    mapping: m.to_string(),
                    packets: pc.packets,
                    bytes: pc.bytes,
                }
            })
            .collect();
        Ok(Stats {
            uplink: g.uplink.clone(),
            counters,
            ports,
            port_map_entries: g.dp.port_entries(),
            endpoint_entries: g.dp.endpoint_entries(),
            conntrack_entries: ct_entries,
            conntrack_capacity: capacity,
            conntrack_new_capacity: new_capacity,
            conntrack_insert_failures: insert_failures,
        })
    }

    /// The flows that match `filter` (every one without).
    pub async fn conntrack(&self, filter: FlowFilter) -> Result<Vec<ConntrackRow>> {
        let table = {
            let g = self.inner.lock().await;
            g.dp.conntrack_handle()?
        };
        // The walk runs off the runtime's workers and without the daemon's lock.
        let flows = tokio::task::spawn_blocking(move || table.flows())
            .await
            .map_err(|e| NetdError::Internal(format!("conntrack listing: {e}")))??;
        Ok(flows
            .into_iter()
            .filter(|f| filter.matches(f))
            .map(ConntrackRow::from)
            .collect())
    }

    /// Removes flows of both families, all or those of one protocol (tcp, udp, icmp
    /// and ICMPv6); returns how many entries went.
    pub async fn flush_conntrack(&self, proto: Option<IpProto>) -> Result<usize> {
        let table = {
            let g = self.inner.lock().await;
            g.dp.conntrack_handle()?
        };
        let n = tokio::task::spawn_blocking(move || table.flush_proto(proto))
            .await
            .map_err(|e| NetdError::Internal(format!("conntrack flush: {e}")))??;
        Ok(n)
    }
}

/// What the metrics endpoint counts in the state: networks and containers by driver,
/// and every published port with its container.
#[derive(Clone, Debug, Default)]
pub struct Census {
    /// Networks by driver (bridge, overlay, host, null).
    pub networks: std::collections::BTreeMap<String, u64>,
    /// Containers by (driver, origin): a container counts once for each driver of its
    /// networks; `host`, `none` and `container:NAME` modes count as the host, null and
    /// container drivers. Origin is who made it: netd, cni or docker.
    pub containers: std::collections::BTreeMap<(String, String), u64>,
    /// (container name, published port).
    pub ports: Vec<(String, crate::model::PortMapping)>,
}

impl Daemon {
    /// Counts the state under the lock, briefly: no map is read here.
    pub async fn census(&self) -> Census {
        use crate::model::{NetMode, Origin};
        let g = self.inner.lock().await;
        let mut c = Census::default();
        for n in &g.state.networks {
            *c.networks.entry(n.driver.clone()).or_default() += 1;
        }
        for k in &g.state.containers {
            let origin = match k.origin {
                Origin::Netd => "netd",
                Origin::Cni { .. } => "cni",
                Origin::Docker { .. } => "docker",
            };
            let mut drivers: Vec<String> = match &k.mode {
                NetMode::Host => vec!["host".into()],
                NetMode::None => vec!["null".into()],
                NetMode::Container(_) => vec!["container".into()],
                NetMode::Bridge => k
                    .attachments
                    .iter()
                    .filter_map(|a| g.state.network(&a.network).map(|n| n.driver.clone()))
                    .collect(),
            };
            drivers.sort();
            drivers.dedup();
            for d in drivers {
                *c.containers.entry((d, origin.to_string())).or_default() += 1;
            }
            c.ports
                .extend(k.ports.iter().map(|m| (k.name.clone(), m.clone())));
        }
        c
    }

    /// The bpf dir whose pinned maps readers outside the core open.
    pub fn bpf_dir(&self) -> &std::path::Path {
        &self.args.bpf_dir
    }
}
