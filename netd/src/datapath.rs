//! The eBPF side of the agent: loads the object, pins its maps and program links under
//! the instance's bpf dir, and keeps the maps in step with the store.
//!
//! Maps are pinned by name, so a restarted agent opens the same maps (and keeps the
//! conntrack state). Program links are pinned too, so the datapath keeps forwarding while
//! the agent is down; a restarted agent swaps its freshly loaded program into the pinned
//! link (an atomic bpf_link_update) instead of detaching and re-attaching.
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, Context};
use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        Array, HashMap, MapData, PerCpuArray, PerCpuHashMap,
    },
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use netd_common::{
    ct_tcp, drop_reason, event, map_names, prog_names, Backend, Config, CtEntry, CtKey, Endpoint,
    PortCounters, PortKey, CONFIG_F_FAST_PATH, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::model::PortMapping;

/// Runs a program load up to three times. The verifier's verdict is deterministic, so a
/// program it rejects fails every attempt; what a retry absorbs is a transient failure
/// (seen once under many parallel loads on a 2-core machine).
fn with_retries<T, E: std::fmt::Display>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    for _ in 0..2 {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                log::warn!("program load failed, retrying: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    f()
}

/// bpffs's statfs magic.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd"));

pub struct Datapath {
    ebpf: Ebpf,
    links_dir: PathBuf,
    ports: HashMap<MapData, PortKey, Backend>,
    conntrack: HashMap<MapData, CtKey, CtEntry>,
    local: HashMap<MapData, u32, u32>,
    endpoints: HashMap<MapData, u32, Endpoint>,
    config: Array<MapData, Config>,
    /// Per-CPU counters of `drop_reason` and of `event`.
    drops: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    port_stats: PerCpuHashMap<MapData, PortKey, PortCounters>,
    subnets: LpmTrie<MapData, u32, u32>,
}

/// Idle timeouts of conntrack entries, by protocol and state.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    /// FIN seen in one direction.
    pub tcp_closing: Duration,
    /// FIN seen both ways, or RST.
    pub tcp_closed: Duration,
    /// UDP with traffic one way only.
    pub udp: Duration,
    /// UDP with replies (a "stream").
    pub udp_stream: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(86_400),
            tcp_closing: Duration::from_secs(120),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE, Linux 5.14+).
pub fn netns_cookie() -> anyhow::Result<u64> {
    use std::os::fd::AsRawFd;
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").context("socket for SO_NETNS_COOKIE")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("getsockopt(SO_NETNS_COOKIE)");
    }
    Ok(cookie)
}

/// The clock bpf_ktime_get_ns() reads.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The key of the other direction of the flow `(k, e)` belongs to.
pub fn peer_key(k: &CtKey, e: &CtEntry) -> CtKey {
    CtKey {
        saddr: e.daddr,
        daddr: e.saddr,
        sport: e.dport,
        dport: e.sport,
        proto: k.proto,
        _pad: [0; 3],
    }
}

/// The idle timeout of a flow whose two directions are `a` and `b`.
pub fn timeout_of(proto: u8, a: &CtEntry, b: Option<&CtEntry>, t: &Timeouts) -> Duration {
    let flags_b = b.map(|b| b.tcp_flags).unwrap_or(0);
    let replied = b.is_some_and(|b| b.packets > 0) && a.packets > 0;
    match proto {
        IPPROTO_TCP => {
            let flags = a.tcp_flags | flags_b;
            let fin_both = a.tcp_flags & ct_tcp::FIN != 0 && flags_b & ct_tcp::FIN != 0;
            if flags & ct_tcp::RST != 0 || fin_both {
                t.tcp_closed
            } else if flags & ct_tcp::FIN != 0 {
                t.tcp_closing
            } else if flags & ct_tcp::ESTABLISHED != 0 && replied {
                t.tcp_established
            } else {
                t.tcp_syn
            }
        }
        IPPROTO_UDP if replied => t.udp_stream,
        IPPROTO_UDP => t.udp,
        _ => t.icmp,
    }
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there, and checks `dir` is on it.
pub fn ensure_bpffs(dir: &Path) -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs at /sys/fs/bpf")?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !is_bpffs(dir) {
        return Err(anyhow!(
            "{} is not on a bpf filesystem; mount one (mount -t bpf bpf DIR) or pick --bpf-dir under /sys/fs/bpf",
            dir.display()
        ));
    }
    Ok(())
}

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

