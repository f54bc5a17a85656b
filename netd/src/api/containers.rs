//! `/containers`: Docker's container endpoints, for netd's sandboxes.
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
};

use super::{
    filters::query_flag,
    networks::endpoint_id,
    now, rfc3339, select,
    types::{
        ContainerConfig, ContainerInspect, ContainerState as ApiState, ContainerSummary,
        EndpointIpamConfig, EndpointSettings, HostConfig, LogConfig, NetworkSettings, Port,
        PortBinding, PortMap, RestartPolicy, SummaryHostConfig, SummaryNetworkSettings,
    },
    Json, D, Q,
};
use crate::{
    daemon::ContainerExtras,
    error::NetdError,
    model::{fmt_mac, mode_name, Container, ContainerState, NetMode, Network, Proto},
};

/// Docker's human duration (go-units HumanDuration), as in "Up 3 minutes": minutes
/// truncate, hours round to the nearest, days and longer count whole rounded hours.
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// Docker's `Status` column: "Up 3 minutes", "Exited (0) 2 seconds ago", "Created".
pub fn status_of(c: &Container, now: u64) -> String {
    match c.state {
        ContainerState::Running => {
            format!(
                "Up {}",
                human_duration(now.saturating_sub(c.started.unwrap_or(c.created)))
            )
        }
        ContainerState::Exited => match c.finished {
            Some(t) => format!(
                "Exited ({}) {} ago",
                c.exit_code.unwrap_or(0),
                human_duration(now.saturating_sub(t))
            ),
            None => format!("Exited ({})", c.exit_code.unwrap_or(0)),
        },
        ContainerState::Created => "Created".into(),
    }
}

/// Docker's HostConfig.NetworkMode: the network it was created on, by name, whatever
/// was connected or disconnected since (a record older than that field: its first
/// network).
fn network_mode(c: &Container, nets: &[Network], all: &[Arc<Container>]) -> String {
    match &c.mode {
        NetMode::Bridge if c.config.network_mode.is_some() => {
            c.config.network_mode.clone().unwrap_or_default()
        }
        NetMode::Bridge => c
            .attachments
            .first()
            .and_then(|a| nets.iter().find(|n| n.id == a.network))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| "bridge".into()),
        m => mode_name(m, all),
    }
}

fn endpoints(c: &Container, nets: &[Network]) -> BTreeMap<String, EndpointSettings> {
    let user_links: Vec<String> = c.links.iter().map(|l| l.alias.clone()).collect();
    c.attachments
        .iter()
        .filter_map(|a| {
            let n = nets.iter().find(|n| n.id == a.network)?;
            let mut aliases = a.aliases.clone();
            // Docker adds the short id on user-defined networks (not on the default one),
            // once.
            let short = &c.id[..12];
            if !n.builtin && !aliases.iter().any(|x| x == short) {
                aliases.push(short.to_string());
            }
            let dns_names = crate::dns::records::has_embedded_dns(n).then(|| {
                let mut v = vec![c.name.clone()];
                v.extend(aliases.iter().filter(|x| **x != c.name).cloned());
                if let Some(h) = c.hostname.as_ref().filter(|h| !v.contains(h)) {
                    v.push(h.clone());
                }
                v
            });
            Some((
                n.name.clone(),
                EndpointSettings {
                    ipam_config: (a.requested_ip.is_some()
                        || a.requested_ip6.is_some()
                        || !a.link_local_ips.is_empty())
                    .then(|| EndpointIpamConfig {
                        ipv4_address: a.requested_ip.map(|ip| ip.to_string()),
                        ipv6_address: a.requested_ip6.map(|ip| ip.to_string()),
                        link_local_ips: (!a.link_local_ips.is_empty())
                            .then(|| a.link_local_ips.iter().map(|ip| ip.to_string()).collect()),
                    }),
                    links: (!user_links.is_empty()).then(|| user_links.clone()),
                    dns_names,
                    // Docker shows null, not [], for an endpoint without aliases.
                    aliases: (!aliases.is_empty()).then_some(aliases),
                    network_id: n.id.clone(),
                    endpoint_id: endpoint_id(&c.id, &n.id),
                    gateway: a
                        .ipv4()
                        .and_then(|ip| n.gateway_for(ip))
                        .map(|g| g.to_string())
                        .unwrap_or_default(),
                    ip_address: a.ipv4().map(|ip| ip.to_string()).unwrap_or_default(),
                    ip_prefix_len: n.pool_of(a.ip).map_or(0, |p| p.subnet.prefix()),
                    ipv6_gateway: a
                        .ip6
                        .and(n.gateway6())
                        .map(|g| g.to_string())
                        .unwrap_or_default(),
                    global_ipv6_address: a.ip6.map(|ip| ip.to_string()).unwrap_or_default(),
                    global_ipv6_prefix_len: a.ip6.and(n.subnet6()).map(|s| s.prefix()).unwrap_or(0),
                    mac_address: fmt_mac(&a.mac),
                    driver_opts: (!a.driver_opts.is_empty()).then(|| a.driver_opts.clone()),
                    gw_priority: a.gw_priority,
                },
            ))
        })
        .collect()
}

