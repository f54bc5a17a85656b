//! `netd daemon`'s flags.
use std::path::PathBuf;

use ipnetwork::Ipv6Network;

#[derive(Clone, Debug, clap::Args)]
pub struct DaemonArgs {
    /// Work inside this named network namespace (/run/netns/NAME), entered before any
    /// thread starts.
    #[arg(long)]
    pub netns: Option<String>,
    /// The uplink interface (default: the interface of the default route).
    #[arg(long)]
    pub uplink: Option<String>,
    #[arg(long, default_value = "/var/lib/netd")]
    pub state_dir: PathBuf,
    /// Where the API socket and container logs live.
    #[arg(long, default_value = "/run/netd")]
    pub run_dir: PathBuf,
    /// bpffs directory for this instance's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/netd")]
    pub bpf_dir: PathBuf,
    /// Name of the default network's bridge.
    #[arg(long, default_value = "netd0")]
    pub bridge_name: String,
    /// Prefix of container namespace names under /run/netns.
    #[arg(long, default_value = "netd-")]
    pub netns_prefix: String,
    /// Prefix of the bridges of networks created without a bridge name (at most 5).
    #[arg(long, default_value = "ndbr-")]
    pub bridge_prefix: String,
    /// Inter-container communication on the default `bridge` network (--icc=false
    /// isolates its containers from each other, as Docker's daemon option does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub icc: bool,
    /// Dual stack on the default `bridge` network (dockerd's --ipv6): its containers get
    /// an IPv6 address too, from --fixed-cidr-v6 or else a /64 of this host's ULA pool.
    #[arg(long)]
    pub ipv6: bool,
    /// The default `bridge` network's IPv6 subnet (dockerd's --fixed-cidr-v6); needs
    /// --ipv6.
    #[arg(long, value_name = "CIDR", value_parser = parse_fixed_cidr_v6)]
    pub fixed_cidr_v6: Option<Ipv6Network>,
    /// Prefix of host-side veth names (at most 5 characters).
    #[arg(long, default_value = "ndv")]
    pub veth_prefix: String,
    /// Hand every packet back to the stack instead of redirecting (for comparison).
    #[arg(long)]
    pub no_fast_path: bool,
    /// Masquerade keeps a container's own source port when no flow and no host socket
    /// uses the resulting tuple (as the kernel's MASQUERADE does); otherwise, and for
    /// ICMP echo ids and ports below 1024, it picks from this range, MIN-MAX. netd
    /// reserves the range in the host namespace (ip_local_reserved_ports), so host
    /// sockets never take these ports.
    #[arg(long, default_value = "61000-65535", value_parser = parse_port_range)]
    pub snat_port_range: (u16, u16),
    /// Who may reach published ports from outside: source networks, comma-separated
    /// CIDRs of both families (`10.0.0.0/8,2001:db8::/32`); others are dropped in eBPF
    /// before a flow is tracked (counted as drop_source_denied). A network's own
    /// `-o netd.published_sources=...` replaces it for that network. The host itself
    /// and containers are not restricted. Default: anyone.
    #[arg(long, value_name = "CIDR,...", value_parser = parse_published_sources)]
    pub published_sources: Option<String>,
    /// Seconds between conntrack garbage collections.
    #[arg(long, default_value_t = 10)]
    pub ct_gc_interval: u64,
    /// Idle timeout of one-way UDP flows, seconds.
    #[arg(long, default_value_t = 30)]
    pub ct_udp_timeout: u64,
    /// Where the uplink guard runs: native (XDP in the driver, before any skb exists),
    /// tc (in uplink_ingress), off, or auto: native on a physical uplink, tc on a
    /// virtual one (a veth in native XDP mode gives up GRO batching: 4x less
    /// throughput measured; generic XDP is not offered, it broke the TC program behind
    /// it on this kernel).
    #[arg(long, default_value = "auto", value_parser = ["auto", "native", "tc", "off"])]
    pub xdp_mode: String,
    /// cgroup v2 directory for the socket programs that give host processes access to
    /// published ports on 127.0.0.1 and host addresses (they act only on sockets of this
    /// namespace). Default: the root of the cgroup2 mount; `none` disables them.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Conntrack capacity in flows (each takes two entries, one per direction). Default:
    /// the kernel's own default nf_conntrack_max for this machine's memory.
    #[arg(long, value_parser = parse_ct_max)]
    pub ct_max: Option<u32>,
    /// Group that may use the API socket (as dockerd's --group): the socket is created
    /// 0660 root:GROUP and the run directory 0750 root:GROUP. Default: root only.
    #[arg(short = 'G', long)]
    pub group: Option<String>,
    /// Log every packet the datapath decides on (program, interface, addresses
    /// after any rewrite, verdict and drop reason). Without it the datapath writes no
    /// trace unless `netd trace` is reading.
    #[arg(long)]
    pub debug_datapath: bool,
    /// The cluster store of overlay networks, etcd://HOST:PORT[,HOST:PORT...] (etcds://
    /// or https:// for TLS, see --cluster-store-opt): this node registers there and sees
    /// the others (Docker's pre-Swarm --cluster-store).
    #[arg(long, value_name = "URL", value_parser = parse_cluster_store)]
    pub cluster_store: Option<String>,
    /// This node's underlay address for the other nodes (IP or interface; default: the
    /// uplink's address). Only with --cluster-store.
    #[arg(
        long,
        value_name = "IP|IFACE",
        value_parser = parse_cluster_advertise
    )]
    pub cluster_advertise: Option<String>,
    /// Also serve Docker's network plugin protocol on /run/docker/plugins/NAME.sock
    /// (default NAME: netd), so that `docker network create -d NAME` puts Docker's
    /// containers on netd's datapath.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "netd")]
    pub docker_plugin: Option<String>,
    /// TLS (and user) options of the cluster store, Docker's KEY=VALUE: kv.cacertfile
    /// (the CA that signed etcd's certificate), kv.certfile and kv.keyfile (this node's
    /// client certificate and key, PEM), kv.username and kv.password; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_store_opt)]
    pub cluster_store_opt: Vec<String>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (dockerd's flag; Docker's
    /// port is 9323). Off without it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The least severe messages logged: debug, info, warn, error or fatal (dockerd's
    /// levels). SIGHUP applies a new value from the config file.
    #[arg(short = 'l', long, default_value = "info", value_parser = crate::logging::parse_level)]
    pub log_level: log::LevelFilter,
    /// Settings as JSON keys named like these flags, dockerd's daemon.json style
    /// (`{"icc": false, "metrics-addr": "127.0.0.1:9323"}`); default
    /// /etc/netd/daemon.json if it exists. A setting may not be both a flag and a key.
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Check the flags and the config file, print "configuration OK" and exit (as
    /// dockerd --validate).
    #[arg(long)]
    pub validate: bool,
    /// The flags given on the command line (by id, with their values as typed), for
    /// the config file's conflicts.
    #[arg(skip)]
    pub from_command_line: std::collections::BTreeMap<String, Vec<String>>,
    /// Instead of serving: remove everything this instance made (the processes netd
    /// started and its namespaces, veths, bridges, VXLAN device, programs, pinned maps
    /// and its state) and exit. A stop (SIGTERM) keeps all of it, so the datapath
    /// forwards while no agent runs; this removes it. Refused while the daemon runs.
    #[arg(long)]
    pub cleanup: bool,
    /// Take over from the netd daemon serving this instance's socket: hold its program
    /// links, stop it (SIGTERM), pin again what it removed, then start. For upgrades
    /// from netd 0.1.0, which detached its programs at SIGTERM; later releases keep
    /// them, so a plain stop and start loses nothing.
    #[arg(long, conflicts_with = "cleanup")]
    pub replace: bool,
}

impl DaemonArgs {
    /// Checks what clap cannot say in one line: flags that need each other.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.cluster_advertise.is_some() && self.cluster_store.is_none() {
            anyhow::bail!("--cluster-advertise needs --cluster-store");
        }
        if !self.cluster_store_opt.is_empty() && self.cluster_store.is_none() {
            anyhow::bail!("--cluster-store-opt needs --cluster-store");
        }
        if let (Some(cidr), false) = (self.fixed_cidr_v6, self.ipv6) {
            // dockerd ignores it silently; a subnet asked for and not given is a surprise.
            anyhow::bail!("--fixed-cidr-v6 {cidr} needs --ipv6: netd does not ignore it");
        }
        Ok(())
    }

    /// Everything `--validate` checks without touching the system: the flags that need
    /// each other, and the cluster store's options and certificate files.
    pub fn check_all(&self) -> anyhow::Result<()> {
        self.check()?;
        if self.veth_prefix.len() > 5 || self.bridge_prefix.len() > 5 {
            anyhow::bail!("--veth-prefix and --bridge-prefix must be at most 5 characters");
        }
        let opts = crate::cluster::StoreOpts::parse(&self.cluster_store_opt)?;
        if let Some(url) = &self.cluster_store {
            let eps = crate::cluster::parse_store(url, opts.wants_tls())?;
            let tls = eps.iter().any(|e| e.starts_with("https://"));
            opts.apply(tls, etcd_client::ConnectOptions::new())?;
        }
        Ok(())
    }

    /// Conntrack map entries: two per flow.
    pub fn ct_entries(&self) -> u32 {
        self.ct_max
            .unwrap_or_else(kernel_default_ct_max)
            .saturating_mul(2)
    }
}