fn proto_port_key(m: &PortMapping) -> PortKey {
    PortKey {
        host_ip: u32::from(m.host_ip).to_be(),
        host_port: m.host_port.to_be(),
        proto: m.proto.ipproto(),
        _pad: 0,
    }
}

impl Datapath {
    pub fn load(bpf_dir: &Path) -> anyhow::Result<Datapath> {
        ensure_bpffs(bpf_dir)?;
        let links_dir = bpf_dir.join("links");
        fs::create_dir_all(&links_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(bpf_dir)
            .load(OBJECT)
            .context("loading the eBPF object (is this kernel new enough, are you root?)")?;
        for name in [prog_names::UPLINK_INGRESS, prog_names::ENDPOINT_EGRESS] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            with_retries(|| prog.load()).with_context(|| format!("verifying {name}"))?;
        }
        let guard: &mut Xdp = ebpf
            .program_mut(prog_names::UPLINK_GUARD)
            .ok_or_else(|| anyhow!("program uplink_guard missing from the object"))?
            .try_into()?;
        with_retries(|| guard.load()).context("verifying uplink_guard")?;
        for name in [
            prog_names::SOCK_CONNECT4,
            prog_names::SOCK_SENDMSG4,
            prog_names::SOCK_RECVMSG4,
        ] {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            with_retries(|| prog.load()).with_context(|| format!("verifying {name}"))?;
        }
        let take = |e: &mut Ebpf, n: &str| e.take_map(n).ok_or_else(|| anyhow!("map {n} missing"));
        let ports = HashMap::try_from(take(&mut ebpf, map_names::PORTS)?)?;
        let conntrack = HashMap::try_from(take(&mut ebpf, map_names::CONNTRACK)?)?;
        let local = HashMap::try_from(take(&mut ebpf, map_names::LOCAL_ADDRS)?)?;
        let endpoints = HashMap::try_from(take(&mut ebpf, map_names::ENDPOINTS)?)?;
        let config = Array::try_from(take(&mut ebpf, map_names::CONFIG)?)?;
        let drops = PerCpuArray::try_from(take(&mut ebpf, map_names::DROPS)?)?;
        let events = PerCpuArray::try_from(take(&mut ebpf, map_names::EVENTS)?)?;
        let port_stats = PerCpuHashMap::try_from(take(&mut ebpf, map_names::PORT_STATS)?)?;
        let subnets = LpmTrie::try_from(take(&mut ebpf, map_names::SUBNETS)?)?;
        Ok(Datapath {
            ebpf,
            links_dir,
            ports,
            conntrack,
            local,
            endpoints,
            config,
            drops,
            events,
            port_stats,
            subnets,
        })
    }

    pub fn set_config(
        &mut self,
        uplink_ifindex: u32,
        uplink_ip: Ipv4Addr,
        fast_path: bool,
        snat_ports: (u16, u16),
    ) -> anyhow::Result<()> {
        self.set_config_flags(
            uplink_ifindex,
            uplink_ip,
            if fast_path { CONFIG_F_FAST_PATH } else { 0 },
            snat_ports,
        )
    }

    /// `set_config` with the `CONFIG_F_*` bits given directly.
    pub fn set_config_flags(
        &mut self,
        uplink_ifindex: u32,
        uplink_ip: Ipv4Addr,
        flags: u32,
        snat_ports: (u16, u16),
    ) -> anyhow::Result<()> {
        let cfg = Config {
            uplink_ifindex,
            uplink_ip: u32::from(uplink_ip).to_be(),
            flags,
            snat_port_min: snat_ports.0,
            snat_port_max: snat_ports.1,
            netns_cookie: netns_cookie().unwrap_or(0),
        };
        self.config.set(0, cfg, 0)?;
        Ok(())
    }

