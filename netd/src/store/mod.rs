//! The intended state, kept in `STATE_DIR/state.db`: a row per network and per
//! container. Changes are committed here before the kernel is touched; reconcile makes
//! the kernel match afterwards. `Store::commit` takes the whole `State` (what the daemon
//! holds) and writes only the records that changed since the last commit, and deletes
//! the ones that went, in one transaction with one fsync: creating a container costs
//! the same with 5,000 on the host as with 10 (`records`). A crash leaves the last
//! committed transaction whole.
//!
//! Why SQLite (bundled, through rusqlite) and not redb: the agent is not the only one
//! that reads the file. `netd daemon --replace` must refuse a state it cannot read
//! *before* it stops the running agent, and `--cleanup` reads the instance id, both
//! while or after another process had the file open; SQLite's readers work beside a
//! writer, where redb locks the file to one process. SQLite's WAL also gives one fsync
//! per commit, its crash safety is the most tested of any embedded store, and an
//! operator can read the state with the `sqlite3` shell.
//!
//! The database carries its layout version (`STATE_VERSION`, in `meta`). State of an
//! older release is brought up to date by `migrate` when it is opened: a `state.json`
//! (versions 1 and 2) is imported in one transaction and then kept beside it as
//! `state.json.vN`; an older database is kept as `state.db.vN` and rewritten. State of a
//! newer release is refused before anything is touched.
mod db;
pub mod follow;
mod index;
mod migrate;
mod records;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::Context;
use log::info;
use rusqlite::{Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::model::{Container, Network};
pub use index::Index;
pub use migrate::{StoreError, STATE_VERSION};
use records::{Diff, Entry, Record, Rows};

/// The database, in the state directory.
pub const DB_FILE: &str = "state.db";
/// The state file of versions 1 and 2, imported into the database.
pub const JSON_FILE: &str = "state.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The layout of the state: always this release's (`migrate` brought older state
    /// up to it before it became a `State`).
    pub version: Version,
    pub networks: Vec<Network>,
    /// Shared with the store's last commit (`records`): a commit tells an untouched
    /// container by its pointer, so its cost follows the change, not the host. Changed
    /// through `container_mut`, which copies only the one container it changes.
    pub containers: Vec<Arc<Container>>,
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
    pub ipam_cursor: IpamCursor,
    /// Names, networks and host ports of the containers, for the checks of a new one.
    #[serde(skip)]
    pub index: Index,
}

/// Serial allocation's cursors (`State::ipam_cursor`): shared by the copies of a state,
/// and no part of what two states are compared on.
#[derive(Clone, Debug, Default)]
pub struct IpamCursor(
    pub std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::IpAddr>>>,
);

impl PartialEq for IpamCursor {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The state's layout version, `STATE_VERSION` from the start.
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
        // A full id or a name through the index, then a walk over pointers, not names.
        if let Some(hit) = self.index.exact(&self.containers, name_or_id) {
            return self.place_of(&hit).map(|i| &*self.containers[i]);
        }
        self.containers
            .iter()
            .find(|c| name_or_id.len() >= 6 && c.id.starts_with(name_or_id))
            .map(|c| &**c)
    }

    /// The container `id`, to change: a copy of its own if the store's commit still
    /// shares it.
    pub fn container_mut(&mut self, id: &str) -> Option<&mut Container> {
        let hit = self.index.by_id(&self.containers, id)?;
        let i = self.place_of(&hit)?;
        Some(Arc::make_mut(&mut self.containers[i]))
    }

    /// Where record `c` is in the list.
    fn place_of(&self, c: &Arc<Container>) -> Option<usize> {
        self.containers.iter().position(|x| Arc::ptr_eq(x, c))
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

    /// Whether a container has this name.
    pub fn name_taken(&self, name: &str) -> bool {
        self.index.name_taken(&self.containers, name)
    }

    /// The addresses (both families) the containers hold on network `net` (by id).
    pub fn addresses_on(&self, net: &str) -> Vec<std::net::IpAddr> {
        self.index.addresses_on(&self.containers, net)
    }

    /// The containers publishing host port `port` for `proto`, on any host address.
    pub fn publishing(&self, proto: crate::model::Proto, port: u16) -> Vec<Arc<Container>> {
        self.index.publishing(&self.containers, proto, port)
    }

    pub fn network_by_id(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }
}

/// The intended state's database, open for the daemon.
pub struct Store {
    path: PathBuf,
    open: Mutex<Open>,
}

struct Open {
    conn: Connection,
    /// What the database holds (None after a failed commit: the next one writes the
    /// state whole, whatever the failure left).
    last: Option<Committed>,
}

/// The records and scalars of the last commit.
struct Committed {
    networks: Rows<Network>,
    containers: Rows<Container>,
    next_net_id: u32,
    instance_id: String,
}

