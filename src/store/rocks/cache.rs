//! The evictable cache of fetched blocks, kept in the `cache` and `cache_age` families
//! (see `store::cache`). Every change to them happens under the `cache` lock, so an
//! eviction can never delete a block that the drive or a pin has just claimed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use cid::Cid;
use libp2p_identity::PeerId;
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use super::{RocksStore, CF_BLOCKS, CF_CACHE, CF_CACHE_AGE};
use crate::block::Block;
use crate::store::cache::{age_key, block_key_of, CacheState, Stored};
use crate::store::{Holding, StoreError};

/// Fetched blocks and their bookkeeping skip the write-ahead log, like a bulk import:
/// a fetched block lost in a crash is only fetched again.
fn without_wal() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.disable_wal(true);
    wo
}

impl RocksStore {
    pub(super) fn cache(&self) -> MutexGuard<'_, Option<CacheState>> {
        // Every change under the lock leaves the state whole.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns the evictable cache on: fetched blocks (`put_cached`) beyond `cap` bytes
    /// are dropped, least recently used first. Reads the `cache` family once (its
    /// total, the next stamp), and rebuilds the order of use if it does not match.
    pub fn enable_cache(&self, cap: u64) -> Result<(), StoreError> {
        let (mut bytes, mut next_stamp, mut entries) = (0, 0, 0u64);
        for item in self.db.iterator_cf(self.cf(CF_CACHE), IteratorMode::Start) {
            let (_, value) = item.map_err(|e| self.err(e))?;
            if let Some(s) = Stored::decode(&value) {
                bytes += s.size;
                next_stamp = next_stamp.max(s.stamp + 1);
                entries += 1;
            }
        }
        let mut ages = 0u64;
        for item in self
            .db
            .iterator_cf(self.cf(CF_CACHE_AGE), IteratorMode::Start)
        {
            item.map_err(|e| self.err(e))?;
            ages += 1;
        }
        // A repo from before the order was kept on disk, or one whose last writes
        // reached one family and not the other.
        if ages != entries {
            self.rebuild_ages()?;
        }
        *self.cache() = Some(CacheState::new(bytes, next_stamp));
        self.cache_cap.store(cap, Ordering::Relaxed);
        self.evict()
    }

