//! netd's own sandboxes (`netd run|create|start|stop|rm`): a namespace, attachments
//! through the sandbox seam, published ports, and optionally a process.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use log::{info, warn};
use nix::sys::signal::Signal;

use super::{
    not_found_container, not_found_net, now, owned::Kind, processes, random_id, txn, Daemon, Inner,
};
use crate::{
    error::{NetdError, Result},
    model::{self, Container, ContainerState, NetMode, Network, PortMapping, RunRequest},
    netlink::Netlink,
    netns, ports, process,
    sandbox::{self, AttachOptions},
    store::State,
};

impl Daemon {
    pub async fn run(self: &Arc<Self>, req: RunRequest) -> Result<Container> {
        let mut g = self.inner.lock().await;
        let mut phases = Phases::start();
        let inner = &mut *g;
        let name = match &req.name {
            Some(n) => {
                model::validate_name(n)?;
                n.clone()
            }
            None => format!("netd_{}", &random_id()[..8]),
        };
        if inner.state.containers.iter().any(|c| c.name == name) {
            return Err(NetdError::Conflict(format!(
                "container name {name:?} is already in use: remove it or pick another name"
            )));
        }
        let (mode, net) = resolve_mode(&inner.state, req.network.as_deref().unwrap_or("bridge"))?;
        if mode != NetMode::Bridge {
            if !req.ports.is_empty() {
                return Err(NetdError::InvalidArgument(format!(
                    "port publishing needs a bridge network, not network mode {}",
                    model::mode_name(&mode, &inner.state.containers)
                )));
            }
            if req.ip.is_some() || req.ip6.is_some() || !req.aliases.is_empty() {
                return Err(NetdError::InvalidArgument(format!(
                    "--ip, --ip6 and --alias need a bridge network, not network mode {}",
                    model::mode_name(&mode, &inner.state.containers)
                )));
            }
        }
        let dns = model::DnsConfig::parse(&req.dns, &req.dns_search, &req.dns_options)?;
        let links = resolve_links(&inner.state, &req.links)?;
        let id = random_id();
        let attachments = match &net {
            Some(net) => {
                let opts = AttachOptions {
                    ip: req.ip,
                    ip6: req.ip6,
                    aliases: req.aliases.clone(),
                    ..Default::default()
                };
                vec![sandbox::plan(
                    &inner.state,
                    net,
                    &id,
                    &[],
                    opts,
                    &self.args.veth_prefix,
                )?]
            }
            None => Vec::new(),
        };
        // Docker publishes to the container's first network: the both-families rule
        // looks at its IPv6 address there.
        let ip6 = attachments.first().and_then(|a| a.ip6);
        let default_v4 = net
            .as_ref()
            .map_or(Ipv4Addr::UNSPECIFIED, |n| n.host_binding_ipv4);
        let mut ports = model::expand_specs(&req.ports, default_v4, ip6.is_some());
        if ports.iter().any(|m| m.host_ip.is_ipv6()) {
            let local6 = inner.nl.ipv6_addrs().await?;
            check_ipv6_ports(&ports, ip6, &local6, net.as_ref())?;
        }
        prepare_ports(
            &inner.state,
            net.as_ref(),
            &mut ports,
            self.args.snat_port_range,
        )?;
        let netns = match &mode {
            NetMode::Bridge | NetMode::None => Some(format!("{}{}", self.args.netns_prefix, name)),
            NetMode::Host => None,
            NetMode::Container(t) => inner
                .state
                .containers
                .iter()
                .find(|c| &c.id == t)
                .and_then(|c| c.netns.clone()),
        };
        if matches!(mode, NetMode::Bridge | NetMode::None) {
            if let Some(ns) = &netns {
                if netns::exists(ns) {
                    return Err(NetdError::Conflict(format!(
                        "network namespace {ns} already exists (not made by this netd?): remove it first"
                    )));
                }
            }
        }
        let c = Container {
            id,
            name: name.clone(),
            hostname: req.hostname.clone(),
            mode,
            netns,
            attachments,
            ports,
            cmd: req.cmd.clone(),
            state: ContainerState::Created,
            pid: None,
            pid_start: None,
            exit_code: None,
            auto_remove: req.auto_remove,
            origin: model::Origin::Netd,
            created: now(),
            started: None,
            finished: None,
            labels: req.labels.clone(),
            exposed: req.exposed.clone(),
            dns,
            links,
        };
        // Where the time of a `run` goes, logged at the end: publishing ports is one map
        // update each, and the rest is the sandbox (namespace, veth, program, process).
        phases.mark("checks");
        let c = txn::transact(
            inner,
            &format!("creating container {name}"),
            "run-committed",
            |state| {
                state.containers.push(c.clone());
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
                    let env = crate::dns::links::env(&c, &inner.state);
                    processes::start(self, &mut c, &env)?;
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
        info!(
            "container {} ({}) {}: created in {}",
            c.name,
            &c.id[..12],
            c.attachments
                .iter()
                .map(|a| a.ip.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            phases
        );
        Ok(c)
    }

    pub async fn start_container(self: &Arc<Self>, name: &str) -> Result<()> {
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        let mut c = inner
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        if c.state == ContainerState::Running {
            return Ok(());
        }
        let env = crate::dns::links::env(&c, &inner.state);
        processes::start(self, &mut c, &env).map_err(|e| match e.downcast::<NetdError>() {
            Ok(ne) => ne,
            Err(e) => NetdError::Internal(format!("{e:#}")),
        })?;
        if let Some(m) = inner.state.container_mut(&c.id) {
            *m = c;
        }
        inner.store.commit(&inner.state)?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `timeout`, as `docker stop -t` does.
    pub async fn stop_container(&self, name: &str, timeout: Duration) -> Result<()> {
        let (id, pid, start) = {
            let g = self.inner.lock().await;
            let c = g
                .state
                .container(name)
                .ok_or_else(|| not_found_container(name))?;
            (c.id.clone(), c.pid, c.pid_start)
        };
        if let Some(pid) = pid {
            process::kill(pid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + timeout;
            while process::alive(pid, start) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if process::alive(pid, start) {
                process::kill(pid, Signal::SIGKILL);
            }
        }
        let mut g = self.inner.lock().await;
        let inner = &mut *g;
        if let Some(c) = inner.state.container_mut(&id) {
            if c.state == ContainerState::Running {
                c.state = ContainerState::Exited;
                c.pid = None;
                c.finished = Some(now());
            }
        }
        inner.store.commit(&inner.state)?;
        Ok(())
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
        inner.state.containers.retain(|x| x.id != c.id);
        inner.store.commit(&inner.state)?;
        txn::fault("rm-committed");
        // Teardown removes the container's own ports and endpoints; nothing else in the
        // maps depends on it, so there is no full resync (which would cost O(all ports)).
        inner.teardown(&c).await;
        inner.sync_names();
        let _ = std::fs::remove_file(self.log_path(&c.id));
        info!("removed container {}", c.name);
        Ok(c.id)
    }

    pub async fn containers(&self) -> (Vec<Container>, Vec<Network>) {
        let g = self.inner.lock().await;
        (g.state.containers.clone(), g.state.networks.clone())
    }

    pub async fn container(&self, name: &str) -> Result<(Container, Vec<Network>, Vec<Container>)> {
        let g = self.inner.lock().await;
        let c = g
            .state
            .container(name)
            .cloned()
            .ok_or_else(|| not_found_container(name))?;
        Ok((c, g.state.networks.clone(), g.state.containers.clone()))
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
            sandbox::attach(
                &self.nl,
                &mut self.dp,
                &ns,
                &net,
                &mut c.attachments[i],
                i == 0,
            )
            .await?;
            phases.mark("sandbox");
        }
        let n = match c.attachments.first() {
            Some(first) => sandbox::publish(&mut self.dp, &c.ports, first)?,
            None => 0,
        };
        phases.mark(&format!("ports/{n}"));
        Ok(())
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
            self.detach(&c.name, a).await;
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

/// Docker's rules for the ports a new sandbox publishes: a mapping without a host
/// address takes the network's default one; a host port may be neither bound by a
/// process of the host namespace, nor published twice, nor published by another
/// container; host port 0 gets a free port.
pub(super) fn prepare_ports(
    state: &State,
    net: Option<&Network>,
    ports: &mut [PortMapping],
    snat_port_range: (u16, u16),
) -> Result<()> {
    if let Some(net) = net {
        for m in ports.iter_mut() {
            if m.host_ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
                m.host_ip = IpAddr::V4(net.host_binding_ipv4);
            }
        }
    }
    if ports.is_empty() {
        return Ok(());
    }
    let host_sockets = ports::host_sockets();
    for (i, m) in ports.iter().enumerate() {
        if m.host_port == 0 {
            continue;
        }
        if let Some(b) = host_sockets.listening(m) {
            return Err(NetdError::Conflict(format!(
                "host port {}/{} is in use by a process in the host namespace (bound to {b})",
                m.host(),
                m.proto
            )));
        }
        if ports[..i].iter().any(|o| o.collides_with(m)) {
            return Err(NetdError::InvalidArgument(format!(
                "host port {}/{} is published twice in this request",
                m.host_port, m.proto
            )));
        }
        for c in &state.containers {
            if let Some(o) = c.ports.iter().find(|o| o.collides_with(m)) {
                return Err(NetdError::Conflict(format!(
                    "host port {}/{} is already published by container {} ({})",
                    o.host(),
                    o.proto,
                    c.name,
                    o
                )));
            }
        }
    }
    ports::assign_random(ports, state, &host_sockets, snat_port_range)
}

/// The IPv6 mappings a container may have: it needs an IPv6 address on the network it
/// is published through (`ip6`), and a specific host address must be one of the
/// host's (`local6`). Docker, whose docker-proxy could carry IPv6 to an IPv4-only
/// container, skips such a mapping with a log line when the proxy is off; netd has no
/// proxy and says so instead of publishing less than was asked.
pub(super) fn check_ipv6_ports(
    ports: &[PortMapping],
    ip6: Option<Ipv6Addr>,
    local6: &[Ipv6Addr],
    net: Option<&Network>,
) -> Result<()> {
    for m in ports.iter().filter(|m| m.host_ip.is_ipv6()) {
        if ip6.is_none() {
            let net = net.map_or("its network", |n| n.name.as_str());
            return Err(NetdError::InvalidArgument(format!(
                "cannot publish {}/{} on IPv6: the container has no IPv6 address on {net} (create the network with --ipv6, or publish on an IPv4 address)",
                m.host(),
                m.proto
            )));
        }
        if let IpAddr::V6(h) = m.host_ip {
            if !h.is_unspecified() && !local6.contains(&h) {
                return Err(NetdError::InvalidArgument(format!(
                    "cannot publish {}/{}: {h} is not an address of this host (cannot assign requested address)",
                    m.host(),
                    m.proto
                )));
            }
        }
    }
    Ok(())
}

/// `--link NAME[:ALIAS]`s as links to existing containers (by name or id).
pub(super) fn resolve_links(state: &State, specs: &[String]) -> Result<Vec<model::Link>> {
    specs
        .iter()
        .map(|spec| {
            let (name, alias) = model::parse_link(spec)?;
            let t = state.container(&name).ok_or_else(|| {
                NetdError::NotFound(format!("--link {spec}: no such container: {name}"))
            })?;
            Ok(model::Link {
                target: t.id.clone(),
                alias,
            })
        })
        .collect()
}

/// `--network VALUE` as a mode and, for bridge mode, the network.
fn resolve_mode(state: &State, value: &str) -> Result<(NetMode, Option<Network>)> {
    if let Some(target) = value.strip_prefix("container:") {
        let t = state
            .container(target)
            .ok_or_else(|| not_found_container(target))?;
        if t.netns.is_none() || t.mode == NetMode::Host {
            return Err(NetdError::InvalidArgument(format!(
                "container {} has no network namespace of its own to join",
                t.name
            )));
        }
        let id = match &t.mode {
            // Joining a joiner joins the namespace's owner.
            NetMode::Container(owner) => owner.clone(),
            _ => t.id.clone(),
        };
        return Ok((NetMode::Container(id), None));
    }
    let net = state
        .network(value)
        .cloned()
        .ok_or_else(|| not_found_net(value))?;
    Ok(match net.driver.as_str() {
        model::DRIVER_HOST => (NetMode::Host, None),
        model::DRIVER_NULL => (NetMode::None, None),
        _ => (NetMode::Bridge, Some(net)),
    })
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
    netns::run_in(ns, move || {
        let lo = if ipv6_lo { "0" } else { "1" };
        for (key, value) in [
            ("all/accept_ra", "0"),
            ("default/accept_ra", "0"),
            ("lo/accept_ra", "0"),
            ("default/disable_ipv6", "1"),
            ("lo/disable_ipv6", lo),
        ] {
            let p = format!("/proc/sys/net/ipv6/conf/{key}");
            // /proc/sys/net is the writing thread's namespace: this one's.
            if std::path::Path::new(&p).exists() {
                std::fs::write(&p, value).with_context(|| format!("writing {p}"))?;
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