impl Store {
    /// Opens the state in `state_dir`: the database, or the state file of an earlier
    /// release imported into a new one, or an empty state.
    pub fn open(state_dir: &Path) -> anyhow::Result<(Store, State)> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state dir {}", state_dir.display()))?;
        // Refused before a connection that could write opens it.
        Self::check(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let mut conn = db::open(&path)?;
        let version = db::version(&conn).map_err(|e| db::invalid(&path, e))?;
        let (state, last) = match version {
            Some(v) if v > STATE_VERSION => return Err(StoreError::Newer { path, found: v }.into()),
            Some(v) => open_db(&mut conn, &path, v)?,
            None => import(&mut conn, state_dir)?,
        };
        // The import committed, but the agent died before it moved the file aside.
        set_aside_json(state_dir)?;
        let open = Mutex::new(Open {
            conn,
            last: Some(last),
        });
        Ok((Store { path, open }, state))
    }

    /// The version of the state in `state_dir` if this release can read it (none yet:
    /// this release's), without changing anything.
    pub fn check(state_dir: &Path) -> Result<u32, StoreError> {
        let path = state_dir.join(DB_FILE);
        if path.exists() {
            match db::peek_version(&path)? {
                Some(v) if v > STATE_VERSION => return Err(StoreError::Newer { path, found: v }),
                Some(v) => return Ok(v),
                // Never written whole: the state file (if any) is still the state.
                None => {}
            }
        }
        migrate::check(&state_dir.join(JSON_FILE))
    }

