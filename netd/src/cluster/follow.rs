//! Following a key prefix of etcd: a full read, then a watch from the revision after
//! it, both again (a second later) after any error, for as long as someone listens. The
//! node list, the overlay networks and the overlay endpoints are all kept this way; each
//! says what a record is and who hears of changes (`Follower`).
use std::{collections::BTreeMap, time::Duration};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use log::warn;
use serde::de::DeserializeOwned;

use super::ClusterError;

/// Pause between attempts while etcd is unreachable.
pub const RETRY: Duration = Duration::from_secs(1);

/// What a follower keeps: every record under the prefix, by key.
pub type Records<T> = BTreeMap<Vec<u8>, T>;

pub trait Follower: Send + 'static {
    type Record: DeserializeOwned + Send;
    /// The records changed (the whole set after a full read or a watch response).
    fn changed(&mut self, all: &Records<Self::Record>);
    /// Nobody listens any more: the follower stops.
    fn done(&self) -> bool {
        false
    }
}

/// Follows `prefix` in the background, telling `f` of every change; `what` names it in
/// the log.
pub fn spawn<F: Follower>(what: &'static str, client: Client, prefix: &'static str, mut f: F) {
    tokio::spawn(async move {
        let mut logged = false;
        loop {
            match once(&client, prefix, &mut f).await {
                Ok(()) => logged = false,
                Err(e) if !logged => {
                    warn!("cluster: watching {what}: {e} (retrying)");
                    logged = true;
                }
                Err(_) => {}
            }
            if f.done() {
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Option<T> {
    serde_json::from_slice(value)
        .map_err(|err| {
            let e = ClusterError::BadRecord {
                key: String::from_utf8_lossy(key).into_owned(),
                err,
            };
            warn!("{e}");
        })
        .ok()
}

async fn once<F: Follower>(client: &Client, prefix: &str, f: &mut F) -> Result<(), ClusterError> {
    let mut c = client.clone();
    let resp = c.get(prefix, Some(GetOptions::new().with_prefix())).await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut all = Records::new();
    for kv in resp.kvs() {
        if let Some(r) = decode(kv.key(), kv.value()) {
            all.insert(kv.key().to_vec(), r);
        }
    }
    f.changed(&all);
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(rev + 1);
    let mut stream = c.watch(prefix, Some(opts)).await?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() || f.done() {
            break;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => {
                    if let Some(r) = decode(kv.key(), kv.value()) {
                        all.insert(kv.key().to_vec(), r);
                    }
                }
                EventType::Delete => {
                    all.remove(kv.key());
                }
            }
        }
        f.changed(&all);
    }
    Ok(())
}
