//! netd's own sandboxes (`netd run|create|start|stop|rm`): a namespace, attachments
//! through the sandbox seam, published ports, and optionally a process.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use log::{info, warn};
use nix::sys::signal::Signal;

use super::{
    not_found_container, owned::Kind, processes, run_plan::plan_container, txn, Daemon, Inner,
};
use crate::{
    error::{NetdError, Result},
    model::{Container, ContainerState, NetMode, Network, RunRequest},
    netlink::Netlink,
    netns, process, sandbox,
    store::State,
};

impl Daemon {
    pub async fn run(self: &Arc<Self>, req: RunRequest) -> Result<Container> {
        let mut g = self.inner.lock().await;
        let mut phases = Phases::start();
        let inner = &mut *g;
        let c = plan_container(&inner.state, &inner.nl, &self.args, &req).await?;
        let name = c.name.clone();
        // Where the time of a `run` goes, logged at the end: publishing ports is one map
        // update each, and the rest is the sandbox (namespace, veth, program, process).
        phases.mark("checks");
        let c = txn::transact(
            inner,
            &format!("creating container {name}"),
            "run-committed",
            |state| {
                state.containers.push(Arc::new(c.clone()));
                Ok(c)
            },
            async |inner: &mut Inner, c: &Container| {
                phases.mark("store");
                let mut c = c.clone();
                inner.build_sandbox(&mut c, &mut phases).await?;
                // Files and the DNS server before the process: its first lookup works.
                inner.sync_names();
                phases.mark("dns");
                if req.start {
                    let env = crate::dns::links::env(&c, &inner.state.containers);
                    processes::start(self, &mut c, &env).await?;
                }
                phases.mark("process");
                if let Some(m) = inner.state.container_mut(&c.id) {
                    *m = c.clone();
                }
                inner.store.commit(&inner.state)?;
                phases.mark("store");
                Ok(c)
            },
            async |inner: &mut Inner, c: &Container| {
                inner.teardown(c).await;
            },
        )
        .await?;
        self.emit_created(&c, &g.state);
        info!(
            "container {} ({}) {}: created in {}",
            c.name,
            &c.id[..12],
            c.attachments
                .iter()
                .map(|a| match (a.ipv4(), a.ip6) {
                    (Some(ip), _) => ip.to_string(),
                    (None, Some(ip6)) => ip6.to_string(),
                    (None, None) => "no address".into(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            phases
        );
        Ok(c)
    }

    /// The events of a new container: created, connected to its networks, started.
    fn emit_created(&self, c: &Container, state: &State) {
        self.emit_container(c, "create", &[]);
        for a in &c.attachments {
            if let Some(n) = state.network_by_id(&a.network) {
                self.emit_network(n, "connect", Some(&c.id));
            }
        }
        if c.state == ContainerState::Running {
            self.emit_container(c, "start", &[]);
        }
    }

    pub async fn remove(&self, name: &str, force: bool) -> Result<String> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let c = inner
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        let running = c.pid.is_some_and(|p| process::alive(p, c.pid_start));
        if running && !force {
            return Err(NetdError::Conflict(format!(
                "container {} is running: stop it first or use rm -f",
                c.name
            )));
        }
        if let Some(user) = inner
            .state
            .containers
            .iter()
            .find(|o| o.mode == NetMode::Container(c.id.clone()))
        {
            return Err(NetdError::Conflict(format!(
                "container {} shares the network namespace of {} (--network container:{}): remove it first",
                user.name, c.name, c.name
            )));
        }
        if running {
            self.emit_container(&c, "kill", &[("signal", "9".into())]);
            self.emit_container(&c, "die", &[("exitCode", "137".into())]);
        }
        for a in &c.attachments {
            if let Some(n) = inner.state.network_by_id(&a.network) {
                self.emit_network(n, "disconnect", Some(&c.id));
            }
        }
        // Teardown removes the container's own ports and endpoints; nothing else in the
        // maps depends on it, so there is no full resync (which would cost O(all ports)).
        let what = format!("removing container {}", c.name);
        inner.remove_record(&c, &what, "rm-committed").await?;
        let _ = std::fs::remove_file(self.log_path(&c.id));
        self.forget_streams(&c.id);
        self.emit_container(&c, "destroy", &[]);
        info!("removed container {}", c.name);
        Ok(c.id)
    }

    pub async fn containers(&self) -> (Vec<Arc<Container>>, Vec<Network>) {
        let g = self.inner.lock().await;
        (g.state.containers.clone(), g.state.networks.clone())
    }

    /// Container `name`, the networks, and the containers it refers to (the one whose
    /// namespace it shares, its `--link` targets): what its inspect shows of others.
    pub async fn container(
        &self,
        name: &str,
    ) -> Result<(Container, Vec<Network>, Vec<Arc<Container>>)> {
        let g = self.inner.lock().await;
        let c = g
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        let owner = match &c.mode {
            NetMode::Container(id) => Some(id.as_str()),
            _ => None,
        };
        let related = owner
            .into_iter()
            .chain(c.links.iter().map(|l| l.target.as_str()))
            .filter_map(|id| g.state.index.by_id(&g.state.containers, id))
            .collect();
        Ok((c, g.state.networks.clone(), related))
    }
}

impl Inner {
    /// The kernel side of a new container: its namespace (if it owns one), every
    /// attachment through the sandbox seam, its published ports.
    async fn build_sandbox(
        &mut self,
        c: &mut Container,
        phases: &mut Phases,
    ) -> anyhow::Result<()> {
        if c.owns_netns() {
            if let Some(ns) = &c.netns {
                self.owned.claim(Kind::Netns, ns)?;
                netns::create(ns)?;
                set_lo_up(ns, false).await?;
                set_ns_sysctls(ns, &c.config.sysctls)?;
            }
        }
        phases.mark("netns");
        txn::fault("run-netns-created");
        let ns = c.netns.clone().unwrap_or_default();
        for i in 0..c.attachments.len() {
            let net = self
                .state
                .network_by_id(&c.attachments[i].network)
                .cloned()
                .ok_or_else(|| anyhow!("network vanished"))?;
            self.owned.claim(Kind::Link, &c.attachments[i].veth)?;
            self.claim_overlay(&net, c, &c.attachments[i]).await?;
            let routes = c.default_routes(i, &self.state.networks);
            let a = &mut c.attachments[i];
            sandbox::join(&self.nl, Some(ns.as_str()), &net, a, routes).await?;
            txn::fault("run-veth-joined");
            phases.mark("veth");
            sandbox::wire(&self.nl, &mut self.dp, &net, a).await?;
            phases.mark("programs");
        }
        let n = match c.primary(&self.state.networks) {
            Some(p) => sandbox::publish(&mut self.dp, &c.ports, &c.attachments[p])?,
            None => 0,
        };
        phases.mark(&format!("ports/{n}"));
        Ok(())
    }

    /// Removes `c`'s record (through `txn::remove`), then what it has in the kernel
    /// (ports, endpoints, veths) and its names.
    pub(super) async fn remove_record(
        &mut self,
        c: &Container,
        operation: &str,
        fault_point: &str,
    ) -> Result<()> {
        txn::remove(
            self,
            operation,
            fault_point,
            |state| {
                state.containers.retain(|x| x.id != c.id);
                Ok(())
            },
            async |inner: &mut Inner, ()| {
                inner.teardown(c).await;
                inner.sync_names();
            },
        )
        .await
    }

    /// Removes everything of `c` from the kernel: its process, ports, attachments and
    /// namespace. Goes on past failures and logs them all, so one missing piece never
    /// leaves the others behind.
    pub(super) async fn teardown(&mut self, c: &Container) {
        if let Some(pid) = c.pid {
            if process::alive(pid, c.pid_start) {
                process::kill(pid, Signal::SIGKILL);
            }
        }
        sandbox::unpublish(&mut self.dp, &c.ports);
        self.dns.forget(c);
        for a in &c.attachments {
            self.detach(c, a).await;
        }
        if c.owns_netns() {
            if let Some(ns) = &c.netns {
                processes::kill_netns_processes(ns);
                match netns::delete(ns) {
                    Ok(()) => self.owned.release(Kind::Netns, ns),
                    Err(e) => warn!("{}: {e:#}", c.name),
                }
            }
        }
    }
}

/// Loopback up and IPv6 off in a container namespace, except on the interfaces of
/// networks created with --ipv6 (the bridge driver turns it on there, and on loopback:
/// `ipv6_lo` says whether that happened already). netd's isolation of other networks
/// is IPv4, and link-local IPv6 between their containers would otherwise get around it.
/// Router advertisements are ignored everywhere: a container's addresses and routes
/// come from netd alone.
///
/// `all.disable_ipv6` is never written: writing it sets every interface, and would strip
/// the IPv6 addresses of a running container when reconcile calls this again. `default`
/// covers every interface made after this, and loopback is the only one before.
pub(super) async fn set_lo_up(ns: &str, ipv6_lo: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    crate::process::with_own_proc(ns, move || {
        let lo = if ipv6_lo { "0" } else { "1" };
        for (key, value) in [
            ("all/accept_ra", "0"),
            ("default/accept_ra", "0"),
            ("lo/accept_ra", "0"),
            ("default/disable_ipv6", "1"),
            ("lo/disable_ipv6", lo),
        ] {
            let p = format!("/proc/sys/net/ipv6/conf/{key}");
            // /proc/sys/net is the writing thread's namespace: this one's. Without IPv6
            // in the kernel there is no such file, and nothing to turn off.
            match std::fs::write(&p, value) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.with_context(|| format!("writing {p}"))?,
            }
        }
        Ok(())
    })?;
    let inside = Netlink::in_netns(ns)?;
    if let Some(lo) = inside.link_by_name("lo").await? {
        inside.set_up(lo.index).await?;
    }
    Ok(())
}

/// `--sysctl`s in namespace `ns` (checked by `model::check_ns_sysctls`), before its
/// interfaces exist: `default` keys apply to them too.
fn set_ns_sysctls(ns: &str, sysctls: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let sysctls = sysctls.clone();
    crate::process::with_own_proc(ns, move || {
        for (k, v) in &sysctls {
            crate::sysctl::set(k, v)?;
        }
        Ok(())
    })
}

/// Wall-clock time of the steps of one operation, for the log.
pub(super) struct Phases {
    start: Instant,
    last: Instant,
    steps: Vec<(String, Duration)>,
}

impl Phases {
    fn start() -> Phases {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn mark(&mut self, step: &str) {
        let now = Instant::now();
        self.steps.push((step.to_string(), now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} us (", (self.last - self.start).as_micros())?;
        for (i, (step, d)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{step} {} us", d.as_micros())?;
        }
        write!(f, ")")
    }
}