/// Every port the container serves, as Docker's `PORT/PROTO` keys: the published ones
/// and the `--expose`d ones.
fn container_ports(c: &Container) -> Vec<(u16, Proto)> {
    let mut out: Vec<(u16, Proto)> = c
        .ports
        .iter()
        .map(|p| (p.container_port, p.proto))
        .chain(c.exposed.iter().copied())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `NetworkSettings.Ports` (`requested` false: every port, the unpublished ones null)
/// or `HostConfig.PortBindings` (true: what was asked; a host address only where one
/// was given, as Docker records the request).
fn port_map(c: &Container, requested: bool) -> PortMap {
    let mut m = PortMap::new();
    if !requested {
        for (port, proto) in container_ports(c) {
            m.insert(format!("{port}/{proto}"), None);
        }
    }
    for (i, p) in c.ports.iter().enumerate() {
        // One request without a host address made the 0.0.0.0 and :: pair (Docker's
        // "both families"): the request is one binding with HostIp "".
        let second_half = i > 0 && {
            let prev = &c.ports[i - 1];
            prev.host_ip.is_ipv4()
                && prev.host_ip.is_unspecified()
                && p.host_ip.is_ipv6()
                && p.host_ip.is_unspecified()
                && (prev.host_port, prev.container_port, prev.proto)
                    == (p.host_port, p.container_port, p.proto)
        };
        if requested && second_half {
            continue;
        }
        let host_ip = if requested && p.host_ip.is_unspecified() {
            String::new()
        } else {
            p.host_ip.to_string()
        };
        m.entry(format!("{}/{}", p.container_port, p.proto))
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip,
                host_port: p.host_port.to_string(),
            });
    }
    m
}

fn netns_path(c: &Container) -> String {
    match &c.netns {
        Some(n) => crate::netns::resolve(n).display().to_string(),
        // --network host: the daemon's own namespace.
        None => format!("/proc/{}/ns/net", std::process::id()),
    }
}

pub fn summary(
    c: &Container,
    nets: &[Network],
    all: &[Arc<Container>],
    now: u64,
) -> ContainerSummary {
    ContainerSummary {
        id: c.id.clone(),
        names: vec![format!("/{}", c.name)],
        image: "netd".into(),
        image_id: String::new(),
        command: c.cmd.join(" "),
        created: c.created,
        ports: c
            .ports
            .iter()
            .map(|p| Port {
                ip: Some(p.host_ip.to_string()),
                private_port: p.container_port,
                public_port: Some(p.host_port),
                proto: p.proto.to_string(),
            })
            .chain(
                c.exposed
                    .iter()
                    .filter(|(port, proto)| {
                        !c.ports
                            .iter()
                            .any(|p| p.container_port == *port && p.proto == *proto)
                    })
                    .map(|(port, proto)| Port {
                        private_port: *port,
                        proto: proto.to_string(),
                        ..Default::default()
                    }),
            )
            .collect(),
        labels: c.labels.clone(),
        state: c.state.to_string(),
        status: status_of(c, now),
        host_config: SummaryHostConfig {
            network_mode: network_mode(c, nets, all),
        },
        // The list leaves out what only inspect shows (the port map): a container with
        // 10,000 ports would otherwise cost megabytes per `ps`.
        network_settings: SummaryNetworkSettings {
            networks: endpoints(c, nets),
        },
        mounts: Vec::new(),
        netns: netns_path(c),
        host_veths: c.attachments.iter().map(|a| a.veth.clone()).collect(),
    }
}

