//! Overlay endpoints in etcd: one record per container address on an overlay network,
//! written by the node that runs the container, under that node's lease. The record is
//! the address's claim (an etcd transaction decides between two nodes that picked the
//! same free address), the other nodes' datapath entry (where to tunnel) and the
//! container's DNS names there. A node that dies takes its records with its lease.
//!
//! Keys:
//!     /netd/v1/endpoints/<vni>/<ip>   a `RemoteEndpoint` (JSON)
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use log::{info, warn};
use tokio::sync::watch;

use super::{Cluster, ClusterError, KEY_ROOT};
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

/// Every overlay endpoint in the store, by key, after every change (None until the
/// first read); retried while etcd is unreachable.
pub fn follow(client: Client) -> watch::Receiver<Option<Arc<Vec<RemoteEndpoint>>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut logged = false;
        loop {
            match follow_once(&client, &tx).await {
                Ok(()) => logged = false,
                Err(e) if !logged => {
                    warn!("cluster: watching overlay endpoints: {e} (retrying)");
                    logged = true;
                }
                Err(_) => {}
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

fn decode(key: &[u8], value: &[u8]) -> Result<RemoteEndpoint, ClusterError> {
    serde_json::from_slice(value).map_err(|err| ClusterError::BadRecord {
        key: String::from_utf8_lossy(key).into_owned(),
        err,
    })
}

type Tx = watch::Sender<Option<Arc<Vec<RemoteEndpoint>>>>;

fn publish(tx: &Tx, all: &BTreeMap<Vec<u8>, RemoteEndpoint>) {
    tx.send_replace(Some(Arc::new(all.values().cloned().collect())));
}

/// A full read, then the watch's events applied one by one (records are many, unlike
/// networks: no full read per change).
async fn follow_once(client: &Client, tx: &Tx) -> Result<(), ClusterError> {
    let mut c = client.clone();
    let resp = c
        .get(ENDPOINTS, Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut all = BTreeMap::new();
    for kv in resp.kvs() {
        match decode(kv.key(), kv.value()) {
            Ok(r) => {
                all.insert(kv.key().to_vec(), r);
            }
            Err(e) => warn!("{e}"),
        }
    }
    publish(tx, &all);
    let mut stream = c
        .watch(
            ENDPOINTS,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() {
            break;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => match decode(kv.key(), kv.value()) {
                    Ok(r) => {
                        all.insert(kv.key().to_vec(), r);
                    }
                    Err(e) => warn!("{e}"),
                },
                EventType::Delete => {
                    if let Some(r) = all.remove(kv.key()) {
                        info!("cluster: overlay endpoint {} (VNI {}) gone", r.ip, r.vni);
                    }
                }
            }
        }
        publish(tx, &all);
    }
    Ok(())
}
