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
        }
    }

    /// Rebuilds the table from `state`, opens servers in namespaces that newly need one,
    /// closes those of namespaces that no longer do, and rewrites changed files. Failures
    /// are logged: names are a service on top of a working network, never a reason to
    /// undo one.
    pub fn sync(&mut self, state: &State) {
        let table = Arc::new(Table::build(state));
        // A namespace that went lost its client (its attachments went with it).
        self.servers.retain(|ns, _| table.client(ns).is_some());
        let wanted: Vec<(String, Vec<SocketAddr>)> = table
            .namespaces()
            .filter(|ns| !self.servers.contains_key(*ns) && crate::netns::exists(ns))
            .map(|ns| {
                let own = table
                    .client(ns)
                    .map(|c| {
                        c.servers
                            .iter()
                            .map(|ip| SocketAddr::new(*ip, 53))
                            .collect()
                    })
                    .unwrap_or_default();
                (ns.clone(), own)
            })
            .collect();
        match self.shared.table.write() {
            Ok(mut g) => *g = table,
            Err(p) => *p.into_inner() = table,
        }
        for (ns, own) in wanted {
            match server::start(&ns, self.shared.clone(), own) {
                Ok(s) => {
                    self.servers.insert(ns, s);
                }
                Err(e) => warn!("dns: serving 127.0.0.11:53 in {ns}: {e:#}"),
            }
        }
        for c in &state.containers {
            self.write_files(c, state);
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
