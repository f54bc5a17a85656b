//! `GET /info`: what `docker info`, docker-py, Testcontainers and Portainer read, with
//! netd's honest answers (no images, no registry, no resource limits, netd as the
//! process starter).
use axum::extract::State;

use super::{
    now, rfc3339,
    types::{AddressPool, Commit, Info, RegistryConfig, Runtime, SwarmInfo},
    Json, D,
};
use crate::model::{default_pools, ContainerState};

pub(super) fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The architecture in Go's words (`amd64`), as Docker's /version reports it (its
/// /info reports the kernel's, `x86_64`).
pub(super) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `uname -m`.
fn machine() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.into())
}

/// The cgroup version of the host: 2 when /sys/fs/cgroup is the unified hierarchy.
fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

/// A field of /etc/os-release (PRETTY_NAME, VERSION_ID), unquoted.
fn os_release(key: &str) -> Option<String> {
    let s = std::fs::read_to_string("/etc/os-release").ok()?;
    let prefix = format!("{key}=");
    s.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim_matches('"').to_string())
}

/// A sysctl of the daemon's namespace (the API runs in it) that is "1".
fn sysctl_on(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1")
}

/// The proxy variable as Docker reads it (upper case first, then lower case).
fn proxy_env(name: &str) -> String {
    std::env::var(name.to_ascii_uppercase())
        .or_else(|_| std::env::var(name))
        .unwrap_or_default()
}

/// Docker's default address pools as netd uses them, and with IPv6 the ULA /48 the
/// automatic /64s come from.
fn address_pools(instance_id: &str) -> Vec<AddressPool> {
    let mut pools: Vec<AddressPool> = default_pools()
        .into_iter()
        .map(|(base, size)| AddressPool {
            base: base.to_string(),
            size,
        })
        .collect();
    if let Ok(ula) = crate::ipam::ula_base(instance_id) {
        pools.push(AddressPool {
            base: ula.to_string(),
            size: 64,
        });
    }
    pools
}

/// The drivers netd has, by Docker's plugin kinds.
fn plugins() -> std::collections::BTreeMap<String, Vec<String>> {
    [
        ("Network", crate::model::driver_names()),
        ("Volume", vec![]),
        ("Log", vec!["json-file"]),
        ("Authorization", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect()
}

pub async fn info(State(d): D) -> Json<Info> {
    let (cs, _) = d.containers().await;
    let running = cs
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .count();
    let (ncpu, mem) = nix::sys::sysinfo::sysinfo()
        .map(|s| {
            (
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                s.ram_total(),
            )
        })
        .unwrap_or((1, 0));
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = d.instance_id().await;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "netd".into());
    Json(Info {
        default_address_pools: address_pools(&id),
        id,
        name: hostname,
        containers: cs.len(),
        containers_running: running,
        containers_paused: 0,
        containers_stopped: cs.len() - running,
        images: 0,
        driver: "none".into(),
        driver_status: Vec::new(),
        plugins: plugins(),
        ipv4_forwarding: sysctl_on("/proc/sys/net/ipv4/ip_forward"),
        bridge_nf_iptables: sysctl_on("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        bridge_nf_ip6tables: sysctl_on("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
        n_fd: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        system_time: rfc3339(now()),
        logging_driver: "json-file".into(),
        cgroup_driver: "none".into(),
        cgroup_version: cgroup_version().into(),
        n_events_listener: d.events_listeners(),
        kernel_version: kernel_version(),
        operating_system: os_release("PRETTY_NAME").unwrap_or_else(|| "Linux".into()),
        os_version: os_release("VERSION_ID").unwrap_or_default(),
        os_type: "linux".into(),
        architecture: machine(),
        index_server_address: String::new(),
        registry_config: RegistryConfig::default(),
        ncpu,
        mem_total: mem,
        docker_root_dir: d.state_dir().display().to_string(),
        http_proxy: proxy_env("http_proxy"),
        https_proxy: proxy_env("https_proxy"),
        no_proxy: proxy_env("no_proxy"),
        server_version: env!("CARGO_PKG_VERSION").into(),
        runtimes: [("netd".to_string(), Runtime { path: exe })].into(),
        default_runtime: "netd".into(),
        containerd_commit: Commit::default(),
        runc_commit: Commit::default(),
        init_commit: Commit::default(),
        swarm: SwarmInfo {
            local_node_state: "inactive".into(),
            ..Default::default()
        },
        live_restore_enabled: true,
        cluster_store: d.cluster_store().unwrap_or_default().into(),
        cluster_advertise: d.cluster_advertise().unwrap_or_default(),
        cluster_nodes: d.cluster_nodes().await,
        ..Default::default()
    })
}
