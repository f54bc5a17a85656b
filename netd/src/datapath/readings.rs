//! The datapath's counters as a reader outside the agent's core sees them (the metrics
//! endpoint): handles of its own on the pinned maps, so reading never takes the daemon's
//! lock, and per-CPU values summed here. The programs never wait on a reader: per-CPU
//! arrays are read without locks, and the conntrack walk is the batched one the
//! collector uses.
use std::path::Path;

use anyhow::Context;
use aya::maps::{Map, MapData, PerCpuArray};
use netd_common::{drop_reason, event, map_names};

use super::{port_stats::PortStats, CtTable};
use crate::model::PortMapping;

/// One counter of a table: its name in `netd stats`, what it means, its total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// Entries of one family's conntrack maps now, and what they hold at most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtCensus {
    pub answered: u64,
    pub new: u64,
    pub answered_capacity: u32,
    pub new_capacity: u32,
}

pub struct Readings {
    drops: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    port_stats: PortStats,
    ct: CtTable,
}

fn pinned(bpf_dir: &Path, name: &str) -> anyhow::Result<MapData> {
    let pin = bpf_dir.join(name);
    MapData::from_pin(&pin).with_context(|| format!("opening the pinned map {}", pin.display()))
}

impl Readings {
    /// Opens the pinned counter and conntrack maps under `bpf_dir` (the daemon pinned
    /// them at its start).
    pub fn open(bpf_dir: &Path) -> anyhow::Result<Readings> {
        Ok(Readings {
            drops: PerCpuArray::try_from(Map::PerCpuArray(pinned(bpf_dir, map_names::DROPS)?))?,
            events: PerCpuArray::try_from(Map::PerCpuArray(pinned(bpf_dir, map_names::EVENTS)?))?,
            port_stats: PortStats::new(
                Map::PerCpuHashMap(pinned(bpf_dir, map_names::PORT_STATS)?),
                Map::PerCpuHashMap(pinned(bpf_dir, map_names::PORT_STATS6)?),
            )?,
            ct: CtTable::open(bpf_dir)?,
        })
    }

    /// Packets dropped, by reason.
    pub fn drops(&self) -> Vec<Counted> {
        table(&self.drops, &drop_reason::NAMES, &drop_reason::DOCS)
    }

    /// What the datapath did, by kind.
    pub fn events(&self) -> Vec<Counted> {
        table(&self.events, &event::NAMES, &event::DOCS)
    }

    /// Packets and bytes through a published port of either family.
    pub fn port(&self, m: &PortMapping) -> (u64, u64) {
        let c = self.port_stats.get(m);
        (c.packets, c.bytes)
    }

    /// Conntrack entries of IPv4 and of IPv6.
    pub fn conntrack(&self) -> anyhow::Result<[CtCensus; 2]> {
        self.ct.census()
    }
}

fn table(
    array: &PerCpuArray<MapData, u64>,
    names: &[&'static str],
    docs: &[&'static str],
) -> Vec<Counted> {
    names
        .iter()
        .zip(docs)
        .enumerate()
        .map(|(i, (name, help))| Counted {
            name,
            // Doc comments keep the space after `///`.
            help: help.trim(),
            value: array
                .get(&(i as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0),
        })
        .collect()
}