/// The path of the container's `/etc/FILE` as its processes see it: netd's
/// /etc/netns file for its own namespaces (a `container:` joiner's is its owner's), the
/// host's for --network host, none for a runtime's namespace.
fn etc_path(c: &Container, all: &[Arc<Container>], file: &str) -> String {
    let owner = match &c.mode {
        NetMode::Container(id) => all.iter().find(|o| &o.id == id).map_or(c, |o| &**o),
        _ => c,
    };
    match (&owner.mode, crate::dns::files::dir_of(owner)) {
        (NetMode::Host, _) => format!("/etc/{file}"),
        (_, Some(dir)) => dir.join(file).display().to_string(),
        _ => String::new(),
    }
}

pub fn inspect_of(
    c: &Container,
    nets: &[Network],
    all: &[Arc<Container>],
    x: ContainerExtras,
) -> ContainerInspect {
    let networks = endpoints(c, nets);
    // Docker's legacy top-level fields describe the default `bridge` network's endpoint.
    let default = nets
        .iter()
        .find(|n| n.builtin && n.name == "bridge")
        .and_then(|n| networks.get(&n.name))
        .cloned()
        .unwrap_or_default();
    let time = |t: Option<u64>| {
        t.map(rfc3339)
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
    };
    ContainerInspect {
        id: c.id.clone(),
        created: rfc3339(c.created),
        path: c.cmd.first().cloned().unwrap_or_default(),
        args: c.cmd.iter().skip(1).cloned().collect(),
        state: ApiState {
            status: c.state.to_string(),
            running: c.state == ContainerState::Running,
            pid: c.pid.unwrap_or(0),
            exit_code: c.exit_code.unwrap_or(0),
            started_at: time(c.started),
            finished_at: time(c.finished),
            ..Default::default()
        },
        image: "netd".into(),
        resolv_conf_path: etc_path(c, all, "resolv.conf"),
        hosts_path: etc_path(c, all, "hosts"),
        log_path: x.log_path.display().to_string(),
        name: format!("/{}", c.name),
        restart_count: 0,
        platform: "linux".into(),
        exec_ids: (!x.exec_ids.is_empty()).then_some(x.exec_ids),
        mounts: Vec::new(),
        host_config: host_config_of(c, nets, all),
        config: config_of(c, all),
        network_settings: NetworkSettings {
            sandbox_id: c.id.clone(),
            sandbox_key: netns_path(c),
            ports: port_map(c, false),
            endpoint_id: default.endpoint_id,
            gateway: default.gateway,
            ip_address: default.ip_address,
            ip_prefix_len: default.ip_prefix_len,
            ipv6_gateway: default.ipv6_gateway,
            global_ipv6_address: default.global_ipv6_address,
            global_ipv6_prefix_len: default.global_ipv6_prefix_len,
            mac_address: default.mac_address,
            networks,
            ..Default::default()
        },
        netns: netns_path(c),
        host_veths: c.attachments.iter().map(|a| a.veth.clone()).collect(),
    }
}

/// HostConfig as Docker shows it: the network mode and port bindings as asked, no
/// restart policy, the log, DNS and links.
fn host_config_of(c: &Container, nets: &[Network], all: &[Arc<Container>]) -> HostConfig {
    HostConfig {
        network_mode: network_mode(c, nets, all),
        port_bindings: port_map(c, true),
        restart_policy: RestartPolicy {
            name: "no".into(),
            maximum_retry_count: 0,
        },
        log_config: LogConfig {
            kind: "json-file".into(),
            config: BTreeMap::new(),
        },
        auto_remove: c.auto_remove,
        sysctls: (!c.config.sysctls.is_empty()).then(|| c.config.sysctls.clone()),
        dns: c.dns.servers.iter().map(|s| s.to_string()).collect(),
        dns_search: c.dns.search.clone(),
        dns_options: c.dns.options.clone(),
        links: (!c.links.is_empty()).then(|| {
            c.links
                .iter()
                .map(|l| {
                    let target = all
                        .iter()
                        .find(|x| x.id == l.target)
                        .map(|x| x.name.as_str())
                        .unwrap_or(&l.target);
                    format!("/{target}:/{}/{}", c.name, l.alias)
                })
                .collect()
        }),
    }
}

