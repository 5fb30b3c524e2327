//! The cache's bookkeeping: which fetched blocks are evictable, how big each is, whose
//! drive it was fetched for, and the order of use. It lives in two column families,
//! `cache` (block key → stamp, size, owner) and `cache_age` (tier, stamp, block key →
//! nothing: iterated in key order, big blocks come first, oldest first), so that the
//! daemon's memory does not grow with what the cache holds: an `ls -R` of a
//! million-entry drive caches a million small blocks. In memory are only the total
//! size, the next stamp, and a bounded batch of reads whose stamps are not written yet.
//!
//! The owner decides whom a holder may pass a cached block on to (only when the owner's
//! newest head says its drive is open), so it is kept with the block, not guessed from
//! whoever asks. Entries written before owners were recorded have none: such a block is
//! read locally but passed on to nobody.
//!
//! Small blocks (directories, file roots, HAMT shards, tiny files) go only after every
//! big one has: they cost little room, and without them a followed drive whose owner is
//! offline could not even be listed.

use std::collections::HashSet;

use libp2p_identity::PeerId;

/// Blocks smaller than this are kept until no big block is left to evict.
const SMALL_BLOCK: u64 = 64 * 1024;
/// Reads remembered before their new stamps are written.
const TOUCHED_BATCH: usize = 1024;

/// The first byte of an age key: big blocks sort (and are evicted) first.
fn tier(size: u64) -> u8 {
    u8::from(size < SMALL_BLOCK)
}

/// The `cache_age` key of a block: tier, stamp (big-endian, so that keys sort by it),
/// then the block's key.
pub fn age_key(block_key: &[u8], stored: &Stored) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + block_key.len());
    k.push(tier(stored.size));
    k.extend_from_slice(&stored.stamp.to_be_bytes());
    k.extend_from_slice(block_key);
    k
}

/// The block key an age key ends with; `None` for bytes we did not write.
pub fn block_key_of(age_key: &[u8]) -> Option<&[u8]> {
    age_key.get(9..).filter(|k| !k.is_empty())
}

/// What the cache keeps in memory while it is on.
pub struct CacheState {
    /// Total size of the cached blocks.
    pub bytes: u64,
    next_stamp: u64,
    /// Keys read since the last stamps were written (cached or not: which are is
    /// looked up when they are written).
    touched: HashSet<Vec<u8>>,
}

impl CacheState {
    pub fn new(bytes: u64, next_stamp: u64) -> CacheState {
        CacheState {
            bytes,
            next_stamp,
            touched: HashSet::new(),
        }
    }

    /// A stamp later than every one given before.
    pub fn stamp(&mut self) -> u64 {
        let s = self.next_stamp;
        self.next_stamp += 1;
        s
    }

    /// Remembers a read of `key`; true once enough are waiting to be written.
    pub fn touch(&mut self, key: &[u8]) -> bool {
        if !self.touched.contains(key) {
            self.touched.insert(key.to_vec());
        }
        self.touched.len() >= TOUCHED_BATCH
    }

    /// The keys read since the last call.
    pub fn take_touched(&mut self) -> HashSet<Vec<u8>> {
        std::mem::take(&mut self.touched)
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

    fn at(stamp: u64, size: u64) -> Stored {
        Stored {
            stamp,
            size,
            owner: None,
        }
    }

    #[test]
    fn age_keys_sort_big_blocks_first_then_oldest_first() {
        let mut keys = [
            age_key(b"small-old", &at(1, 100)),
            age_key(b"big-new", &at(300, 1 << 20)),
            age_key(b"small-new", &at(400, 100)),
            age_key(b"big-old", &at(2, 1 << 20)),
        ];
        keys.sort();
        let order: Vec<&[u8]> = keys.iter().filter_map(|k| block_key_of(k)).collect();
        let expected: [&[u8]; 4] = [b"big-old", b"big-new", b"small-old", b"small-new"];
        assert_eq!(order, expected);
        assert_eq!(block_key_of(b"short"), None);
    }

    #[test]
    fn reads_wait_in_a_bounded_batch() {
        let mut c = CacheState::new(0, 5);
        assert_eq!((c.stamp(), c.stamp()), (5, 6));
        for i in 0..TOUCHED_BATCH - 1 {
            assert!(!c.touch(&i.to_be_bytes()), "batch full after {i}");
        }
        assert!(
            !c.touch(&0usize.to_be_bytes()),
            "a key read twice counts once"
        );
        assert!(c.touch(b"last"));
        assert_eq!(c.take_touched().len(), TOUCHED_BATCH);
        assert!(c.take_touched().is_empty());
    }

    #[test]
    fn an_entry_keeps_its_owner_and_older_entries_have_none() {
        let stored = Stored {
            owner: Some(PeerId::random()),
            ..at(3, 10)
        };
        assert_eq!(Stored::decode(&stored.encode()), Some(stored));
        assert_eq!(Stored::decode(&stored.encode()[..16]), Some(at(3, 10)));
        assert_eq!(Stored::decode(b"short"), None);
    }
}
