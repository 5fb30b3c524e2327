//! The in-memory index of evictable blocks: which fetched blocks the cache holds, how
//! big they are, which was used longest ago, and whose drive each was fetched for. The
//! `cache` column family is its persistent copy (key → stamp, size, owner): a block's
//! stamp is written when it arrives, and again for blocks read since, when the store is
//! flushed (`finish_bulk`, as the daemon stops), so the order of use survives a restart.
//!
//! The owner decides whom a holder may pass a cached block on to (only when the owner's
//! newest head says its drive is open), so it is kept with the block, not guessed from
//! whoever asks. Entries written before owners were recorded have none: such a block is
//! read locally but passed on to nobody.
//!
//! Small blocks (directories, file roots, HAMT shards, tiny files) go only after every
//! big one has: they cost little room, and without them a followed drive whose owner is
//! offline could not even be listed.

use std::collections::{BTreeMap, HashMap, HashSet};

use libp2p_identity::PeerId;

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

/// One cached block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    stamp: u64,
    size: u64,
    /// Index into `CacheIndex::owners`; `None`: not known (an entry from before owners
    /// were recorded).
    owner: Option<u32>,
}

#[derive(Default)]
pub struct CacheIndex {
    /// Multihash bytes → entry.
    entries: HashMap<Vec<u8>, Entry>,
    /// The owners blocks were cached for, each once: a few followed peers own all of a
    /// cache's (maybe millions of) blocks.
    owners: Vec<PeerId>,
    owner_ids: HashMap<PeerId, u32>,
    /// (tier, stamp) → key: big blocks first, then oldest first.
    by_age: BTreeMap<(Tier, u64), Vec<u8>>,
    bytes: u64,
    next_stamp: u64,
    /// Blocks used since their stamps were last stored.
    touched: HashSet<Vec<u8>>,
}

impl CacheIndex {
    /// Rebuilds the index from stored `(key, stored entry)` pairs.
    pub fn from_entries(stored: impl IntoIterator<Item = (Vec<u8>, Stored)>) -> CacheIndex {
        let mut index = CacheIndex::default();
        for (key, s) in stored {
            index.next_stamp = index.next_stamp.max(s.stamp + 1);
            index.put(key, s.stamp, s.size, s.owner);
        }
        index
    }

    fn owner_id(&mut self, owner: PeerId) -> u32 {
        if let Some(id) = self.owner_ids.get(&owner) {
            return *id;
        }
        let id = self.owners.len() as u32;
        self.owners.push(owner);
        self.owner_ids.insert(owner, id);
        id
    }

    fn put(&mut self, key: Vec<u8>, stamp: u64, size: u64, owner: Option<PeerId>) {
        self.remove(&key);
        let owner = owner.map(|o| self.owner_id(o));
        self.bytes += size;
        self.by_age.insert((tier(size), stamp), key.clone());
        self.entries.insert(key, Entry { stamp, size, owner });
    }

    /// Adds a block fetched for `owner`'s drive; returns the stamp to store with it.
    pub fn insert(&mut self, key: Vec<u8>, size: u64, owner: Option<PeerId>) -> u64 {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.put(key, stamp, size, owner);
        stamp
    }

    /// Marks a block as just used, if the cache holds it.
    pub fn touch(&mut self, key: &[u8]) {
        if let Some(e) = self.entries.get_mut(key) {
            self.by_age.remove(&(tier(e.size), e.stamp));
            e.stamp = self.next_stamp;
            self.next_stamp += 1;
            self.by_age.insert((tier(e.size), e.stamp), key.to_vec());
            self.touched.insert(key.to_vec());
        }
    }

    /// The stored form of an entry.
    fn stored(&self, e: &Entry) -> Stored {
        Stored {
            stamp: e.stamp,
            size: e.size,
            owner: e.owner.and_then(|i| self.owners.get(i as usize).copied()),
        }
    }

    /// The blocks used since the last call, to be stored.
    pub fn take_touched(&mut self) -> Vec<(Vec<u8>, Stored)> {
        let touched = std::mem::take(&mut self.touched);
        touched
            .into_iter()
            .filter_map(|key| {
                let stored = self.stored(self.entries.get(&key)?);
                Some((key, stored))
            })
            .collect()
    }