    /// Makes the database hold `state`: the records that changed since the last commit
    /// are written and the removed ones deleted, in one transaction; nothing is written
    /// if nothing changed.
    pub fn commit(&self, state: &State) -> anyhow::Result<()> {
        let mut g = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let Open { conn, last } = &mut *g;
        let Some(c) = last.as_mut() else {
            *last = Some(write_all(conn, state).with_context(|| self.what())?);
            return Ok(());
        };
        let nets = c.networks.diff(&state.networks);
        let ctrs = c.containers.diff(&state.containers);
        let scalars = c.next_net_id != state.next_net_id || c.instance_id != state.instance_id;
        if nets.is_empty() && ctrs.is_empty() && !scalars {
            return Ok(());
        }
        let written = (|| -> anyhow::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write_changes(&tx, db::NETWORKS, &c.networks, &nets, &state.networks)?;
            write_changes(&tx, db::CONTAINERS, &c.containers, &ctrs, &state.containers)?;
            if scalars {
                db::set_meta(&tx, "next_net_id", state.next_net_id)?;
                db::set_meta(&tx, "instance_id", &state.instance_id)?;
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = written {
            // Whether a failed COMMIT reached the disk is not known: write it all next.
            *last = None;
            return Err(e.context(self.what()));
        }
        c.networks.apply(nets, &state.networks);
        c.containers.apply(ctrs, &state.containers);
        c.next_net_id = state.next_net_id;
        c.instance_id.clone_from(&state.instance_id);
        Ok(())
    }

    /// The state as last committed, to put back with `rollback` if an operation fails.
    /// Cheap: it shares the committed records (a copy of `state` after a failed commit,
    /// when what the database holds is not known).
    pub fn savepoint(&self, state: &State) -> Savepoint {
        let g = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match &g.last {
            Some(c) => Savepoint::Committed {
                networks: c.networks.shared(),
                containers: c.containers.shared(),
                next_net_id: c.next_net_id,
                instance_id: c.instance_id.clone(),
            },
            None => Savepoint::Copy(Box::new(state.clone())),
        }
    }

    fn what(&self) -> String {
        format!("writing {}", self.path.display())
    }
}

/// What `Store::savepoint` kept. The daemon commits every change it makes, so the
/// committed state is the state before the next operation; keeping it costs a pointer
/// per record where a copy of the state would cost the whole state, every operation.
pub enum Savepoint {
    Committed {
        networks: Vec<std::sync::Arc<Network>>,
        containers: Vec<Arc<Container>>,
        next_net_id: u32,
        instance_id: String,
    },
    Copy(Box<State>),
}

impl Savepoint {
    /// Puts `state` back as it was at the savepoint (`remote`, which is not stored,
    /// stays as it is now).
    pub fn rollback(self, state: &mut State) {
        match self {
            Savepoint::Committed {
                networks,
                containers,
                next_net_id,
                instance_id,
            } => {
                state.networks = networks.iter().map(|n| (**n).clone()).collect();
                state.containers = containers;
                state.next_net_id = next_net_id;
                state.instance_id = instance_id;
            }
            Savepoint::Copy(before) => {
                let remote = std::mem::take(&mut state.remote);
                *state = *before;
                state.remote = remote;
            }
        }
    }
}

/// This instance's id as the state in `state_dir` records it (None without state),
/// read without changing anything: for `--cleanup`, whose daemon is stopped.
pub fn peek_instance_id(state_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = state_dir.join(DB_FILE);
    if path.exists() {
        if let Some(id) = db::peek_meta(&path, "instance_id")? {
            return Ok(Some(id).filter(|s| !s.is_empty()));
        }
    }
    let Ok(text) = fs::read_to_string(state_dir.join(JSON_FILE)) else {
        return Ok(None);
    };
    let doc: serde_json::Value = serde_json::from_str(&text).context("reading state.json")?;
    Ok(doc["instance_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from))
}

/// The state of a database at version `v`; one of an older version is kept as
/// `state.db.vN` and written again in this version's form.
fn open_db(conn: &mut Connection, path: &Path, v: u32) -> anyhow::Result<(State, Committed)> {
    let read = db::read_doc(conn).map_err(|e| db::invalid(path, e))?;
    let (state, _) = migrate::state_of(path, read.doc)?;
    if v == STATE_VERSION {
        let last = Committed {
            networks: db::rows(&state.networks, &read.network_seqs),
            containers: db::rows(&state.containers, &read.container_seqs),
            next_net_id: state.next_net_id,
            instance_id: state.instance_id.clone(),
        };
        return Ok((state, last));
    }
    let keep = PathBuf::from(format!("{}.v{v}", path.display()));
    if !keep.exists() {
        conn.execute("VACUUM INTO ?1", [keep.display().to_string()])
            .with_context(|| format!("keeping the original state as {}", keep.display()))?;
    }
    let last = write_all(conn, &state).with_context(|| format!("writing {}", path.display()))?;
    info!(
        "{}: migrated from state version {v} to {STATE_VERSION} (the original is kept as {})",
        path.display(),
        keep.display()
    );
    Ok((state, last))
}

/// A new database holding the state file of an earlier release (migrated to this
/// version), or an empty state, written in one transaction.
fn import(conn: &mut Connection, state_dir: &Path) -> anyhow::Result<(State, Committed)> {
    let json = state_dir.join(JSON_FILE);
    let (state, found) = match fs::read(&json) {
        Ok(bytes) => {
            let (state, found) = migrate::read(&json, &bytes)?;
            (state, Some(found))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::default(), None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", json.display())),
    };
    let path = state_dir.join(DB_FILE);
    let last = write_all(conn, &state).with_context(|| format!("writing {}", path.display()))?;
    if let Some(found) = found {
        info!(
            "{}: imported into {} (state version {found} to {STATE_VERSION})",
            json.display(),
            path.display()
        );
    }
    Ok((state, last))
}

/// Moves a state file the database was made from aside, as `state.json.vN` (an older
/// copy of that name is kept, and this one dropped: the database holds it).
fn set_aside_json(state_dir: &Path) -> anyhow::Result<()> {
    let json = state_dir.join(JSON_FILE);
    if !json.exists() {
        return Ok(());
    }
    let v = migrate::check(&json).unwrap_or(0);
    let keep = state_dir.join(format!("{JSON_FILE}.v{v}"));
    let moved = if keep.exists() {
        fs::remove_file(&json)
    } else {
        fs::rename(&json, &keep)
    };
    moved.with_context(|| format!("moving {} aside", json.display()))?;
    if let Ok(dir) = fs::File::open(state_dir) {
        dir.sync_all()
            .with_context(|| format!("syncing {}", state_dir.display()))?;
    }
    Ok(())
}

/// Writes `state` whole (tables emptied first) in one transaction.
fn write_all(conn: &mut Connection, state: &State) -> anyhow::Result<Committed> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    db::create_schema(&tx)?;
    db::set_meta(&tx, "version", STATE_VERSION)?;
    db::set_meta(&tx, "next_net_id", state.next_net_id)?;
    db::set_meta(&tx, "instance_id", &state.instance_id)?;
    let networks = Rows::numbered(&state.networks);
    let containers = Rows::numbered(&state.containers);
    for (table, written) in [
        (db::NETWORKS, &networks as &dyn WriteAll),
        (db::CONTAINERS, &containers),
    ] {
        db::clear(&tx, table)?;
        written.write_all(&tx, table)?;
    }
    tx.commit()?;
    Ok(Committed {
        networks,
        containers,
        next_net_id: state.next_net_id,
        instance_id: state.instance_id.clone(),
    })
}

/// A table's rows written whole.
trait WriteAll {
    fn write_all(&self, tx: &rusqlite::Transaction, table: &str) -> anyhow::Result<()>;
}

impl<T: Record + Serialize> WriteAll for Rows<T> {
    fn write_all(&self, tx: &rusqlite::Transaction, table: &str) -> anyhow::Result<()> {
        for (seq, rec) in self.seqs().zip(self.records()) {
            db::put(tx, table, seq, rec)?;
        }
        Ok(())
    }
}

/// One table's part of a commit.
fn write_changes<T: Record + Serialize>(
    tx: &rusqlite::Transaction,
    table: &str,
    rows: &Rows<T>,
    diff: &Diff,
    new: &[impl Entry<T>],
) -> anyhow::Result<()> {
    for &seq in &diff.deletes {
        db::delete(tx, table, seq)?;
    }
    for (seq, j) in diff.writes(rows) {
        db::put(tx, table, seq, new[j].get())?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
