//! The intended state, kept in one JSON document under --state-dir. Every change is
//! written to a temporary file, fsynced and renamed over the old one (then the directory
//! is fsynced), so a crash at any point leaves either the old or the new state, whole.
//! Changes are committed here before the kernel is touched; reconcile makes the kernel
//! match afterwards.
//!
//! The document carries its layout version (`STATE_VERSION`). A file of an older
//! release is brought up to date by `migrate` when it is opened (the original is kept
//! beside it as `state.json.vN`); one of a newer release is refused before anything is
//! touched.
mod migrate;

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::model::{Container, Network};
pub use migrate::{StoreError, STATE_VERSION};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The layout of this document: always this release's (`migrate` brought an older
    /// file up to it before it became a `State`).
    pub version: Version,
    pub networks: Vec<Network>,
    pub containers: Vec<Container>,
    pub next_net_id: u32,
    /// This instance's id (Docker's `ID` in /info), made at its first start.
    #[serde(default)]
    pub instance_id: String,
    /// Containers of overlay networks on other nodes, as the cluster store's watch
    /// last said (never written to disk: etcd holds them). IPAM skips their addresses,
    /// DNS answers their names, the datapath tunnels to them.
    #[serde(skip)]
    pub remote: std::sync::Arc<Vec<crate::model::RemoteEndpoint>>,
    /// Where serial allocation (`--ipam-opt com.docker.network.ipam.serial=true`)
    /// goes on, by network id: the last address handed out. In memory, as dockerd
    /// keeps it for local networks: after a restart it starts again at the lowest.
    #[serde(skip)]
    pub ipam_cursor:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::Ipv4Addr>>>,
}

/// The state file's version, `STATE_VERSION` from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u32);

impl Default for Version {
    fn default() -> Self {
        Version(STATE_VERSION)
    }
}

impl State {
    pub fn container(&self, name_or_id: &str) -> Option<&Container> {
        self.containers.iter().find(|c| {
            c.name == name_or_id
                || c.id == name_or_id
                || (name_or_id.len() >= 6 && c.id.starts_with(name_or_id))
        })
    }

    pub fn container_mut(&mut self, id: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.id == id)
    }

    /// By name, full id, or an unambiguous id prefix (as Docker resolves them).
    pub fn network(&self, name_or_id: &str) -> Option<&Network> {
        if let Some(n) = self
            .networks
            .iter()
            .find(|n| n.name == name_or_id || n.id == name_or_id)
        {
            return Some(n);
        }
        let mut by_prefix = self
            .networks
            .iter()
            .filter(|n| n.id.starts_with(name_or_id));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(n), None) if !name_or_id.is_empty() => Some(n),
            _ => None,
        }
    }

    pub fn network_by_id(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn open(state_dir: &Path) -> anyhow::Result<(Store, State)> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state dir {}", state_dir.display()))?;
        let path = state_dir.join("state.json");
        // A leftover temporary file is an interrupted write: the rename never happened,
        // so the old state is the committed one.
        let _ = fs::remove_file(path.with_extension("json.tmp"));
        let state = match fs::read(&path) {
            Ok(bytes) => migrate::read(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok((Store { path }, state))
    }

    /// The version of the state in `state_dir` if this release can read it (none yet:
    /// this release's), without changing anything.
    pub fn check(state_dir: &Path) -> Result<u32, StoreError> {
        migrate::check(&state_dir.join("state.json"))
    }

    pub fn commit(&self, state: &State) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(state)?)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_reopen_round_trips_and_ignores_torn_tmp() {
        let dir = std::env::temp_dir().join(format!("netd-store-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (store, mut st) = Store::open(&dir).unwrap();
        st.next_net_id = 7;
        store.commit(&st).unwrap();
        // A torn write of a newer state must not be read.
        fs::write(dir.join("state.json.tmp"), b"{ half").unwrap();
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!(again.next_net_id, 7);
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
