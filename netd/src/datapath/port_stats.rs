//! Packets and bytes per published port, both families: the programs' `account` adds
//! every rewritten packet of a published flow to its port's per-CPU counters.
use aya::maps::{Map, MapData, PerCpuHashMap};
use netd_common::{PortCounters, PortKey, PortKey6};

use super::ports::port_key;
use crate::model::PortMapping;

pub struct PortStats {
    v4: PerCpuHashMap<MapData, PortKey, PortCounters>,
    v6: PerCpuHashMap<MapData, PortKey6, PortCounters>,
}

impl PortStats {
    /// Over the maps `NETD_PORT_STATS` and `NETD_PORT_STATS6`.
    pub fn new(v4: Map, v6: Map) -> anyhow::Result<PortStats> {
        Ok(PortStats {
            v4: PerCpuHashMap::try_from(v4)?,
            v6: PerCpuHashMap::try_from(v6)?,
        })
    }

    /// `m`'s counters so far, both directions, summed over the CPUs.
    pub fn get(&self, m: &PortMapping) -> PortCounters {
        let per_cpu = match (port_key::<u32>(m), port_key::<[u8; 16]>(m)) {
            (Some(k), _) => self.v4.get(&k, 0),
            (_, Some(k)) => self.v6.get(&k, 0),
            _ => return PortCounters::default(),
        };
        let mut total = PortCounters::default();
        for c in per_cpu.iter().flat_map(|v| v.iter()) {
            total.packets += c.packets;
            total.bytes += c.bytes;
        }
        total
    }

    /// Forgets `m`'s counters (it is no longer published).
    pub fn remove(&mut self, m: &PortMapping) {
        let _ = match (port_key::<u32>(m), port_key::<[u8; 16]>(m)) {
            (Some(k), _) => self.v4.remove(&k),
            (_, Some(k)) => self.v6.remove(&k),
            _ => Ok(()),
        };
    }
}
