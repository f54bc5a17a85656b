//! Names: the embedded DNS server on 127.0.0.11 in each container namespace on a
//! user-defined network, and each container's resolv.conf and hosts.
//!
//! - `records`: who sees which names (the table, derived from the daemon's state).
//! - `server`: the per-namespace UDP and TCP sockets and the answers.
//! - `udp`: the UDP loop, a batch of queries per wake (recvmmsg / sendmmsg).
//! - `forward`: upstreams, failover, timeouts, the namespace a forwarded query leaves from.
//! - `files`: /etc/netns/<netns>/{resolv.conf,hosts}.
//!
//! The daemon calls `Service::sync` after every change of containers or attachments (the
//! same operations that call sandbox::attach/detach), so the table always follows the
//! store; a query reads the table current at that moment.
mod answer;
mod delta;
pub mod files;
pub mod forward;
pub mod links;
pub mod records;
pub mod server;
mod udp;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use log::warn;

use crate::{model::Container, store::State};
use forward::Upstreams;
pub use records::Table;

/// The daemon's resolv.conf: host upstreams are queried from the daemon's namespace, so
/// a loopback upstream such as systemd-resolved's 127.0.0.53 works.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// What every server task shares: the current table and the host upstreams.
pub struct Shared {
    table: RwLock<Arc<Table>>,
    host_upstreams: Upstreams,
    /// The socket that asks the host upstreams, in the daemon's namespace.
    host_forwarder: Option<forward::Forwarder>,
}

impl Shared {
    /// The table as of now (a query holds it for its own duration only).
    pub fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

pub struct Service {
    shared: Arc<Shared>,
    servers: HashMap<String, server::Server>,
    host_resolv: files::HostResolv,
    /// What each namespace's files hold (resolv.conf, hosts), as last written: a sync
    /// writes those that changed without reading every container's files again.
    written: HashMap<std::path::PathBuf, (String, String)>,
    /// What the last sync saw, so the next rebuilds only what changed.
    tracker: delta::Tracker,
    /// Namespaces whose server failed to start (tried again at every sync).
    failed: std::collections::HashSet<String>,
}

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}

impl Service {
    pub fn new() -> Service {
        let host_resolv = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
        let ups = forward::parse_resolv_conf(&host_resolv);
        log::info!("dns: host upstreams {ups:?}");
        Service {
            shared: Arc::new(Shared {
                table: RwLock::new(Arc::new(Table::default())),
                host_upstreams: Upstreams::new(ups),
                host_forwarder: forward::Forwarder::in_daemon()
                    .map_err(|e| warn!("dns: no socket for the host upstreams: {e}"))
                    .ok(),
            }),
            servers: HashMap::new(),
            host_resolv: files::parse_host(&host_resolv),
            written: HashMap::new(),
            tracker: delta::Tracker::default(),
            failed: Default::default(),
        }
    }

    /// Brings the table up to `state`, opens servers in namespaces that newly need one,
    /// closes those of namespaces that no longer do, and rewrites changed files. Only
    /// what the containers that changed since the last sync touch is rebuilt (`delta`).
    /// Failures are logged: names are a service on top of a working network, never a
    /// reason to undo one.
    /// Whether any container has `--link`s (else there are no link exceptions).
    pub fn any_links(&self) -> bool {
        self.tracker.any_links()
    }

    pub fn sync(&mut self, state: &State) {
        match self.tracker.changes(state) {
            delta::Changes::All => self.sync_all(state),
            delta::Changes::Some { changed, gone } => {
                if !changed.is_empty() || !gone.is_empty() || !self.failed.is_empty() {
                    self.sync_some(state, &changed, &gone);
                }
            }
        }
    }

    /// The table built from `state` whole, and every server and file checked.
    fn sync_all(&mut self, state: &State) {
        let table = Arc::new(Table::build(state));
        // A namespace that went lost its client (its attachments went with it).
        self.servers.retain(|ns, _| table.client(ns).is_some());
        match self.shared.table.write() {
            Ok(mut g) => *g = table.clone(),
            Err(p) => *p.into_inner() = table.clone(),
        }
        for ns in table.namespaces() {
            self.ensure_server(ns, &table);
        }
        for c in &state.containers {
            self.write_files(c, state);
        }
    }

    /// The table patched with what `changed` and `gone` took out and put in.
    fn sync_some(&mut self, state: &State, changed: &[delta::Changed], gone: &[delta::Gone]) {
        let (mut namespaces, files) = self.tracker.touched(changed, gone);
        {
            let mut g = self
                .shared
                .table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // In place unless a query holds the table right now (then it is copied).
            delta::patch(
                Arc::make_mut(&mut g),
                &self.tracker,
                state,
                changed,
                gone,
                &namespaces,
            );
        }
        let table = self.shared.table();
        namespaces.extend(std::mem::take(&mut self.failed));
        for ns in &namespaces {
            if table.client(ns).is_none() {
                self.servers.remove(ns);
            } else {
                self.ensure_server(ns, &table);
            }
        }
        for c in files {
            self.write_files(&c, state);
        }
        for ns in gone.iter().filter_map(|g| g.netns.as_deref()) {
            self.written.remove(&files::dir_of_netns(ns));
        }
    }

    /// A server in namespace `ns` (which has a client in `table`) unless it has one.
    fn ensure_server(&mut self, ns: &str, table: &Table) {
        if self.servers.contains_key(ns) || !crate::netns::exists(ns) {
            return;
        }
        let own: Vec<SocketAddr> = table
            .client(ns)
            .map(|c| {
                c.servers
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, 53))
                    .collect()
            })
            .unwrap_or_default();
        match server::start(ns, self.shared.clone(), own) {
            Ok(s) => {
                self.servers.insert(ns.to_string(), s);
            }
            Err(e) => {
                warn!("dns: serving 127.0.0.11:53 in {ns}: {e:#}");
                // Tried again at the next sync.
                self.failed.insert(ns.to_string());
            }
        }
    }

    fn write_files(&mut self, c: &Container, state: &State) {
        let Some(dir) = files::dir_of(c) else { return };
        let texts = (
            files::resolv_conf(c, state, &self.host_resolv),
            files::hosts(c, state),
        );
        if self.written.get(&dir) == Some(&texts) {
            return;
        }
        let mut ok = true;
        for (f, text) in [("resolv.conf", &texts.0), ("hosts", &texts.1)] {
            let p = dir.join(f);
            if let Err(e) = files::write_if_changed(&p, text) {
                warn!("dns: writing {}: {e}", p.display());
                ok = false;
            }
        }
        if ok {
            self.written.insert(dir, texts);
        }
    }

    /// Removes `c`'s files (called when it is removed; its server goes at the next sync).
    pub fn forget(&mut self, c: &Container) {
        if let Some(dir) = files::dir_of(c) {
            self.written.remove(&dir);
        }
        files::remove(c);
        if let Some(ns) = &c.netns {
            if c.owns_netns() {
                self.servers.remove(ns);
            }
        }
    }
}
