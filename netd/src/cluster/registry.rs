//! This node's registration in etcd, kept alive under a lease, and the view of the
//! other nodes from a watch. Both run in the background and survive etcd going away:
//! they retry, re-register (a lease that expired while etcd was unreachable is granted
//! again) and re-read the node list, so the daemon and its datapath never wait on etcd.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::{Client, ConnectOptions, PutOptions};
use log::{info, warn};
use tokio::sync::watch;

use super::{
    follow::{self, Follower, Records, RETRY},
    tls, ClusterError, Node, StoreOpts, LEASE_TTL, NODES,
};

/// Every node the watch knows, this one included, by id.
pub type Peers = Arc<std::sync::RwLock<BTreeMap<String, Node>>>;

/// Records this node keeps under its lease besides its own (its overlay endpoints), by
/// key: written again under each new lease.
type Owned = Arc<std::sync::Mutex<BTreeMap<String, Vec<u8>>>>;

/// A connection to the cluster store and this node's place in it.
pub struct Cluster {
    client: Client,
    node: Node,
    peers: Peers,
    /// The current lease of the registration (0: none yet). A stopping agent keeps it:
    /// peers go on tunnelling to this node's containers while it restarts.
    lease: watch::Receiver<i64>,
    owned: Owned,
    /// The registration task, which runs as long as the agent.
    _registration: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Connects (the channel is lazy: an unreachable etcd does not stop the daemon from
    /// starting) and starts the registration and the watch.
    pub async fn start(
        url: &str,
        store_opts: &StoreOpts,
        node: Node,
    ) -> Result<Cluster, ClusterError> {
        let endpoints = super::parse_store(url, store_opts.wants_tls())?;
        let tls = endpoints.iter().any(|e| e.starts_with("https://"));
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let opts = store_opts.apply(tls, opts)?;
        let client = Client::connect(endpoints, Some(opts)).await?;
        let peers: Peers = Arc::default();
        let (tx, lease) = watch::channel(0);
        let owned = Owned::default();
        let registration = tokio::spawn(register(client.clone(), node.clone(), tx, owned.clone()));
        follow::spawn("nodes", client.clone(), NODES, Nodes(peers.clone()));
        Ok(Cluster {
            client,
            node,
            peers,
            lease,
            owned,
            _registration: registration,
        })
    }

    /// The current lease of the registration (0: not registered yet, or etcd away).
    pub fn lease_id(&self) -> i64 {
        *self.lease.borrow()
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A poisoned lock still holds a consistent map (inserts and removes only).
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `key` = `value` under this node's lease from now on: written now (if
    /// registered) and again under every new lease.
    pub fn own(&self, key: String, value: Vec<u8>) {
        self.owned().insert(key.clone(), value.clone());
        let lease = self.lease_id();
        if lease != 0 {
            let mut c = self.client.clone();
            tokio::spawn(async move {
                let opts = PutOptions::new().with_lease(lease);
                if let Err(e) = c.put(key.as_str(), value, Some(opts)).await {
                    warn!("cluster: writing {key}: {e} (again at the next registration)");
                }
            });
        }
    }

    /// Stops keeping `key`; its value as it was, if it was kept.
    pub fn disown(&self, key: &str) -> Option<Vec<u8>> {
        self.owned().remove(key)
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn peers(&self) -> Peers {
        self.peers.clone()
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

/// Over TLS, one handshake with each endpoint until one answers, before the daemon
/// touches anything: a certificate etcd refuses, or one of etcd's that kv.cacertfile
/// did not sign, is an error saying what to fix; etcd away is only a warning (the
/// registration retries).
pub async fn check_store(url: &str, opts: &StoreOpts) -> Result<(), ClusterError> {
    let endpoints = super::parse_store(url, opts.wants_tls())?;
    for ep in endpoints.iter().filter_map(|e| e.strip_prefix("https://")) {
        let host_port = ep;
        match opts.probe(host_port).await? {
            tls::Probe::Ok => return Ok(()),
            tls::Probe::Refused(err) => {
                return Err(ClusterError::Tls {
                    url: url.to_string(),
                    advice: tls::explain(&err, opts.cert.is_some()),
                    err,
                })
            }
            tls::Probe::Unreachable(why) => {
                warn!("cluster store {url}: {host_port}: {why} (retrying in the background)")
            }
        }
    }
    Ok(())
}

/// Grants a lease, writes the node record under it, and keeps it alive; starts over
/// whenever that fails (etcd down, lease expired).
async fn register(client: Client, node: Node, lease: watch::Sender<i64>, owned: Owned) {
    let key = format!("{NODES}{}", node.id);
    let value = match serde_json::to_vec(&node) {
        Ok(v) => v,
        Err(e) => {
            warn!("cluster: encoding this node's record: {e}");
            return;
        }
    };
    let mut logged_down = false;
    loop {
        match keep_registered(&client, &key, &value, &lease, &owned).await {
            Ok(()) => info!("cluster: lease of {key} ended, registering again"),
            Err(e) => {
                if !logged_down {
                    warn!("cluster: registering {key}: {e} (retrying)");
                    logged_down = true;
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        logged_down = false;
    }
}

async fn keep_registered(
    client: &Client,
    key: &str,
    value: &[u8],
    lease: &watch::Sender<i64>,
    owned: &Owned,
) -> Result<(), ClusterError> {
    let mut c = client.clone();
    let id = c.lease_grant(LEASE_TTL, None).await?.id();
    c.put(key, value, Some(PutOptions::new().with_lease(id)))
        .await?;
    let records: Vec<(String, Vec<u8>)> = owned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in records {
        c.put(k, v, Some(PutOptions::new().with_lease(id))).await?;
    }
    lease.send_replace(id);
    info!("cluster: registered {key} (lease {id:x}, {LEASE_TTL}s)");
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
    let every = Duration::from_secs((LEASE_TTL / 3).max(1) as u64);
    loop {
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(r) if r.ttl() > 0 => {}
            // TTL 0: the lease is gone (etcd was away longer than the TTL).
            _ => return Ok(()),
        }
        tokio::time::sleep(every).await;
    }
}

/// Keeps `peers` equal to the node records in etcd.
struct Nodes(Peers);

impl Follower for Nodes {
    type Record = Node;
    fn changed(&mut self, all: &Records<Node>) {
        let now: BTreeMap<String, Node> = all.values().map(|n| (n.id.clone(), n.clone())).collect();
        let mut p = self.0.write().unwrap_or_else(|e| e.into_inner());
        if *p != now {
            info!(
                "cluster: nodes {:?}",
                now.values().map(|n| n.addr).collect::<Vec<_>>()
            );
            *p = now;
        }
    }
}
