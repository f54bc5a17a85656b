//! Overlay endpoints in etcd: one record per container address on an overlay network,
//! written by the node that runs the container, under that node's lease. The record is
//! the address's claim (an etcd transaction decides between two nodes that picked the
//! same free address), the other nodes' datapath entry (where to tunnel) and the
//! container's DNS names there. A node that dies takes its records with its lease.
//!
//! Keys:
//!     /netd/v1/endpoints/<vni>/<ip>   a `RemoteEndpoint` (JSON)
use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;

use super::{
    follow::{self, Follower, Records},
    Cluster, KEY_ROOT,
};
use crate::{error::NetdError, model::RemoteEndpoint};

pub const ENDPOINTS: &str = "/netd/v1/endpoints/";

pub fn key(vni: u32, ip: std::net::Ipv4Addr) -> String {
    format!("{KEY_ROOT}endpoints/{vni}/{ip}")
}

fn unreachable(e: etcd_client::Error) -> NetdError {
    NetdError::Internal(format!("cluster store unreachable: {e}"))
}

fn encode(rec: &RemoteEndpoint) -> Result<Vec<u8>, NetdError> {
    serde_json::to_vec(rec).map_err(|e| NetdError::Internal(format!("encoding {rec:?}: {e}")))
}

/// Claims `rec`'s address for this node: written if nobody has it (or this node
/// already does, e.g. before a restart). Another node's record holding it is returned
/// instead (None: the claim is this node's). From then on the registration keeps it
/// under the node's lease.
pub async fn claim(
    cluster: &Cluster,
    rec: &RemoteEndpoint,
) -> Result<Option<RemoteEndpoint>, NetdError> {
    let lease = cluster.lease_id();
    if lease == 0 {
        return Err(NetdError::Internal(
            "cluster store unreachable: this node is not registered yet".into(),
        ));
    }
    let k = key(rec.vni, rec.ip);
    let v = encode(rec)?;
    let txn = Txn::new()
        .when([Compare::create_revision(k.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            k.as_str(),
            v.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(k.as_str(), None)]);
    let mut c = cluster.client();
    let resp = c.txn(txn).await.map_err(unreachable)?;
    if !resp.succeeded() {
        let holder = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice::<RemoteEndpoint>(kv.value()).ok()),
            _ => None,
        });
        match holder {
            Some(h) if h.node == rec.node => {
                c.put(
                    k.as_str(),
                    v.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(unreachable)?;
            }
            Some(h) => return Ok(Some(h)),
            None => {
                return Err(NetdError::Internal(format!(
                    "cluster store: unreadable record at {k}"
                )))
            }
        }
    }
    cluster.own(k, v);
    Ok(None)
}

/// Keeps `rec` registered under the node's lease without a check (this node's own
/// records at a restart: they are in its state, whoever else claims them since).
pub fn keep(cluster: &Cluster, rec: &RemoteEndpoint) -> Result<(), NetdError> {
    cluster.own(key(rec.vni, rec.ip), encode(rec)?);
    Ok(())
}

/// Gives address `ip` of VNI `vni` back: its record goes, if it is still this node's.
pub async fn release(cluster: &Cluster, vni: u32, ip: std::net::Ipv4Addr) -> Result<(), NetdError> {
    let k = key(vni, ip);
    let Some(v) = cluster.disown(&k) else {
        return Ok(());
    };
    let txn = Txn::new()
        .when([Compare::value(k.as_str(), CompareOp::Equal, v)])
        .and_then([TxnOp::delete(k.as_str(), None)]);
    cluster.client().txn(txn).await.map_err(unreachable)?;
    Ok(())
}

/// Every overlay endpoint in the store, after every change (None until the first
/// read); retried while etcd is unreachable.
pub fn follow(client: Client) -> watch::Receiver<Option<Arc<Vec<RemoteEndpoint>>>> {
    let (tx, rx) = watch::channel(None);
    follow::spawn("overlay endpoints", client, ENDPOINTS, Endpoints(tx));
    rx
}

struct Endpoints(watch::Sender<Option<Arc<Vec<RemoteEndpoint>>>>);

impl Follower for Endpoints {
    type Record = RemoteEndpoint;
    fn changed(&mut self, all: &Records<RemoteEndpoint>) {
        self.0
            .send_replace(Some(Arc::new(all.values().cloned().collect())));
    }
    fn done(&self) -> bool {
        self.0.is_closed()
    }
}
