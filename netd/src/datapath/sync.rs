//! One way to write a map: `sync` makes it hold exactly a wanted set (removes the keys
//! it does not name, writes the rest), over hash maps and LPM tries alike (`SyncMap`).
//! Every map the agent fills from the store goes through it.
use std::{collections::HashMap as StdHashMap, hash::Hash};

use aya::maps::{
    lpm_trie::{Key as LpmKey, LpmTrie},
    HashMap, MapData,
};

/// A map as `sync` sees it: list keys, insert or overwrite, remove.
pub trait SyncMap<K, V> {
    fn keys_now(&self) -> Vec<K>;
    fn put(&mut self, k: &K, v: &V) -> anyhow::Result<()>;
    fn del(&mut self, k: &K);
}

impl<K: aya::Pod, V: aya::Pod> SyncMap<K, V> for HashMap<MapData, K, V> {
    fn keys_now(&self) -> Vec<K> {
        self.keys().flatten().collect()
    }
    fn put(&mut self, k: &K, v: &V) -> anyhow::Result<()> {
        Ok(self.insert(k, v, 0)?)
    }
    fn del(&mut self, k: &K) {
        let _ = self.remove(k);
    }
}

/// LPM keys are compared as (prefix length, data): the trie's own key type has no Hash.
/// `K` is the address (u32 for IPv4, [u8; 16] for IPv6).
impl<K: aya::Pod> SyncMap<(u32, K), u32> for LpmTrie<MapData, K, u32> {
    fn keys_now(&self) -> Vec<(u32, K)> {
        self.keys()
            .flatten()
            .map(|k| (k.prefix_len(), k.data()))
            .collect()
    }
    fn put(&mut self, k: &(u32, K), v: &u32) -> anyhow::Result<()> {
        Ok(self.insert(&LpmKey::new(k.0, k.1), v, 0)?)
    }
    fn del(&mut self, k: &(u32, K)) {
        let _ = self.remove(&LpmKey::new(k.0, k.1));
    }
}

/// Makes `map` hold exactly `want`: removes the keys it does not name, then writes
/// every wanted entry (a write is one syscall, as reading to compare would be).
/// Returns how many stale entries went.
pub fn sync<K: Eq + Hash + Copy, V>(
    map: &mut impl SyncMap<K, V>,
    want: &StdHashMap<K, V>,
) -> anyhow::Result<usize> {
    let stale: Vec<K> = map
        .keys_now()
        .into_iter()
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in &stale {
        map.del(k);
    }
    for (k, v) in want {
        map.put(k, v)?;
    }
    Ok(stale.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sync` against an in-memory map that logs what it was asked to do.
    #[derive(Default)]
    struct Fake {
        m: StdHashMap<u32, u32>,
        writes: usize,
    }
    impl SyncMap<u32, u32> for Fake {
        fn keys_now(&self) -> Vec<u32> {
            self.m.keys().copied().collect()
        }
        fn put(&mut self, k: &u32, v: &u32) -> anyhow::Result<()> {
            self.writes += 1;
            self.m.insert(*k, *v);
            Ok(())
        }
        fn del(&mut self, k: &u32) {
            self.m.remove(k);
        }
    }

    #[test]
    fn sync_removes_stale_keeps_and_updates_wanted() {
        let mut f = Fake::default();
        f.m.extend([(1, 10), (2, 20), (3, 30)]);
        let want: StdHashMap<u32, u32> = [(2, 21), (4, 40)].into();
        let stale = sync(&mut f, &want).unwrap();
        assert_eq!(stale, 2, "1 and 3 are not wanted");
        assert_eq!(f.m, want);
        assert_eq!(f.writes, 2);
        // A second sync changes nothing and removes nothing.
        assert_eq!(sync(&mut f, &want).unwrap(), 0);
        assert_eq!(f.m, want);
        // Syncing to nothing empties the map.
        assert_eq!(sync(&mut f, &StdHashMap::new()).unwrap(), 2);
        assert!(f.m.is_empty());
    }
}
