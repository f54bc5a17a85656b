//! A node leaving the cluster for good (`netd daemon --cleanup`): its registration's
//! lease is revoked, which removes its record and every record made under that lease
//! (its overlay endpoints) at once. A stop does not do this: a restarting agent keeps
//! its lease so that peers go on tunnelling to its containers.
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use super::{ClusterError, StoreOpts, NODES};

/// Revokes the lease of node `id`'s record in the store at `url` (over TLS as `tls`
/// says); Ok(false) when it has none left.
pub async fn leave(url: &str, tls: &StoreOpts, id: &str) -> Result<bool, ClusterError> {
    let endpoints = super::parse_store(url, tls.wants_tls())?;
    let over_tls = endpoints.iter().any(|e| e.starts_with("https://"));
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    let opts = tls.apply(over_tls, opts)?;
    let mut client = Client::connect(endpoints, Some(opts)).await?;
    let resp = client.get(format!("{NODES}{id}"), None).await?;
    match resp.kvs().first().map(|kv| kv.lease()) {
        Some(lease) if lease != 0 => {
            client.lease_revoke(lease).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
