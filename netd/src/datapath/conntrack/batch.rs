//! One conntrack map, walked and pruned in batches (BPF_MAP_LOOKUP_BATCH /
//! BPF_MAP_DELETE_BATCH: a few syscalls per 4,096 entries instead of two per entry).
//! Generic over the key type, so both families' maps share it.
use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::Context;
use aya::maps::MapData;

use netd_common::batch::{bpf_batch, BatchAttr, BPF_MAP_DELETE_BATCH, BPF_MAP_LOOKUP_BATCH};

use super::family::CtKeyOf;

/// How many entries one batch syscall moves.
const BATCH: usize = 4096;
/// One conntrack map of key type `K` (`CtKey` or `CtKey6`).
pub struct CtMap<K> {
    map: MapData,
    capacity: u32,
    _key: PhantomData<K>,
}

impl<K: CtKeyOf> CtMap<K> {
    pub fn new(map: MapData) -> anyhow::Result<CtMap<K>> {
        let capacity = map.info().context("conntrack map info")?.max_entries();
        Ok(CtMap {
            map,
            capacity,
            _key: PhantomData,
        })
    }

    pub fn open(pin: &Path) -> anyhow::Result<CtMap<K>> {
        let map = MapData::from_pin(pin)
            .with_context(|| format!("opening the conntrack map {}", pin.display()))?;
        CtMap::new(map)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    fn fd(&self) -> u32 {
        self.map.fd().as_fd().as_raw_fd() as u32
    }

    /// Every entry, read in batches.
    pub fn entries(&self) -> anyhow::Result<Vec<(K, K::Entry)>> {
        let mut out = Vec::new();
        self.walk(|keys, vals| out.extend(keys.iter().copied().zip(vals.iter().copied())))?;
        Ok(out)
    }

    /// Hands each batch of entries to `f`, reusing one buffer.
    fn walk(&self, mut f: impl FnMut(&[K], &[K::Entry])) -> anyhow::Result<()> {
        let mut keys = vec![K::default(); BATCH];
        let mut vals = vec![K::Entry::default(); BATCH];
        let (mut cursor_in, mut cursor_out) = (0u64, 0u64);
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    &mut cursor_in as *mut u64 as u64
                },
                out_batch: &mut cursor_out as *mut u64 as u64,
                keys: keys.as_mut_ptr() as u64,
                values: vals.as_mut_ptr() as u64,
                count: BATCH as u32,
                map_fd: self.fd(),
                ..Default::default()
            };
            // SAFETY: keys and vals hold BATCH entries of the map's sizes and the
            // cursors 8 bytes each, all alive for the call.
            let r = unsafe { bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
            let n = attr.count as usize;
            f(&keys[..n], &vals[..n]);
            match r {
                Ok(()) => {}
                // ENOENT: the walk reached the end (with `n` entries in this last call).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e).context("BPF_MAP_LOOKUP_BATCH on conntrack"),
            }
            cursor_in = cursor_out;
            first = false;
        }
        Ok(())
    }

    /// Deletes `keys` in batches; keys not in this map (evicted, deleted by another
    /// handle, or in the other map) are skipped. Returns how many this call removed.
    pub fn delete(&self, keys: &[K]) -> usize {
        let mut removed = 0;
        let mut rest = keys;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(BATCH)];
            let mut attr = BatchAttr {
                keys: chunk.as_ptr() as u64,
                count: chunk.len() as u32,
                map_fd: self.fd(),
                ..Default::default()
            };
            // SAFETY: chunk holds `count` keys of the map's key size, alive for the call.
            let r = unsafe { bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr) };
            let done = attr.count as usize;
            removed += done;
            match r {
                Ok(()) => rest = &rest[chunk.len()..],
                // The key at `done` was not there: step over it and go on.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => rest = &rest[done + 1..],
                Err(e) => {
                    log::warn!("BPF_MAP_DELETE_BATCH on conntrack: {e}");
                    break;
                }
            }
        }
        removed
    }
}

/// What a census needs of a conntrack map of either family.
pub trait CtMapCount {
    /// Entries now (a walk that keeps nothing).
    fn count(&self) -> anyhow::Result<u64>;
    fn capacity(&self) -> u32;
}

impl<K: CtKeyOf> CtMapCount for CtMap<K> {
    fn count(&self) -> anyhow::Result<u64> {
        let mut n = 0u64;
        self.walk(|keys, _| n += keys.len() as u64)?;
        Ok(n)
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }
}
