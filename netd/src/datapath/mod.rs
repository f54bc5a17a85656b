//! The eBPF datapath as the agent sees it: `Datapath::load` loads the object, pins its
//! maps and hands out typed handles; `links` attaches and pins programs; `maps` turns
//! domain types (port mappings, attachments, networks) into map entries; `conntrack`
//! lists, flushes and expires flows. This module is the only importer of netd-common.
//!
//! Maps are pinned by name under the instance's bpf dir, so a restarted agent opens the
//! same maps (and keeps the conntrack state). Program links are pinned too, so the
//! datapath keeps forwarding while the agent is down; a restarted agent swaps its freshly
//! loaded program into the pinned link (an atomic bpf_link_update).
mod addrs;
mod conntrack;
mod error;
mod gateway;
mod layout;
mod links;
mod maps;
mod port_stats;
mod ports;
use port_stats::PortStats;
mod rawmap;
mod readings;
mod sync;
mod tc;
mod testrun;
mod trace;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

pub use addrs::is_local6_candidate;
use anyhow::{anyhow, Context};
pub use aya::programs::XdpMode;
use aya::{
    maps::{lpm_trie::LpmTrie, Array, HashMap, MapData, PerCpuArray},
    programs::{CgroupSockAddr, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
pub use conntrack::{monotonic_ns, spawn_gc, CtTable, Flow, Timeouts};
pub use error::DatapathError;
pub use links::{hold_links, remove_all, HeldLinks};
pub use maps::{ipproto, ipproto_of, LinkRule};
/// The layout of the pinned datapath this release reads and writes.
pub use netd_common::layout::DATAPATH_LAYOUT as LAYOUT;
use netd_common::{drop_reason, event, map_names, prog_names, Config, Config6, Endpoint};
pub use readings::{Counted, CtCensus, Readings};
pub use tc::ProgSet;
pub use trace::{open_ring as open_trace_ring, PacketTrace, TraceHold, TraceSwitch};

/// The datapath's counter tables (names and meanings), for whoever shows them.
pub mod counters {
    pub use netd_common::{drop_reason, event};
}

/// Datapath configuration bits (`netd daemon` flags).
pub mod config_flags {
    pub use netd_common::{
        CONFIG_F_FAST_PATH as FAST_PATH, CONFIG_F_GUARD_IN_TC as GUARD_IN_TC,
        CONFIG_F_TRACE as TRACE,
    };
}

/// bpffs's statfs magic.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd"));

pub struct Datapath {
    ebpf: Ebpf,
    links_dir: PathBuf,
    /// The tc blocks of the endpoint programs (`tc.rs`), once the instance is known.
    blocks: Option<tc::Blocks>,
    /// Published ports of each family (`ports::PortMap`).
    ports4: ports::PortMap<u32>,
    ports6: ports::PortMap<[u8; 16]>,
    local: HashMap<MapData, u32, u32>,
    local6: HashMap<MapData, [u8; 16], u32>,
    endpoints: HashMap<MapData, u32, Endpoint>,
    links: HashMap<MapData, netd_common::LinkKey, u32>,
    overlay_peers: HashMap<MapData, u32, netd_common::OverlayPeer>,
    endpoints6: HashMap<MapData, u32, netd_common::Endpoint6>,
    addrs6: HashMap<MapData, [u8; 16], netd_common::Addr6>,
    config: Array<MapData, Config>,
    config6: Array<MapData, Config6>,
    /// Per-CPU counters of `drop_reason` and of `event`.
    drops: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    port_stats: PortStats,
    subnets: LpmTrie<MapData, u32, u32>,
    subnets6: LpmTrie<MapData, [u8; 16], u32>,
    trusted: HashMap<MapData, netd_common::TrustedKey, u32>,
    sources: LpmTrie<MapData, [u8; 8], u32>,
    sources6: LpmTrie<MapData, [u8; 20], u32>,
    /// The daemon's published-port source restriction (`gateway::sync_sources`).
    default_sources: Vec<ipnetwork::IpNetwork>,
    ct: CtTable,
    bpf_dir: PathBuf,
    /// Pins of an earlier layout, until the programs using them were swapped out.
    migration: Option<layout::Migration>,
}

/// What the datapath is told at start.
pub struct Settings {
    pub uplink_ifindex: u32,
    pub uplink_ip: Ipv4Addr,
    /// `config_flags` bits.
    pub flags: u32,
    pub snat_ports: (u16, u16),
}

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

/// NETD_VERIFIER_STATS=1: how many instructions the verifier walked for program `name`,
/// for whoever changes the programs (one near the kernel's limit of a million will not
/// survive the next change). Apart from NETD_VERIFIER_LOG, whose log makes a big
/// program's load take minutes.
fn report_verified(name: &str, info: Option<aya::programs::ProgramInfo>) {
    if std::env::var_os("NETD_VERIFIER_STATS").is_none() {
        return;
    }
    if let Some(n) = info.and_then(|i| i.verified_instruction_count()) {
        log::info!("{name}: {n} instructions verified");
        eprintln!("netd: {name}: {n} instructions verified");
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

/// Capacity of the map of new (unanswered) flows for `ct_entries` confirmed entries: a
/// flood churns it, so it needs room for the flows that are being set up, not all.
fn new_flow_entries(ct_entries: u32) -> u32 {
    (ct_entries / 4).max(4096)
}

/// The maps of the object that are pinned, in the shape this agent loads them with
/// (`capacity` overrides the object's max_entries, as the loader is told to).
fn pinned_maps(capacity: &[(&str, u32)]) -> anyhow::Result<Vec<layout::Wanted>> {
    let obj = aya_obj::Object::parse(OBJECT).context("parsing the eBPF object")?;
    Ok(obj
        .maps
        .iter()
        .filter(|(_, m)| m.pinning() == aya_obj::maps::PinningType::ByName)
        .map(|(name, m)| layout::Wanted {
            name: name.clone(),
            shape: rawmap::Shape {
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: capacity
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| *c)
                    .unwrap_or_else(|| m.max_entries()),
                flags: m.map_flags(),
            },
        })
        .collect())
}

/// The layout of the datapath pinned in `bpf_dir` (a newer one than this release's is
/// an error): checked before the daemon changes anything.
pub fn check_layout(bpf_dir: &Path) -> Result<u32, DatapathError> {
    layout::check(bpf_dir)
}

/// Loads every program of the object into the kernel, which verifies each (the
/// verdict and, with NETD_VERIFIER_LOG, the log in the error of a refused one).
fn verify_programs(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for name in [
        prog_names::UPLINK_INGRESS,
        prog_names::ENDPOINT_EGRESS,
        prog_names::OVERLAY_EGRESS,
        prog_names::OVERLAY_INGRESS,
        prog_names::ENDPOINT_EGRESS6,
        prog_names::UPLINK_INGRESS6,
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?
            .try_into()?;
        with_retries(|| prog.load()).with_context(|| format!("verifying {name}"))?;
        report_verified(name, prog.info().ok());
    }
    let guard: &mut Xdp = ebpf
        .program_mut(prog_names::UPLINK_GUARD)
        .ok_or_else(|| anyhow!("program uplink_guard missing from the object"))?
        .try_into()?;
    with_retries(|| guard.load()).context("verifying uplink_guard")?;
    report_verified(prog_names::UPLINK_GUARD, guard.info().ok());
    for name in [
        prog_names::SOCK_CONNECT4,
        prog_names::SOCK_SENDMSG4,
        prog_names::SOCK_RECVMSG4,
        prog_names::SOCK_CONNECT6,
        prog_names::SOCK_SENDMSG6,
        prog_names::SOCK_RECVMSG6,
    ] {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?
            .try_into()?;
        with_retries(|| prog.load()).with_context(|| format!("verifying {name}"))?;
    }
    Ok(())
}

fn open_conntrack(bpf_dir: &Path) -> anyhow::Result<CtTable> {
    CtTable::open(bpf_dir)
}

impl Datapath {
    /// Loads and verifies every program, opening (or creating and pinning) the maps under
    /// `bpf_dir`. `ct_entries` is the conntrack map's capacity in entries (two a flow).
    pub fn load(bpf_dir: &Path, ct_entries: u32) -> anyhow::Result<Datapath> {
        ensure_bpffs(bpf_dir)?;
        let links_dir = bpf_dir.join("links");
        fs::create_dir_all(&links_dir)?;
        let new_entries = new_flow_entries(ct_entries);
        let capacity = [
            (map_names::CONNTRACK, ct_entries),
            (map_names::CONNTRACK_NEW, new_entries),
            (map_names::CONNTRACK6, ct_entries),
            (map_names::CONNTRACK6_NEW, new_entries),
        ];
        let migration = layout::Migration::prepare(bpf_dir, &pinned_maps(&capacity)?)?;
        let mut ebpf = load_object(bpf_dir, &capacity)?;
        let take = |e: &mut Ebpf, n: &str| e.take_map(n).ok_or_else(|| anyhow!("map {n} missing"));
        migration.carry()?;
        // The conntrack maps are pinned by now: the table opens them by their pins.
        let ct = open_conntrack(bpf_dir)?;
        let ports4 = ports::PortMap::new(
            take(&mut ebpf, map_names::PORTS)?,
            take(&mut ebpf, map_names::DIRECT)?,
        )?;
        let local = HashMap::try_from(take(&mut ebpf, map_names::LOCAL_ADDRS)?)?;
        let ports6 = ports::PortMap::new(
            take(&mut ebpf, map_names::PORTS6)?,
            take(&mut ebpf, map_names::DIRECT6)?,
        )?;
        let local6 = HashMap::try_from(take(&mut ebpf, map_names::LOCAL_ADDRS6)?)?;
        let subnets6 = LpmTrie::try_from(take(&mut ebpf, map_names::SUBNETS6)?)?;
        let config6 = Array::try_from(take(&mut ebpf, map_names::CONFIG6)?)?;
        let endpoints = HashMap::try_from(take(&mut ebpf, map_names::ENDPOINTS)?)?;
        let links = HashMap::try_from(take(&mut ebpf, map_names::LINKS)?)?;
        let overlay_peers = HashMap::try_from(take(&mut ebpf, map_names::OVERLAY_PEERS)?)?;
        let endpoints6 = HashMap::try_from(take(&mut ebpf, map_names::ENDPOINTS6)?)?;
        let addrs6 = HashMap::try_from(take(&mut ebpf, map_names::ADDRS6)?)?;
        let config = Array::try_from(take(&mut ebpf, map_names::CONFIG)?)?;
        let drops = PerCpuArray::try_from(take(&mut ebpf, map_names::DROPS)?)?;
        let events = PerCpuArray::try_from(take(&mut ebpf, map_names::EVENTS)?)?;
        let port_stats = PortStats::new(
            take(&mut ebpf, map_names::PORT_STATS)?,
            take(&mut ebpf, map_names::PORT_STATS6)?,
        )?;
        let subnets = LpmTrie::try_from(take(&mut ebpf, map_names::SUBNETS)?)?;
        let trusted = HashMap::try_from(take(&mut ebpf, map_names::TRUSTED)?)?;
        let sources = LpmTrie::try_from(take(&mut ebpf, map_names::SOURCES)?)?;
        let sources6 = LpmTrie::try_from(take(&mut ebpf, map_names::SOURCES6)?)?;
        Ok(Datapath {
            ebpf,
            links_dir,
            blocks: None,
            ports4,
            ports6,
            local,
            local6,
            endpoints,
            links,
            overlay_peers,
            endpoints6,
            addrs6,
            config,
            config6,
            drops,
            events,
            port_stats,
            subnets,
            subnets6,
            trusted,
            sources,
            sources6,
            default_sources: Vec::new(),
            ct,
            bpf_dir: bpf_dir.to_path_buf(),
            migration: Some(migration),
        })
    }

    /// Numbers the tc blocks of the endpoint programs after instance `id` (`tc.rs`).
    pub fn set_instance(&mut self, id: &str) {
        self.blocks = Some(tc::Blocks::of(id));
    }

    pub fn configure(&mut self, s: &Settings) -> anyhow::Result<()> {
        let cfg = Config {
            uplink_ifindex: s.uplink_ifindex,
            uplink_ip: u32::from(s.uplink_ip).to_be(),
            flags: s.flags,
            snat_port_min: s.snat_ports.0,
            snat_port_max: s.snat_ports.1,
            netns_cookie: netns_cookie().unwrap_or(0),
        };
        self.config.set(0, cfg, 0)?;
        Ok(())
    }

    /// Whether fresh maps wait for the store's entries: `reconcile`'s map sync must run
    /// before the programs are swapped in.
    pub fn needs_store(&self) -> bool {
        self.migration.as_ref().is_some_and(|m| m.needs_store())
    }

    /// Once the programs of this agent are in every link: the last entries the old
    /// programs made are carried, the pins of the old layout removed and the layout
    /// recorded.
    pub fn finish_migration(&mut self) -> Result<(), DatapathError> {
        match self.migration.take() {
            Some(m) => m.finish(),
            None => Ok(()),
        }
    }

    /// The conntrack table (listing, flush).
    pub fn conntrack(&self) -> &CtTable {
        &self.ct
    }

    /// A second handle on the conntrack map, for the garbage collector's own thread.
    pub fn conntrack_handle(&self) -> anyhow::Result<CtTable> {
        open_conntrack(&self.bpf_dir)
    }

    /// Removes every flow (of `ip`'s family) that involves `ip` on either side or as a
    /// rewrite target, so a removed container leaves no flow state behind.
    pub fn flush_conntrack_of(&self, ip: IpAddr) -> anyhow::Result<usize> {
        self.ct.flush_involving(ip)
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

/// The eBPF object loaded, its maps pinned in `bpf_dir` (the conntrack tables at
/// `capacity`), its programs through the verifier.
fn load_object(bpf_dir: &Path, capacity: &[(&str, u32)]) -> anyhow::Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    // NETD_VERIFIER_LOG=1: the verifier's whole log in a refusal, for whoever is
    // changing the programs (the default keeps only its verdict).
    if std::env::var_os("NETD_VERIFIER_LOG").is_some() {
        loader.verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
    }
    loader.default_map_pin_directory(bpf_dir);
    for (name, entries) in capacity {
        loader.map_max_entries(name, *entries);
    }
    let mut ebpf = loader
        .load(OBJECT)
        .context("loading the eBPF object (is this kernel new enough, are you root?)")?;
    verify_programs(&mut ebpf)?;
    Ok(ebpf)
}
