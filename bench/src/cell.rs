//! What a round measures and what one datapath at one N collects (the bench's data,
//! shared by the measuring, the peers, the report and the plot).
use serde::{Deserialize, Serialize};

use crate::{api_latency::ApiLatency, restart::RestartWindow};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sample {
    pub rr_rate: f64,
    pub rr_p50_us: u64,
    pub rr_p99_us: u64,
    pub crr_rate: f64,
    pub crr_p50_us: u64,
    pub crr_p99_us: u64,
    pub crr_errors: u64,
    pub udp_rr_rate: f64,
    pub tput1_gbps: f64,
    pub tput2_gbps: f64,
    pub masq_crr_rate: f64,
    /// `BIG_DATAGRAM`-byte UDP request/response through the published port.
    pub big_udp_rr_rate: f64,
    /// The same from the container to the client's server (masquerade).
    pub masq_big_udp_rr_rate: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Cell {
    pub samples: Vec<Sample>,
    pub publish_ms: f64,
    pub one_more_ms: f64,
    pub remove_ms: f64,
    pub rss_bytes: u64,
    pub map_bytes: u64,
    /// dockerd's userland proxies.
    pub proxy_rss_bytes: u64,
    /// netd: where the time of the '+1 port' container went, from the daemon's log.
    pub one_more_phases: String,
    /// netd: of that, the time its port map updates took.
    pub one_more_ports_us: f64,
    /// netd: its API's latency with an empty and with a full conntrack table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiLatency>,
    /// netd: SIGTERM to serving the API again, and new connections meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartWindow>,
}

/// (median, min, max)
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (m, s[0], s[s.len() - 1])
}

pub fn med(cell: &Cell, f: impl Fn(&Sample) -> f64) -> f64 {
    stats(&cell.samples.iter().map(f).collect::<Vec<_>>()).0
}
