//! The in-memory index of evictable blocks: which fetched blocks the cache holds, how
//! big they are and which was used longest ago. The `cache` column family is its
//! persistent copy (key → stamp, size): a block's stamp is written when it arrives, and
//! again for blocks read since, when the store is flushed (`finish_bulk`, as the daemon
//! stops), so the order of use survives a restart.
//!
//! Small blocks (directories, file roots, HAMT shards, tiny files) go only after every
//! big one has: they cost little room, and without them a followed drive whose owner is
//! offline could not even be listed.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Blocks smaller than this are kept until no big block is left to evict.
const SMALL_BLOCK: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Big,
    Small,
}

fn tier(size: u64) -> Tier {
    if size < SMALL_BLOCK {
        Tier::Small
    } else {
        Tier::Big
    }
}

#[derive(Default)]
pub struct CacheIndex {
    /// Multihash bytes → (stamp, size).
    entries: HashMap<Vec<u8>, (u64, u64)>,
    /// (tier, stamp) → key: big blocks first, then oldest first.
    by_age: BTreeMap<(Tier, u64), Vec<u8>>,
    bytes: u64,
    next_stamp: u64,
    /// Blocks used since their stamps were last stored.
    touched: HashSet<Vec<u8>>,
}

impl CacheIndex {
    /// Rebuilds the index from stored `(key, stamp, size)` entries.
    pub fn from_entries(stored: impl IntoIterator<Item = (Vec<u8>, u64, u64)>) -> CacheIndex {
        let mut index = CacheIndex::default();
        for (key, stamp, size) in stored {
            index.next_stamp = index.next_stamp.max(stamp + 1);
            index.put(key, stamp, size);
        }
        index
    }

    fn put(&mut self, key: Vec<u8>, stamp: u64, size: u64) {
        self.remove(&key);
        self.bytes += size;
        self.by_age.insert((tier(size), stamp), key.clone());
        self.entries.insert(key, (stamp, size));
    }

    /// Adds a block; returns the stamp to store with it.
    pub fn insert(&mut self, key: Vec<u8>, size: u64) -> u64 {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.put(key, stamp, size);
        stamp
    }

    /// Marks a block as just used, if the cache holds it.
    pub fn touch(&mut self, key: &[u8]) {
        if let Some(&(stamp, size)) = self.entries.get(key) {
            self.by_age.remove(&(tier(size), stamp));
            let now = self.next_stamp;
            self.next_stamp += 1;
            self.by_age.insert((tier(size), now), key.to_vec());
            self.entries.insert(key.to_vec(), (now, size));
            self.touched.insert(key.to_vec());
        }
    }

    /// `(key, stamp, size)` of the blocks used since the last call, to be stored.
    pub fn take_touched(&mut self) -> Vec<(Vec<u8>, u64, u64)> {
        let touched = std::mem::take(&mut self.touched);
        touched
            .into_iter()
            .filter_map(|key| {
                let (stamp, size) = *self.entries.get(&key)?;
                Some((key, stamp, size))
            })
            .collect()
    }

    /// Forgets a block (it was evicted, or it became the drive's or a pin's).
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some((stamp, size)) => {
                self.by_age.remove(&(tier(size), stamp));
                self.bytes -= size;
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    /// Total size of the cached blocks.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The blocks to drop so that at most `keep` bytes remain: the least recently used
    /// big ones, then small ones.
    pub fn victims(&self, keep: u64) -> Vec<Vec<u8>> {
        let mut excess = self.bytes.saturating_sub(keep);
        let mut out = Vec::new();
        for key in self.by_age.values() {
            if excess == 0 {
                break;
            }
            let (_, size) = self.entries[key];
            excess = excess.saturating_sub(size.max(1));
            out.push(key.clone());
        }
        out
    }
}

/// The `cache` column family's value: stamp and size, big-endian.
pub fn encode_entry(stamp: u64, size: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&stamp.to_be_bytes());
    v[8..].copy_from_slice(&size.to_be_bytes());
    v
}

pub fn decode_entry(value: &[u8]) -> Option<(u64, u64)> {
    let stamp = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let size = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((stamp, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> Vec<u8> {
        vec![i; 4]
    }

    #[test]
    fn the_least_recently_used_go_first() {
        let mut c = CacheIndex::default();
        for i in 0..4 {
            c.insert(key(i), 10);
        }
        assert_eq!(c.bytes(), 40);
        c.touch(&key(0));
        assert_eq!(c.victims(20), vec![key(1), key(2)]);
        assert_eq!(c.victims(40), Vec::<Vec<u8>>::new());
        assert!(c.remove(&key(1)));
        assert!(!c.remove(&key(1)));
        assert_eq!(c.bytes(), 30);
        assert_eq!(c.victims(0), vec![key(2), key(3), key(0)]);
    }

    #[test]
    fn uses_are_handed_out_once_for_storing() {
        let mut c = CacheIndex::default();
        for i in 0..3 {
            c.insert(key(i), 10);
        }
        assert!(
            c.take_touched().is_empty(),
            "arrivals are stored as they come"
        );
        c.touch(&key(0));
        c.touch(&key(1));
        c.remove(&key(1));
        assert_eq!(c.take_touched(), vec![(key(0), 3, 10)]);
        assert!(c.take_touched().is_empty());
    }

    #[test]
    fn small_blocks_go_after_every_big_one() {
        let mut c = CacheIndex::default();
        c.insert(key(1), 100);
        c.insert(key(2), 1 << 20);
        c.insert(key(3), 1 << 20);
        c.touch(&key(2));
        assert_eq!(c.victims(100 + (1 << 20)), vec![key(3)]);
        assert_eq!(c.victims(0), vec![key(3), key(2), key(1)]);
    }

    #[test]
    fn a_reloaded_index_keeps_the_order_and_stamps_go_on_growing() {
        let stored = vec![(key(1), 7, 5), (key(2), 3, 5)];
        let mut c = CacheIndex::from_entries(stored);
        assert_eq!(c.victims(5), vec![key(2)]);
        assert_eq!(c.insert(key(3), 1), 8);
        assert_eq!(decode_entry(&encode_entry(8, 1)), Some((8, 1)));
        assert_eq!(decode_entry(b"short"), None);
    }
}
