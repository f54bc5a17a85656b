//! Overlay network records in etcd. Creation is one etcd transaction that claims the
//! name, the subnet and the VNI at once, so two nodes creating at the same time never
//! both win; a lost VNI race is retried with the next free one.
//!
//! Keys (see the module doc of `cluster`):
//!     /netd/v1/networks/<id>     the network (JSON; net_id 0: each node numbers its own)
//!     /netd/v1/names/<name>      -> id
//!     /netd/v1/subnets/<a.b.c.d-len> -> id   (one per IPv4 subnet of the network)
//!     /netd/v1/vnis/<vni>        -> id
use std::net::Ipv4Addr;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use tokio::sync::watch;

use super::{
    follow::{self, Follower, Records},
    ClusterError, KEY_ROOT,
};
use crate::{
    error::NetdError,
    model::{legacy, Network},
};

pub const NETWORKS: &str = "/netd/v1/networks/";
/// The first VNI netd hands out (below are left to hand-made VXLANs), and the last.
const VNI_FIRST: u32 = 4096;
const VNI_LAST: u32 = (1 << 24) - 1;
/// Attempts when only the VNI was lost to another node.
const VNI_TRIES: usize = 8;

fn name_key(name: &str) -> String {
    format!("{KEY_ROOT}names/{name}")
}

/// The claim of each of `net`'s IPv4 subnets.
fn subnet_keys(net: &Network) -> Vec<String> {
    net.pools::<Ipv4Addr>()
        .iter()
        .map(|p| {
            format!(
                "{KEY_ROOT}subnets/{}-{}",
                p.subnet.network(),
                p.subnet.prefix()
            )
        })
        .collect()
}

fn vni_key(vni: u32) -> String {
    format!("{KEY_ROOT}vnis/{vni}")
}

fn unreachable(e: etcd_client::Error) -> NetdError {
    NetdError::Internal(format!("cluster store unreachable: {e}"))
}

/// Every overlay network in the store, and the store revision of that read.
pub async fn list(client: &Client) -> Result<(Vec<Network>, i64), ClusterError> {
    let resp = client
        .clone()
        .get(NETWORKS, Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let nets = resp
        .kvs()
        .iter()
        .map(|kv| {
            read_record(kv.value()).map_err(|err| ClusterError::BadRecord {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                err,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((nets, rev))
}

/// The lowest VNI no network holds.
fn free_vni(nets: &[Network], skip: &[u32]) -> Option<u32> {
    (VNI_FIRST..=VNI_LAST).find(|v| !skip.contains(v) && !nets.iter().any(|n| n.vni == *v))
}

/// Stores `net` (planned by this node: name, subnet, gateway...) with a VNI of its own.
pub async fn create(client: &Client, mut net: Network) -> Result<Network, NetdError> {
    net.net_id = 0;
    let mut lost = Vec::new();
    for _ in 0..VNI_TRIES {
        let (nets, _) = list(client)
            .await
            .map_err(|e| NetdError::Internal(e.to_string()))?;
        check_unique(&nets, &net)?;
        net.vni = free_vni(&nets, &lost)
            .ok_or_else(|| NetdError::Conflict("no free VXLAN network id left".into()))?;
        let value = write_record(&net).map_err(|e| NetdError::Internal(e.to_string()))?;
        let mut keys = vec![name_key(&net.name), vni_key(net.vni)];
        keys.extend(subnet_keys(&net));
        let txn = Txn::new()
            .when(
                keys.iter()
                    .map(|k| Compare::create_revision(k.as_str(), CompareOp::Equal, 0))
                    .collect::<Vec<_>>(),
            )
            .and_then(
                keys.iter()
                    .map(|k| TxnOp::put(k.as_str(), net.id.as_str(), None))
                    .chain([TxnOp::put(format!("{NETWORKS}{}", net.id), value, None)])
                    .collect::<Vec<_>>(),
            );
        let resp = client.clone().txn(txn).await.map_err(unreachable)?;
        if resp.succeeded() {
            return Ok(net);
        }
        // Someone else won a key: the name or subnet is a conflict (the next read says
        // which), the VNI a retry with another.
        lost.push(net.vni);
    }
    Err(NetdError::Conflict(format!(
        "creating overlay network {}: lost {VNI_TRIES} races for a VXLAN id, try again",
        net.name
    )))
}

/// Name and subnet unique cluster-wide (the transaction decides exact races; overlaps
/// are checked against this read).
fn check_unique(nets: &[Network], net: &Network) -> Result<(), NetdError> {
    if nets.iter().any(|n| n.name == net.name) {
        return Err(NetdError::Conflict(format!(
            "network with name {} already exists",
            net.name
        )));
    }
    for s in net.pools::<Ipv4Addr>().iter().map(|p| p.subnet) {
        for other in nets {
            if let Some(o) = other
                .pools::<Ipv4Addr>()
                .iter()
                .map(|p| p.subnet)
                .find(|o| crate::model::overlaps(&s, o))
            {
                return Err(NetdError::Conflict(format!(
                    "subnet {s} overlaps with network {} ({o})",
                    other.name
                )));
            }
        }
    }
    Ok(())
}

/// Removes `net`'s record and its claims, if the record is still the one with this id.
pub async fn remove(client: &Client, net: &Network) -> Result<(), NetdError> {
    let key = format!("{NETWORKS}{}", net.id);
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            key.as_str(),
            CompareOp::Greater,
            0,
        )])
        .and_then(
            [key.clone(), name_key(&net.name), vni_key(net.vni)]
                .into_iter()
                .chain(subnet_keys(net))
                .map(|k| TxnOp::delete(k, None))
                .collect::<Vec<_>>(),
        );
    client.clone().txn(txn).await.map_err(unreachable)?;
    Ok(())
}

/// Publishes the full list of overlay networks after every change (None until the
/// first read), retrying while etcd is unreachable.
pub fn follow(client: Client) -> watch::Receiver<Option<Vec<Network>>> {
    let (tx, rx) = watch::channel(None);
    follow::spawn("networks", client, NETWORKS, Networks(tx));
    rx
}

struct Networks(watch::Sender<Option<Vec<Network>>>);

impl Follower for Networks {
    type Record = Network;
    fn changed(&mut self, all: &Records<Network>) {
        self.0.send_replace(Some(all.values().cloned().collect()));
    }
    fn done(&self) -> bool {
        self.0.is_closed()
    }
}

/// A network record as a node of this release or of the previous one wrote it (the
/// store is shared by both during a rolling upgrade).
fn read_record(bytes: &[u8]) -> Result<Network, serde_json::Error> {
    let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)?;
    legacy::upgrade(&mut doc).map_err(serde::de::Error::custom)?;
    serde_json::from_value(serde_json::Value::Object(doc))
}

/// `net` as a record both this release and the previous one read.
fn write_record(net: &Network) -> Result<Vec<u8>, serde_json::Error> {
    let serde_json::Value::Object(mut doc) = serde_json::to_value(net)? else {
        return Err(serde::ser::Error::custom("a network is not a JSON object"));
    };
    legacy::add_older_keys(&mut doc);
    serde_json::to_vec(&doc)
}