/// Config as Docker shows it: what the process was given.
fn config_of(c: &Container, all: &[Arc<Container>]) -> ContainerConfig {
    ContainerConfig {
        hostname: c.hostname.clone().unwrap_or_else(|| c.id[..12].to_string()),
        exposed_ports: container_ports(c)
            .into_iter()
            .map(|(port, proto)| (format!("{port}/{proto}"), serde_json::json!({})))
            .collect(),
        cmd: c.cmd.clone(),
        image: "netd".into(),
        labels: c.labels.clone(),
        tty: c.config.tty,
        open_stdin: c.config.open_stdin,
        stdin_once: c.config.stdin_once(),
        attach_stdin: c.config.stdin_once(),
        attach_stdout: c.config.attached,
        attach_stderr: c.config.attached,
        env: crate::dns::links::env(c, all)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        ..Default::default()
    }
}

pub async fn list(State(d): D, Query(q): Q) -> Result<Json<Vec<ContainerSummary>>, NetdError> {
    let q = select::ListQuery::parse(&q)?;
    let (cs, nets) = d.containers().await;
    let now = now();
    let out = select::containers(&q, &cs, &nets)?
        .into_iter()
        .map(|c| summary(c, &nets, &cs, now))
        .collect();
    Ok(Json(out))
}

pub async fn inspect(
    State(d): D,
    Path(id): Path<String>,
) -> Result<Json<ContainerInspect>, NetdError> {
    let (c, nets, all) = d.container(&id).await?;
    let x = d.inspect_extras(&c.id).await;
    Ok(Json(inspect_of(&c, &nets, &all, x)))
}

pub async fn remove(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<StatusCode, NetdError> {
    d.remove(&id, query_flag(q.get("force"))).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn start(State(d): D, Path(id): Path<String>) -> Result<StatusCode, NetdError> {
    d.start_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn stop(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<StatusCode, NetdError> {
    let t = stop_timeout(&q)?;
    d.stop_container(&id, std::time::Duration::from_secs(t))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Docker's `t` (seconds before SIGKILL), 10 without it.
fn stop_timeout(q: &std::collections::HashMap<String, String>) -> Result<u64, NetdError> {
    match q.get("t") {
        None => Ok(10),
        Some(t) => t
            .parse()
            .map_err(|_| NetdError::InvalidArgument(format!("invalid timeout {t:?}: seconds"))),
    }
}

/// `POST /containers/{id}/restart`: stop (as `stop`, if running), then start.
pub async fn restart(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<StatusCode, NetdError> {
    let t = stop_timeout(&q)?;
    d.restart_container(&id, std::time::Duration::from_secs(t))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn logs(State(d): D, Path(id): Path<String>) -> Result<String, NetdError> {
    let (c, _, _) = d.container(&id).await?;
    Ok(std::fs::read_to_string(d.log_path(&c.id)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_as_docker_prints_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(5399), "About an hour");
        assert_eq!(human_duration(10 * 3600), "10 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        // Hours round to the nearest, as go-units does: 1h30m is "2 hours".
        assert_eq!(human_duration(3600 + 1799), "About an hour");
        assert_eq!(human_duration(3600 + 1800), "2 hours");
        assert_eq!(human_duration(47 * 3600 + 1799), "47 hours");
        assert_eq!(human_duration(47 * 3600 + 1800), "2 days");
        assert_eq!(human_duration(14 * 86_400), "2 weeks");
        assert_eq!(human_duration(60 * 86_400), "2 months");
        assert_eq!(human_duration(2 * 365 * 86_400), "2 years");
    }
}