    /// Forgets a block (it was evicted, or it became the drive's or a pin's).
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.by_age.remove(&(tier(e.size), e.stamp));
                self.bytes -= e.size;
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    /// Whose drive a cached block was fetched for: `None` if the block is not cached,
    /// `Some(None)` if it is but its owner is not known.
    pub fn owner(&self, key: &[u8]) -> Option<Option<PeerId>> {
        let e = self.entries.get(key)?;
        Some(e.owner.and_then(|i| self.owners.get(i as usize).copied()))
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
            let size = self.entries.get(key).map_or(0, |e| e.size);
            excess = excess.saturating_sub(size.max(1));
            out.push(key.clone());
        }
        out
    }
}

/// A `cache` column family value: stamp and size (big-endian), then the owner's peer
/// ID in its binary form (absent in entries written before owners were recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub stamp: u64,
    pub size: u64,
    pub owner: Option<PeerId>,
}

impl Stored {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + 40);
        v.extend_from_slice(&self.stamp.to_be_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        if let Some(o) = &self.owner {
            v.extend_from_slice(&o.to_bytes());
        }
        v
    }

    /// `None` for bytes we did not write; an owner that does not parse is not known.
    pub fn decode(value: &[u8]) -> Option<Stored> {
        let stamp = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
        let size = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
        let owner = value
            .get(16..)
            .filter(|o| !o.is_empty())
            .and_then(|o| PeerId::from_bytes(o).ok());
        Some(Stored { stamp, size, owner })
    }
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
            c.insert(key(i), 10, None);
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
            c.insert(key(i), 10, None);
        }
        assert!(
            c.take_touched().is_empty(),
            "arrivals are stored as they come"
        );
        c.touch(&key(0));
        c.touch(&key(1));
        c.remove(&key(1));
        let stored = Stored {
            stamp: 3,
            size: 10,
            owner: None,
        };
        assert_eq!(c.take_touched(), vec![(key(0), stored)]);
        assert!(c.take_touched().is_empty());
    }

    #[test]
    fn small_blocks_go_after_every_big_one() {
        let mut c = CacheIndex::default();
        c.insert(key(1), 100, None);
        c.insert(key(2), 1 << 20, None);
        c.insert(key(3), 1 << 20, None);
        c.touch(&key(2));
        assert_eq!(c.victims(100 + (1 << 20)), vec![key(3)]);
        assert_eq!(c.victims(0), vec![key(3), key(2), key(1)]);
    }

    #[test]
    fn a_reloaded_index_keeps_the_order_and_stamps_go_on_growing() {
        let at = |stamp| Stored {
            stamp,
            size: 5,
            owner: None,
        };
        let stored = vec![(key(1), at(7)), (key(2), at(3))];
        let mut c = CacheIndex::from_entries(stored);
        assert_eq!(c.victims(5), vec![key(2)]);
        assert_eq!(c.insert(key(3), 1, None), 8);
        assert_eq!(Stored::decode(b"short"), None);
    }

    #[test]
    fn a_block_knows_whose_drive_it_was_fetched_for() {
        let (alice, bob) = (PeerId::random(), PeerId::random());
        let mut c = CacheIndex::default();
        c.insert(key(1), 10, Some(alice));
        c.insert(key(2), 10, Some(bob));
        c.insert(key(3), 10, Some(alice));
        c.insert(key(4), 10, None);
        assert_eq!(c.owner(&key(1)), Some(Some(alice)));
        assert_eq!(c.owner(&key(2)), Some(Some(bob)));
        assert_eq!(c.owner(&key(4)), Some(None));
        assert_eq!(c.owner(&key(5)), None);
        assert_eq!(c.owners.len(), 2, "each owner is kept once");
        c.touch(&key(3));
        let (_, stored) = c.take_touched().pop().unwrap();
        assert_eq!(stored.owner, Some(alice));
        // The stored form keeps the owner; the form without one (older entries) reads
        // back as "not known".
        assert_eq!(Stored::decode(&stored.encode()), Some(stored));
        let old = Stored {
            owner: None,
            ..stored
        };
        assert_eq!(Stored::decode(&old.encode()[..16]), Some(old));
    }
}
