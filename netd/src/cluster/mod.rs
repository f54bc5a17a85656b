//! The cluster store of overlay networks: etcd (v3 API), as Docker's pre-Swarm
//! `--cluster-store etcd://... --cluster-advertise ...`.
//!
//! - this module: the flags' parsing, the key layout, the node record.
//! - `registry`: this node's registration under a lease kept alive in the background,
//!   and a watch of the other nodes.
//!
//! Keys (values are JSON):
//!     /netd/v1/nodes/<node id>      a node: its underlay (VTEP) address; under its lease,
//!                                   so a node that dies ages out after LEASE_TTL seconds
//!     /netd/v1/networks/, names/, subnets/, vnis/   overlay networks (see `networks`)
//!     /netd/v1/endpoints/<vni>/<ip>  overlay endpoints, under their node's lease
//!                                   (see `endpoints`)
pub mod endpoints;
mod follow;
mod leave;
pub mod networks;
mod registry;
mod tls;

use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use leave::leave;
pub use registry::{check_store, Cluster, Peers};
pub use tls::StoreOpts;

/// The root of every key netd writes.
pub const KEY_ROOT: &str = "/netd/v1/";
/// The prefix of the node records.
pub const NODES: &str = "/netd/v1/nodes/";
/// Seconds a node's registration outlives its last keep-alive.
pub const LEASE_TTL: i64 = 15;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("{0:?} is not etcd://HOST:PORT[,HOST:PORT...] (or https://, etcds:// for TLS)")]
    BadStore(String),
    #[error("--cluster-store-opt {0}: {1}")]
    BadOpt(String, String),
    #[error("--cluster-store-opt: {0}: {1}")]
    File(PathBuf, String),
    #[error("cluster store {url}: {advice} ({err})")]
    Tls {
        url: String,
        advice: &'static str,
        err: String,
    },
    #[error("{0:?}: {1}")]
    BadAdvertise(String, String),
    #[error("cluster store: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("cluster store: bad record at {key}: {err}")]
    BadRecord { key: String, err: serde_json::Error },
}

/// A node of the cluster as stored in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The daemon's instance id (stable across restarts).
    pub id: String,
    /// The underlay address other nodes send VXLAN packets to.
    pub addr: Ipv4Addr,
}

/// Parses `etcd://HOST:PORT[,HOST:PORT...]` into gRPC endpoints (`http://HOST:PORT`);
/// `https://` and `etcds://` stores are TLS (`https://HOST:PORT`), and so is any store
/// when `tls` (the options asked for it).
pub fn parse_store(s: &str, tls: bool) -> Result<Vec<String>, ClusterError> {
    let bad = || ClusterError::BadStore(s.to_string());
    let (rest, tls) = if let Some(r) = s.strip_prefix("etcd://") {
        (r, tls)
    } else if let Some(r) = s
        .strip_prefix("etcds://")
        .or_else(|| s.strip_prefix("https://"))
    {
        (r, true)
    } else {
        return Err(bad());
    };
    let scheme = if tls { "https" } else { "http" };
    let eps: Vec<String> = rest
        .split(',')
        .map(|hp| {
            let (host, port) = hp.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad());
            }
            Ok(format!("{scheme}://{hp}"))
        })
        .collect::<Result<_, _>>()?;
    if eps.is_empty() {
        return Err(bad());
    }
    Ok(eps)
}

/// What `--cluster-advertise` names: an address, or an interface whose first IPv4
/// address is taken (resolved in the daemon's namespace, at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advertise {
    Addr(Ipv4Addr),
    Iface(String),
}

/// Parses `IP` or `IFACE`; Docker's `IP:PORT`/`IFACE:PORT` form is accepted and the
/// port ignored (netd's API is a unix socket; VXLAN uses 4789).
pub fn parse_advertise(s: &str) -> Result<Advertise, ClusterError> {
    let host = match s.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => s,
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(ClusterError::BadAdvertise(
                s.into(),
                "other nodes cannot reach this address".into(),
            ));
        }
        return Ok(Advertise::Addr(ip));
    }
    let ok = !host.is_empty()
        && host.len() < 16
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return Err(ClusterError::BadAdvertise(
            s.into(),
            "not an IPv4 address or an interface name".into(),
        ));
    }
    Ok(Advertise::Iface(host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_store("etcd://10.0.0.9:2379,e2:2380", false).unwrap(),
            vec!["http://10.0.0.9:2379", "http://e2:2380"]
        );
        assert_eq!(
            parse_store("etcd://10.0.0.9:2379", true).unwrap(),
            vec!["https://10.0.0.9:2379"]
        );
        for tls in ["etcds://e:2379", "https://e:2379"] {
            assert_eq!(parse_store(tls, false).unwrap(), vec!["https://e:2379"]);
        }
        for bad in [
            "consul://a:1",
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://:1",
            "etcd://a:1,",
        ] {
            assert!(parse_store(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn advertise_forms() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(parse_advertise("10.0.0.1").unwrap(), Advertise::Addr(ip));
        assert_eq!(
            parse_advertise("10.0.0.1:2376").unwrap(),
            Advertise::Addr(ip)
        );
        assert_eq!(
            parse_advertise("eth0:2376").unwrap(),
            Advertise::Iface("eth0".into())
        );
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "",
            "a very long interface name",
            "a/b",
        ] {
            assert!(parse_advertise(bad).is_err(), "{bad}");
        }
    }
}