    /// Writes the `cache_age` family afresh from the `cache` family.
    fn rebuild_ages(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for item in self
            .db
            .iterator_cf(self.cf(CF_CACHE_AGE), IteratorMode::Start)
        {
            let (key, _) = item.map_err(|e| self.err(e))?;
            batch.delete_cf(self.cf(CF_CACHE_AGE), key);
        }
        for item in self.db.iterator_cf(self.cf(CF_CACHE), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.err(e))?;
            if let Some(s) = Stored::decode(&value) {
                batch.put_cf(self.cf(CF_CACHE_AGE), age_key(&key, &s), []);
            }
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// The cached bytes and the cap, when the cache is on.
    pub fn cache_usage(&self) -> Option<(u64, u64)> {
        let bytes = self.cache().as_ref()?.bytes;
        Some((bytes, self.cache_cap.load(Ordering::Relaxed)))
    }

    /// The cache's entry for `key`, if the block is cached.
    fn cached_entry(&self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_CACHE), key)
            .map_err(|e| self.err(e))?;
        Ok(value.and_then(|v| Stored::decode(&v)))
    }

    pub(super) fn is_cached(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.cached_entry(key)?.is_some())
    }

    /// Takes `key` out of the cache in `batch` if it is cached (its block stays);
    /// returns whether it was.
    pub(super) fn uncache(
        &self,
        batch: &mut WriteBatch,
        state: Option<&mut CacheState>,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        let Some(s) = self.cached_entry(key)? else {
            return Ok(false);
        };
        batch.delete_cf(self.cf(CF_CACHE), key);
        batch.delete_cf(self.cf(CF_CACHE_AGE), age_key(key, &s));
        if let Some(state) = state {
            state.bytes = state.bytes.saturating_sub(s.size);
        }
        Ok(true)
    }

    /// Fetched blocks are evictable cache, recorded with the owner of the drive they were
    /// fetched for; beyond the cap, the least recently used go. A block the store
    /// already holds (the drive's, a pin's, another drive's cache) stays what it was.
    pub(super) fn cache_blocks(
        &self,
        blocks: &[Block],
        owner: Option<PeerId>,
    ) -> Result<(), StoreError> {
        self.check_room(1)?;
        let mut cache = self.cache();
        let mut batch = WriteBatch::default();
        let mut seen = HashSet::new();
        let mut added = 0;
        for b in blocks {
            let key = b.cid().hash().to_bytes();
            if seen.contains(&key) || self.is_cached(&key)? || self.has_key(&key)? {
                continue;
            }
            let stored = Stored {
                stamp: cache.as_mut().map_or(0, |c| c.stamp()),
                size: b.len(),
                owner,
            };
            batch.put_cf(self.cf(CF_BLOCKS), &key, b.data());
            batch.put_cf(self.cf(CF_CACHE), &key, stored.encode());
            batch.put_cf(self.cf(CF_CACHE_AGE), age_key(&key, &stored), []);
            added += b.len();
            seen.insert(key);
        }
        self.db
            .write_opt(batch, &without_wal())
            .map_err(|e| self.err(e))?;
        match cache.as_mut() {
            Some(state) => {
                state.bytes += added;
                self.evict_from(state)
            }
            None => Ok(()),
        }
    }

    /// Records a read of the block under `key`, writing the batch of reads when full.
    pub(super) fn touch(&self, key: &[u8]) -> Result<(), StoreError> {
        let mut cache = self.cache();
        let Some(state) = cache.as_mut() else {
            return Ok(());
        };
        if state.touch(key) {
            self.write_touched(state)?;
        }
        Ok(())
    }

    /// Writes the stamps of cached blocks read since they were last written, so that
    /// eviction, and the next start, know them as recently used.
    pub(super) fn store_cache_order(&self) -> Result<(), StoreError> {
        match self.cache().as_mut() {
            Some(state) => self.write_touched(state),
            None => Ok(()),
        }
    }

    fn write_touched(&self, state: &mut CacheState) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for key in state.take_touched() {
            let Some(old) = self.cached_entry(&key)? else {
                continue;
            };
            let new = Stored {
                stamp: state.stamp(),
                ..old
            };
            batch.delete_cf(self.cf(CF_CACHE_AGE), age_key(&key, &old));
            batch.put_cf(self.cf(CF_CACHE_AGE), age_key(&key, &new), []);
            batch.put_cf(self.cf(CF_CACHE), &key, new.encode());
        }
        self.db
            .write_opt(batch, &without_wal())
            .map_err(|e| self.err(e))
    }

    fn evict(&self) -> Result<(), StoreError> {
        match self.cache().as_mut() {
            Some(state) => self.evict_from(state),
            None => Ok(()),
        }
    }

    /// Drops the least recently used blocks (big ones first) until the cache is a
    /// little below its cap, so that not every new block costs an eviction.
    fn evict_from(&self, state: &mut CacheState) -> Result<(), StoreError> {
        let cap = self.cache_cap.load(Ordering::Relaxed);
        if state.bytes <= cap {
            return Ok(());
        }
        self.write_touched(state)?;
        let mut excess = state.bytes - (cap - cap / 16);
        let mut freed = 0;
        let mut batch = WriteBatch::default();
        let mut ages = self.db.raw_iterator_cf(self.cf(CF_CACHE_AGE));
        ages.seek_to_first();
        while excess > 0 {
            let Some(age) = ages.key() else { break };
            let entry = match block_key_of(age) {
                Some(key) => self.cached_entry(key)?.map(|s| (key, s)),
                None => None,
            };
            match entry {
                Some((key, s)) if age_key(key, &s) == age => {
                    batch.delete_cf(self.cf(CF_BLOCKS), key);
                    batch.delete_cf(self.cf(CF_CACHE), key);
                    excess = excess.saturating_sub(s.size.max(1));
                    freed += s.size;
                }
                // An order entry no block matches any more: it goes too.
                _ => {}
            }
            batch.delete_cf(self.cf(CF_CACHE_AGE), age);
            ages.next();
        }
        ages.status().map_err(|e| self.err(e))?;
        drop(ages);
        self.db.write(batch).map_err(|e| self.err(e))?;
        state.bytes = state.bytes.saturating_sub(freed);
        Ok(())
    }

    /// Keeps a block for good (a pin claims it): stores it if it is not here, and takes
    /// it out of the evictable cache if it was there. A block of `owner`'s drive, or
    /// cached for a peer's, stays that peer's (served under its drive's rule); one
    /// already ours stays ours. Without the write-ahead log, like a bulk import:
    /// `finish_bulk` makes it durable.
    ///
    /// Returns whether this call claimed it (it was cache, or not here): what a
    /// cancelled pin claimed goes back to the cache (`recache`).
    pub fn keep_block(
        &self,
        cid: &Cid,
        data: &[u8],
        owner: Option<PeerId>,
    ) -> Result<bool, StoreError> {
        let mut cache = self.cache();
        let key = cid.hash().to_bytes();
        let mut batch = WriteBatch::default();
        let cached_for = self.cached_entry(&key)?.map(|s| s.owner);
        self.uncache(&mut batch, cache.as_mut(), &key)?;
        let here = cached_for.is_some() || self.has_key(&key)?;
        if !here {
            batch.put_cf(self.cf(CF_BLOCKS), &key, data);
        }
        // Present and not cache: ours already, or kept for a peer already.
        let whose = if here && cached_for.is_none() {
            None
        } else {
            owner.or(cached_for.flatten())
        };
        if let Some(peer) = whose {
            self.mark_kept(&mut batch, &key, &peer);
        }
        self.db
            .write_opt(batch, &without_wal())
            .map_err(|e| self.err(e))?;
        Ok(cached_for.is_some() || !here)
    }

    /// Gives blocks a pin claimed (`keep_block`) and no longer keeps back to the
    /// evictable cache, as `owner`'s drive's, least recently used of all. Skipped:
    /// `protected` ones (something else reaches them), those not here or cached
    /// already, and, for a peer's drive, those no longer kept for it (written as ours
    /// since). Returns the bytes given back.
    pub fn recache(
        &self,
        cids: &[Cid],
        owner: Option<PeerId>,
        protected: &HashSet<Vec<u8>>,
    ) -> Result<u64, StoreError> {
        let mut cache = self.cache();
        let Some(state) = cache.as_mut() else {
            return Ok(0);
        };
        let mut batch = WriteBatch::default();
        let mut seen = HashSet::new();
        let mut added = 0;
        for cid in cids {
            let key = cid.hash().to_bytes();
            if protected.contains(&key) || !seen.insert(key.clone()) || self.is_cached(&key)? {
                continue;
            }
            let kept_for = self.kept_for(&key)?;
            let still_theirs = match owner {
                Some(_) => kept_for == Some(owner),
                None => kept_for.is_none(),
            };
            if !still_theirs {
                continue;
            }
            let Some(size) = self.block_size(&key)? else {
                continue;
            };
            // Stamp 0: the oldest, evicted before what anyone read.
            let stored = Stored {
                stamp: 0,
                size,
                owner,
            };
            self.unkeep(&mut batch, &key)?;
            batch.put_cf(self.cf(CF_CACHE), &key, stored.encode());
            batch.put_cf(self.cf(CF_CACHE_AGE), age_key(&key, &stored), []);
            added += size;
        }
        self.db
            .write_opt(batch, &without_wal())
            .map_err(|e| self.err(e))?;
        state.bytes += added;
        self.evict_from(state)?;
        Ok(added)
    }

    fn block_size(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_BLOCKS), key)
            .map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.len() as u64))
    }

    /// Whose the block stored under `key` is: cache (and whose drive it was fetched
    /// for) or our own.
    pub(super) fn holding_key(&self, key: &[u8]) -> Result<Holding, StoreError> {
        Ok(match self.cached_entry(key)? {
            Some(s) => Holding::Fetched(s.owner),
            None => match self.kept_for(key)? {
                Some(owner) => Holding::Fetched(owner),
                None => Holding::Own,
            },
        })
    }
}