/// The kernel's default nf_conntrack_max for this memory size (nf_conntrack_core.c:
/// a hash bucket per 16 KiB of memory, 262,144 above 4 GiB and 65,536 above 1 GiB on
/// 64-bit, one entry a bucket), computed rather than read so that netd does not depend
/// on nf_conntrack being present.
pub fn kernel_default_ct_max() -> u32 {
    let total = nix::sys::sysinfo::sysinfo()
        .map(|s| s.ram_total())
        .unwrap_or(0);
    const GIB: u64 = 1 << 30;
    if total > 4 * GIB {
        262_144
    } else if total > GIB {
        65_536
    } else {
        ((total / 16_384 / 8) as u32).max(1024)
    }
}

fn parse_ct_max(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of flows"))?;
    if !(1024..=16_777_216).contains(&n) {
        return Err(format!("{n} flows is outside 1024..=16777216"));
    }
    Ok(n)
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not MIN-MAX"))?;
    let a: u16 = a.parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || b < a {
        return Err(format!(
            "{s:?} is not a port range MIN-MAX with 1 <= MIN <= MAX"
        ));
    }
    Ok((a, b))
}

// Checked by clap, so a bad flag stops the daemon before it touches anything.
fn parse_fixed_cidr_v6(s: &str) -> Result<Ipv6Network, String> {
    crate::ipam::parse_fixed_cidr_v6(s).map_err(|e| e.to_string())
}

fn parse_cluster_store(s: &str) -> Result<String, String> {
    crate::cluster::parse_store(s, false)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_store_opt(s: &str) -> Result<String, String> {
    crate::cluster::StoreOpts::check_one(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_published_sources(s: &str) -> Result<String, String> {
    crate::model::parse_sources("--published-sources", s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// The daemon's published-port source restriction (empty: anyone).
impl DaemonArgs {
    pub fn published_sources(&self) -> Vec<ipnetwork::IpNetwork> {
        self.published_sources
            .as_deref()
            .and_then(|s| crate::model::parse_sources("--published-sources", s).ok())
            .unwrap_or_default()
    }
}

fn parse_cluster_advertise(s: &str) -> Result<String, String> {
    crate::cluster::parse_advertise(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// The first cgroup2 mount point, if any.
pub fn cgroup2_root() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_max_is_bounded_and_defaults_to_the_kernels() {
        assert!(parse_ct_max("100").is_err());
        assert!(parse_ct_max("lots").is_err());
        assert_eq!(parse_ct_max("300000"), Ok(300_000));
        assert!(kernel_default_ct_max() >= 1024);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("61000-65535"), Ok((61000, 65535)));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10-9").is_err());
        assert!(parse_port_range("10").is_err());
    }
}