    /// Attaches `prog` at TC ingress of `ifname`, reusing the pinned link `pin` if a
    /// previous agent left one (so there is no moment without a program).
    fn attach(&mut self, prog: &str, ifname: &str, pin: &str) -> anyhow::Result<()> {
        let pin_path = self.links_dir.join(pin);
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing"))?
            .try_into()?;
        let adopted = match PinnedLink::from_pin(&pin_path) {
            Ok(pinned) => {
                let fd_link = pinned.unpin()?;
                match SchedClassifierLink::try_from(fd_link) {
                    Ok(link) => prog.attach_to_link(link).ok(),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let id = match adopted {
            Some(id) => id,
            None => {
                let _ = fs::remove_file(&pin_path);
                prog.attach(ifname, TcAttachType::Ingress)
                    .with_context(|| format!("attaching to {ifname}"))?
            }
        };
        let link = prog.take_link(id)?;
        let fd_link = FdLink::try_from(link)
            .map_err(|e| anyhow!("link of {ifname} is not an fd link: {e}"))?;
        fd_link
            .pin(&pin_path)
            .with_context(|| format!("pinning {}", pin_path.display()))?;
        Ok(())
    }

    fn detach(&self, pin: &str) -> anyhow::Result<()> {
        let pin_path = self.links_dir.join(pin);
        match PinnedLink::from_pin(&pin_path) {
            // Unpinning drops the last reference: the kernel detaches the program.
            Ok(p) => drop(p.unpin()?),
            Err(_) => {
                let _ = fs::remove_file(&pin_path);
            }
        }
        Ok(())
    }

    /// Attaches the socket programs to the cgroup (v2) directory `cgroup`. A link pinned
    /// by an earlier agent is replaced after the new one is in place (several programs
    /// may sit on one cgroup), so connect() is never left untranslated.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        let dir = fs::File::open(cgroup)
            .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        for name in [
            prog_names::SOCK_CONNECT4,
            prog_names::SOCK_SENDMSG4,
            prog_names::SOCK_RECVMSG4,
        ] {
            let pin_path = self.links_dir.join(format!("cgroup-{name}"));
            let old = PinnedLink::from_pin(&pin_path).ok();
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            // Through bpf_link, cgroup programs always stack (the kernel rejects an
            // explicit ALLOW_MULTI flag there), so the old and new links can coexist.
            let id = prog
                .attach(&dir, CgroupAttachMode::default())
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
            let link = FdLink::try_from(prog.take_link(id)?)
                .map_err(|e| anyhow!("link of {name} is not an fd link: {e}"))?;
            if let Some(old) = old {
                drop(old.unpin()?);
            }
            link.pin(&pin_path)
                .with_context(|| format!("pinning {}", pin_path.display()))?;
        }
        Ok(())
    }

    /// TC on the uplink, and the XDP guard in `xdp` mode (None: no guard).
    pub fn attach_uplink(&mut self, ifname: &str, xdp: Option<XdpMode>) -> anyhow::Result<()> {
        self.attach(prog_names::UPLINK_INGRESS, ifname, "uplink")?;
        match xdp {
            Some(mode) => self.attach_guard(ifname, mode),
            None => self.detach("uplink-xdp"),
        }
    }

    /// XDP on the uplink; a pinned link from an earlier agent gets the new program
    /// swapped in (bpf_link_update), so the guard never lapses.
    fn attach_guard(&mut self, ifname: &str, mode: XdpMode) -> anyhow::Result<()> {
        let pin_path = self.links_dir.join("uplink-xdp");
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(prog_names::UPLINK_GUARD)
            .ok_or_else(|| anyhow!("program uplink_guard missing"))?
            .try_into()?;
        let adopted = match PinnedLink::from_pin(&pin_path) {
            Ok(pinned) => XdpLink::try_from(pinned.unpin()?)
                .ok()
                .and_then(|l| prog.attach_to_link(l).ok()),
            Err(_) => None,
        };
        let id = match adopted {
            Some(id) => id,
            None => {
                let _ = fs::remove_file(&pin_path);
                prog.attach(ifname, mode)
                    .with_context(|| format!("attaching uplink_guard (XDP) to {ifname}"))?
            }
        };
        let link = FdLink::try_from(prog.take_link(id)?)
            .map_err(|e| anyhow!("XDP link of {ifname} is not an fd link: {e}"))?;
        link.pin(&pin_path)
            .with_context(|| format!("pinning {}", pin_path.display()))?;
        Ok(())
    }

    /// Makes the subnet trie (what uplink_guard protects) hold exactly `subnets`.
    pub fn sync_subnets(
        &mut self,
        subnets: &[(ipnetwork::Ipv4Network, u32)],
    ) -> anyhow::Result<()> {
        let want: HashSet<(u32, u32)> = subnets
            .iter()
            .map(|(n, _)| (n.prefix() as u32, u32::from(n.network()).to_be()))
            .collect();
        let stale: Vec<LpmKey<u32>> = self
            .subnets
            .keys()
            .flatten()
            .filter(|k| !want.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            let _ = self.subnets.remove(&k);
        }
        for (n, id) in subnets {
            let key = LpmKey::new(n.prefix() as u32, u32::from(n.network()).to_be());
            self.subnets.insert(&key, id, 0)?;
        }
        Ok(())
    }

    pub fn attach_endpoint(&mut self, veth: &str) -> anyhow::Result<()> {
        self.attach(prog_names::ENDPOINT_EGRESS, veth, &format!("ep-{veth}"))
    }

    pub fn detach_endpoint(&self, veth: &str) -> anyhow::Result<()> {
        self.detach(&format!("ep-{veth}"))
    }

    /// Pinned endpoint links whose veth is not in `keep`: leftovers of removed containers.
    pub fn stale_endpoint_links(&self, keep: &HashSet<String>) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.links_dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("ep-")
                    .map(String::from)
            })
            .filter(|v| !keep.contains(v))
            .collect()
    }

    /// Detaches everything this agent attached (SIGTERM). Maps stay pinned, so the next
    /// agent keeps the conntrack table.
    pub fn detach_all(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.links_dir) {
            for e in rd.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    if let Err(err) = self.detach(name) {
                        errors.push(format!("{name}: {err:#}"));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("detaching: {}", errors.join("; ")))
        }
    }

    pub fn set_port(&mut self, m: &PortMapping, backend: Backend) -> anyhow::Result<()> {
        self.ports.insert(proto_port_key(m), backend, 0)?;
        Ok(())
    }

    /// Makes the port map hold exactly `want`.
    pub fn sync_ports(&mut self, want: &[(PortMapping, Backend)]) -> anyhow::Result<()> {
        let keys: HashSet<PortKey> = want.iter().map(|(m, _)| proto_port_key(m)).collect();
        let stale: Vec<PortKey> = self
            .ports
            .keys()
            .flatten()
            .filter(|k| !keys.contains(k))
            .collect();
        for k in stale {
            let _ = self.ports.remove(&k);
        }
        for (m, b) in want {
            self.set_port(m, *b)?;
        }
        Ok(())
    }

    pub fn remove_port(&mut self, m: &PortMapping) {
        let _ = self.ports.remove(&proto_port_key(m));
        let _ = self.port_stats.remove(&proto_port_key(m));
    }

    /// Packets and bytes through `m` so far (both directions, all CPUs).
    pub fn port_counters(&self, m: &PortMapping) -> PortCounters {
        let mut total = PortCounters::default();
        if let Ok(per_cpu) = self.port_stats.get(&proto_port_key(m), 0) {
            for c in per_cpu.iter() {
                total.packets += c.packets;
                total.bytes += c.bytes;
            }
        }
        total
    }

    pub fn port_keys(&self) -> Vec<PortKey> {
        self.ports.keys().flatten().collect()
    }

    pub fn set_endpoint(&mut self, ip: Ipv4Addr, ep: Endpoint) -> anyhow::Result<()> {
        self.endpoints.insert(u32::from(ip).to_be(), ep, 0)?;
        Ok(())
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) {
        let _ = self.endpoints.remove(&u32::from(ip).to_be());
    }

    pub fn sync_endpoints(&mut self, want: &[(Ipv4Addr, Endpoint)]) -> anyhow::Result<()> {
        let keys: HashSet<u32> = want.iter().map(|(ip, _)| u32::from(*ip).to_be()).collect();
        let stale: Vec<u32> = self
            .endpoints
            .keys()
            .flatten()
            .filter(|k| !keys.contains(k))
            .collect();
        for k in stale {
            let _ = self.endpoints.remove(&k);
        }
        for (ip, ep) in want {
            self.endpoints.insert(u32::from(*ip).to_be(), *ep, 0)?;
        }
        Ok(())
    }

    pub fn endpoint_ips(&self) -> Vec<Ipv4Addr> {
        self.endpoints
            .keys()
            .flatten()
            .map(|k| Ipv4Addr::from(u32::from_be(k)))
            .collect()
    }

    pub fn sync_local_addrs(&mut self, addrs: &[Ipv4Addr]) -> anyhow::Result<()> {
        let keys: HashSet<u32> = addrs.iter().map(|a| u32::from(*a).to_be()).collect();
        let stale: Vec<u32> = self
            .local
            .keys()
            .flatten()
            .filter(|k| !keys.contains(k))
            .collect();
        for k in stale {
            let _ = self.local.remove(&k);
        }
        for k in keys {
            self.local.insert(k, 1, 0)?;
        }
        Ok(())
    }

    /// Removes every flow (both directions) one of whose entries `pred` selects.
    pub fn flush_conntrack(&mut self, pred: impl Fn(&CtKey, &CtEntry) -> bool) -> usize {
        let mut doomed = HashSet::new();
        for (k, e) in self.conntrack.iter().flatten() {
            if pred(&k, &e) {
                doomed.insert(k);
                doomed.insert(peer_key(&k, &e));
            }
        }
        doomed
            .iter()
            .filter(|k| self.conntrack.remove(k).is_ok())
            .count()
    }

    /// Removes every flow that involves `ip` on either side or as a rewrite target, so a
    /// removed container leaves no flow state behind.
    pub fn flush_conntrack_of(&mut self, ip: Ipv4Addr) -> usize {
        let ip = u32::from(ip).to_be();
        self.flush_conntrack(|k, e| {
            k.saddr == ip || k.daddr == ip || e.saddr == ip || e.daddr == ip
        })
    }

    /// Removes flows idle for longer than their timeout; returns how many entries went.
    pub fn gc_conntrack(&mut self, now_ns: u64, t: &Timeouts) -> usize {
        let all: StdHashMap<CtKey, CtEntry> = self.conntrack.iter().flatten().collect();
        let mut doomed = Vec::new();
        for (k, e) in &all {
            let pk = peer_key(k, e);
            let peer = all.get(&pk);
            let last = peer.map_or(e.last_seen_ns, |p| p.last_seen_ns.max(e.last_seen_ns));
            let idle = Duration::from_nanos(now_ns.saturating_sub(last));
            if idle > timeout_of(k.proto, e, peer, t) {
                doomed.push(*k);
            }
        }
        doomed
            .iter()
            .filter(|k| self.conntrack.remove(k).is_ok())
            .count()
    }

    pub fn conntrack(&self) -> Vec<(CtKey, CtEntry)> {
        self.conntrack.iter().flatten().collect()
    }

    /// Runs program `prog` once over `packet` (an Ethernet frame) with BPF_PROG_TEST_RUN
    /// and returns its verdict and the frame as the program left it. Nothing is attached
    /// anywhere: this is how the packet fixtures exercise the datapath.
    pub fn test_run(&self, prog: &str, packet: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        self.test_run_on(prog, packet, None)
    }

    /// `test_run` as if the frame arrived on interface `ifindex` (which must exist in
    /// the calling thread's namespace).
    pub fn test_run_on(
        &self,
        prog: &str,
        packet: &[u8],
        ifindex: Option<u32>,
    ) -> anyhow::Result<(u32, Vec<u8>)> {
        use std::os::fd::{AsFd, AsRawFd};
        let p = self
            .ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("program {prog} missing"))?;
        let fd = p.fd()?.as_fd().as_raw_fd();
        // The kernel may grow the frame (it never does here) up to this size.
        let mut out = vec![0u8; packet.len() + 256];
        // The BPF_PROG_TEST_RUN member of union bpf_attr.
        #[repr(C)]
        #[derive(Default)]
        struct TestRunAttr {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
            ctx_size_in: u32,
            ctx_size_out: u32,
            ctx_in: u64,
            ctx_out: u64,
            flags: u32,
            cpu: u32,
            batch_size: u32,
            _pad: u32,
        }
        // A struct __sk_buff (192 bytes) with only `ifindex` (offset 40) set.
        let mut ctx = [0u8; 192];
        let mut attr = TestRunAttr {
            prog_fd: fd as u32,
            data_size_in: packet.len() as u32,
            data_size_out: out.len() as u32,
            data_in: packet.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        if let Some(i) = ifindex {
            ctx[40..44].copy_from_slice(&i.to_ne_bytes());
            attr.ctx_in = ctx.as_ptr() as u64;
            attr.ctx_size_in = ctx.len() as u32;
        }
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        // SAFETY: attr points at valid input and output buffers whose sizes it states;
        // the kernel writes only within them and into attr.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context("BPF_PROG_TEST_RUN");
        }
        out.truncate(attr.data_size_out as usize);
        Ok((attr.retval, out))
    }

    /// Counter totals over all CPUs, by name: the events, then the drop reasons (their
    /// names are distinct, see netd_common::counters).
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut all = totals(&self.events, &event::NAMES);
        all.extend(totals(&self.drops, &drop_reason::NAMES));
        all
    }
}

/// Each counter of a per-CPU array summed over the CPUs, with its name.
fn totals(array: &PerCpuArray<MapData, u64>, names: &[&'static str]) -> Vec<(&'static str, u64)> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let total = array
                .get(&(i as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0);
            (*name, total)
        })
        .collect()
}
