//! The persistent block store: one RocksDB database per repo.
//!
//! Column families (DESIGN §3): `blocks` (multihash → bytes), `heads`, `pins`, `cache`,
//! `cache_age`, `kept`, `meta`. Values of a chunk's size go to BlobDB blob files, so compaction
//! moves keys, not megabytes.
//!
//! - [`cache`]: the evictable cache of fetched blocks.
//! - [`pins`]: roots that must stay.
//! - [`kept`]: whose drive the blocks a pin kept came from.
//! - [`reclaim`]: giving deleted blocks' space back.

mod cache;
mod kept;
mod pins;
mod reclaim;
pub use reclaim::keep_reclaiming;
mod sealed;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cid::Cid;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use libp2p_identity::PeerId;

use super::cache::{age_key, CacheState, Stored};
use super::{Blocks, HeadStore, Holding, StoreError};
use crate::block::Block;

pub const CF_BLOCKS: &str = "blocks";
pub const CF_HEADS: &str = "heads";
pub const CF_PINS: &str = "pins";
pub const CF_CACHE: &str = "cache";
pub const CF_CACHE_AGE: &str = "cache_age";
pub const CF_KEPT: &str = "kept";
pub const CF_META: &str = "meta";
/// Private folders' memo: plaintext multihash → what it was sealed as (`seal::tree`).
pub const CF_SEALED: &str = "sealed";
const FAMILIES: [&str; 8] = [
    CF_BLOCKS,
    CF_HEADS,
    CF_PINS,
    CF_CACHE,
    CF_CACHE_AGE,
    CF_KEPT,
    CF_META,
    CF_SEALED,
];

/// Values at least this big live in blob files: every leaf, few directory nodes.
const MIN_BLOB_SIZE: u64 = 16 * 1024;
/// Values sit in the memtable until a flush moves them to blob files, so this (times
/// two: one memtable filling while one flushes) is most of the daemon's memory.
const BLOCKS_MEMTABLE: usize = 32 << 20;
/// The other families' memtables: keys and small values only.
const SMALL_MEMTABLE: usize = 8 << 20;

pub struct RocksStore {
    db: DB,
    path: PathBuf,
    /// The cache's state, once the daemon turns the cache on. Every change to the
    /// `cache` families happens under this lock, so an eviction can never delete a block
    /// that the drive or a pin has just claimed.
    cache: Mutex<Option<CacheState>>,
    cache_cap: AtomicU64,
    /// Free space to leave on the disk; 0 leaves it to RocksDB.
    min_free: AtomicU64,
    /// While an online sweep runs: the keys written as our own since it began. It must
    /// not delete them, whatever it found reachable (it may not have seen their user).
    /// Taken after `cache` where both are held.
    written: Mutex<Option<HashSet<Vec<u8>>>>,
    /// Bytes written as our own since the last sweep began: what may be garbage now.
    own_written: AtomicU64,
    /// Imports and pins hold this shared until their roots are pinned; a sweep takes
    /// it exclusively, so blocks whose pin is not written yet are never swept.
    unpinned: RwLock<()>,
    /// Held while garbage is collected: one collection at a time.
    reclaiming: Mutex<()>,
}

/// Keeps an online sweep's guard up: blocks written as our own meanwhile stay.
pub struct SweepGuard<'a> {
    store: &'a RocksStore,
    _unpinned: RwLockWriteGuard<'a, ()>,
}

impl Drop for SweepGuard<'_> {
    fn drop(&mut self) {
        *self.store.written() = None;
    }
}

impl RocksStore {
    /// Opens (creating if asked) the database at `path`. The caller holds the repo lock.
    pub fn open(path: &Path, create: bool) -> Result<RocksStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(create);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(4 << 20);
        opts.set_keep_log_file_num(4);
        // RocksDB's default (FADV_RANDOM) turns off the kernel's readahead, but a file's
        // leaves sit in blob files in order: sequential reads want readahead.
        opts.set_advise_random_on_open(false);
        // Fetched blocks and their cache entries are written without the log, across
        // families: flushing the families together keeps a crash from keeping one
        // without the other.
        opts.set_atomic_flush(true);
        // RocksDB reserves room for each write-ahead log and table file ahead of
        // writing it (a fresh WAL takes ~70 MiB). Free space must mean what it says
        // for `min_disk_free` to work, so reserve nothing.
        let opts = opts
            .get_options_from_string("allow_fallocate=false")
            .map_err(|e| db_error(path, e))?;
        let families = FAMILIES
            .iter()
            .map(|&name| ColumnFamilyDescriptor::new(name, family_options(name)));
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|e| db_error(path, e))?;
        Ok(RocksStore {
            db,
            path: path.to_path_buf(),
            cache: Mutex::new(None),
            cache_cap: AtomicU64::new(u64::MAX),
            min_free: AtomicU64::new(0),
            written: Mutex::new(None),
            own_written: AtomicU64::new(0),
            unpinned: RwLock::new(()),
            reclaiming: Mutex::new(()),
        })
    }

    /// Refuses writes of data (`DiskFull`) once the disk has less than `bytes` free.
    /// RocksDB that runs out of space itself stops writing until it is reopened; this
    /// keeps it clear of that, and writes work again as soon as there is room.
    pub fn set_min_free(&self, bytes: u64) {
        self.min_free.store(bytes, Ordering::Relaxed);
    }

    /// `DiskFull` when less than `min_free / divisor` is left. Commits (small: directory
    /// nodes and a head) may go deeper into the reserve than file data, so that a
    /// delete can still be committed on a full disk.
    fn check_room(&self, divisor: u64) -> Result<(), StoreError> {
        let reserve = self.min_free.load(Ordering::Relaxed) / divisor;
        if reserve == 0 {
            return Ok(());
        }
        let free = crate::disk::available(&self.path).map_err(|source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        // Blocks still in memtables reach the disk at the next flush: count them as
        // used already.
        let unflushed = self
            .db
            .property_int_value_cf(self.cf(CF_BLOCKS), "rocksdb.cur-size-all-mem-tables")
            .ok()
            .flatten()
            .unwrap_or(0);
        let free = free.saturating_sub(unflushed);
        if free < reserve {
            return Err(StoreError::DiskFull(format!(
                "{}: {free} bytes free, min_disk_free is {reserve}",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn written(&self) -> MutexGuard<'_, Option<HashSet<Vec<u8>>>> {
        // Every change under the lock is one insert or a swap of the whole set.
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Held by an import or a pin from its first block until its pin is written: no
    /// sweep runs meanwhile.
    pub fn hold_off_sweeps(&self) -> RwLockReadGuard<'_, ()> {
        self.unpinned.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while what a cancelled pin claimed goes back to the cache: no import or
    /// pin is under way (they would find those blocks kept and not claim them). `None`
    /// while one is.
    pub fn no_pins_under_way(&self) -> Option<std::sync::RwLockWriteGuard<'_, ()>> {
        match self.unpinned.try_write() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Starts an online sweep: from now on, blocks written as our own are kept from
    /// it. `None` while an import or pin is under way and `wait` is false.
    pub fn begin_sweep(&self, wait: bool) -> Option<SweepGuard<'_>> {
        let unpinned = if wait {
            self.unpinned.write().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.unpinned.try_write() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        };
        *self.written() = Some(HashSet::new());
        self.own_written.store(0, Ordering::Relaxed);
        Some(SweepGuard {
            store: self,
            _unpinned: unpinned,
        })
    }

    /// Bytes written as our own since the last sweep began.
    pub fn own_written(&self) -> u64 {
        self.own_written.load(Ordering::Relaxed)
    }

    /// Deletes those of `keys` that are our own and were not written since the sweep
    /// began (`_guard`); cached blocks are the cache's to judge. Returns the blocks
    /// and bytes deleted.
    pub fn sweep_own(
        &self,
        keys: &[Vec<u8>],
        _guard: &SweepGuard,
    ) -> Result<(u64, u64), StoreError> {
        // Held, not used: a cache insert or eviction waits for the delete.
        let _cache = self.cache();
        let written = self.written();
        let mut batch = WriteBatch::default();
        let (mut blocks, mut bytes) = (0, 0);
        for key in keys {
            if written.as_ref().is_some_and(|w| w.contains(key)) || self.is_cached(key)? {
                continue;
            }
            if let Some(v) = self
                .db
                .get_pinned_cf(self.cf(CF_BLOCKS), key)
                .map_err(|e| self.err(e))?
            {
                bytes += v.len() as u64;
                blocks += 1;
                batch.delete_cf(self.cf(CF_BLOCKS), key);
            }
        }
        // Under both locks: a write of one of these keys waits for the delete, then
        // writes the block again.
        self.db.write(batch).map_err(|e| self.err(e))?;
        Ok((blocks, bytes))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    fn err(&self, e: rocksdb::Error) -> StoreError {
        db_error(&self.path, e)
    }

    /// Every stored head record (ours and the followed peers'), by name.
    pub fn heads(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.db
            .iterator_cf(self.cf(CF_HEADS), IteratorMode::Start)
            .map(|item| {
                let (k, v) = item.map_err(|e| self.err(e))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    /// Writes our own blocks (the drive's, an import's) in one atomic batch, plus
    /// `extra`; they stop being evictable cache if they were.
    fn write_own(
        &self,
        blocks: &[Block],
        extra: impl FnOnce(&mut WriteBatch),
        wo: &WriteOptions,
    ) -> Result<(), StoreError> {
        let mut cache = self.cache();
        let mut written = self.written();
        let mut batch = WriteBatch::default();
        let mut seen = HashSet::new();
        for b in blocks {
            let key = b.cid().hash().to_bytes();
            batch.put_cf(self.cf(CF_BLOCKS), &key, b.data());
            self.own_written.fetch_add(b.len(), Ordering::Relaxed);
            // A block that was cache stops being evictable, and one kept for a peer's
            // drive becomes ours (once, if it comes twice).
            if seen.insert(key.clone()) {
                self.uncache(&mut batch, cache.as_mut(), &key)?;
                self.unkeep(&mut batch, &key)?;
            }
            if let Some(w) = written.as_mut() {
                w.insert(key);
            }
        }
        extra(&mut batch);
        if batch.is_empty() {
            return Ok(());
        }
        // Written under the sweep's lock: a sweep deletes a key before this write or
        // knows it was written.
        let done = self.db.write_opt(batch, wo).map_err(|e| self.err(e));
        drop(written);
        done
    }

    fn has_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        let cf = self.cf(CF_BLOCKS);
        if !self.db.key_may_exist_cf(cf, key) {
            return Ok(false);
        }
        Ok(self
            .db
            .get_pinned_cf(cf, key)
            .map_err(|e| self.err(e))?
            .is_some())
    }

    /// Calls `each` with the key (multihash bytes) of every stored block.
    pub fn for_each_block_key(
        &self,
        mut each: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_BLOCKS));
        it.seek_to_first();
        while let Some(key) = it.key() {
            each(key)?;
            it.next();
        }
        it.status().map_err(|e| self.err(e))
    }

    /// Deletes blocks by key (and their cache entries); returns the bytes they held.
    pub fn delete_keys(&self, keys: &[Vec<u8>]) -> Result<u64, StoreError> {
        let mut cache = self.cache();
        let mut batch = WriteBatch::default();
        let mut bytes = 0;
        for key in keys {
            if let Some(v) = self
                .db
                .get_pinned_cf(self.cf(CF_BLOCKS), key)
                .map_err(|e| self.err(e))?
            {
                bytes += v.len() as u64;
            }
            self.uncache(&mut batch, cache.as_mut(), key)?;
            self.unkeep(&mut batch, key)?;
            batch.delete_cf(self.cf(CF_BLOCKS), key);
        }
        self.db.write(batch).map_err(|e| self.err(e))?;
        Ok(bytes)
    }

    /// Deletes every cached (fetched, evictable) block whose key is not in `live`, the
    /// way an eviction does: under the cache lock, so a block the drive, an import or a
    /// pin has claimed meanwhile is no longer cached and stays. Our own blocks are never
    /// touched, which is what makes this safe while the daemon runs. Returns the blocks
    /// and bytes deleted.
    pub fn drop_cached_except(
        &self,
        live: &std::collections::HashSet<Vec<u8>>,
    ) -> Result<(u64, u64), StoreError> {
        let mut cache = self.cache();
        let mut batch = WriteBatch::default();
        let (mut blocks, mut bytes) = (0, 0);
        for item in self.db.iterator_cf(self.cf(CF_CACHE), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.err(e))?;
            if live.contains(&*key) {
                continue;
            }
            batch.delete_cf(self.cf(CF_BLOCKS), &key);
            batch.delete_cf(self.cf(CF_CACHE), &key);
            blocks += 1;
            if let Some(s) = Stored::decode(&value) {
                batch.delete_cf(self.cf(CF_CACHE_AGE), age_key(&key, &s));
                bytes += s.size;
            }
        }
        self.db.write(batch).map_err(|e| self.err(e))?;
        if let Some(state) = cache.as_mut() {
            state.bytes = state.bytes.saturating_sub(bytes);
        }
        Ok((blocks, bytes))
    }
}

impl HeadStore for RocksStore {
    fn head(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_HEADS), name.as_bytes())
            .map_err(|e| self.err(e))
    }

    fn commit(&self, blocks: &[Block], name: &str, record: &[u8]) -> Result<(), StoreError> {
        self.check_room(2)?;
        let heads = self.cf(CF_HEADS);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.write_own(
            blocks,
            |batch| batch.put_cf(heads, name.as_bytes(), record),
            &wo,
        )
    }
}

fn family_options(name: &str) -> Options {
    let mut o = Options::default();
    // The small families' memtables: RocksDB's default (64 MiB, two of them) would let
    // the bookkeeping of a big peer listing hold hundreds of MiB before a flush.
    o.set_write_buffer_size(SMALL_MEMTABLE);
    if name == CF_BLOCKS {
        o.set_enable_blob_files(true);
        o.set_min_blob_size(MIN_BLOB_SIZE);
        o.set_blob_file_size(256 << 20);
        // No garbage collection in ordinary compactions: each one that rewrites the
        // level holding the keys (all of it: the keys are hashes) would copy every live
        // blob of the oldest files again, a cost that grows with the store. `reclaim`
        // collects when there is garbage to collect.
        o.set_enable_blob_gc(false);
        o.set_write_buffer_size(BLOCKS_MEMTABLE);
    }
    if name == CF_BLOCKS || name == CF_CACHE || name == CF_KEPT {
        // Asked about every block written or read; most are not there.
        let mut t = BlockBasedOptions::default();
        t.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&t);
    }
    o
}

fn db_error(path: &Path, e: rocksdb::Error) -> StoreError {
    let message = e.into_string();
    if message.contains("No space left on device") {
        return StoreError::DiskFull(path.display().to_string());
    }
    StoreError::Db {
        path: path.display().to_string(),
        message,
    }
}

impl Blocks for RocksStore {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let key = cid.hash().to_bytes();
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_BLOCKS), &key)
            .map_err(|e| self.err(e))?;
        if v.is_some() {
            self.touch(&key)?;
        }
        Ok(v.map(|v| v.to_vec()))
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        let key = cid.hash().to_bytes();
        // Asking RocksDB for a blob reads its whole value; a cache entry is small.
        if self.is_cached(&key)? {
            return Ok(true);
        }
        self.has_key(&key)
    }

    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(durable);
        self.write_own(blocks, |_| {}, &wo)?;
        if durable {
            // Also covers earlier unsynced batches, and an empty final batch.
            self.db.flush_wal(true).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Bulk writes skip the write-ahead log: the data reaches disk once, in the blob
    /// files, instead of twice. `finish_bulk` flushes the memtable, which makes them
    /// durable; a crash before that loses only an unfinished import's blocks.
    fn put_bulk(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.check_room(1)?;
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.write_own(blocks, |_| {}, &wo)
    }

    fn finish_bulk(&self) -> Result<(), StoreError> {
        self.store_cache_order()?;
        // The cache family too: its entries are written without the log beside the
        // blocks, and a pin's removals of them must survive a crash.
        self.db
            .flush_cfs_opt(
                &[
                    self.cf(CF_BLOCKS),
                    self.cf(CF_CACHE),
                    self.cf(CF_CACHE_AGE),
                    self.cf(CF_KEPT),
                ],
                &rocksdb::FlushOptions::default(),
            )
            .map_err(|e| self.err(e))?;
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    fn put_cached(&self, blocks: &[Block], owner: Option<PeerId>) -> Result<(), StoreError> {
        self.cache_blocks(blocks, owner)
    }

    fn get_held(&self, cid: &Cid) -> Result<Option<(Vec<u8>, Holding)>, StoreError> {
        let Some(data) = self.get(cid)? else {
            return Ok(None);
        };
        Ok(Some((data, self.holding_key(&cid.hash().to_bytes())?)))
    }

    fn is_pin_root(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.is_pinned(cid)
    }

    fn private(&self, cid: &Cid) -> Result<bool, StoreError> {
        let cf = self.cf(CF_SEALED);
        let key = cid.hash().to_bytes();
        Ok(self.db.key_may_exist_cf(cf, &key) && self.sealed_memo(cid)?.is_some())
    }

    fn holding(&self, cid: &Cid) -> Result<Option<Holding>, StoreError> {
        let key = cid.hash().to_bytes();
        if !self.has_key(&key)? {
            return Ok(None);
        }
        self.holding_key(&key).map(Some)
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        let cf = self.cf(CF_BLOCKS);
        let mut batch = WriteBatch::default();
        for c in cids {
            let key = c.hash().to_bytes();
            self.unkeep(&mut batch, &key)?;
            batch.delete_cf(cf, key);
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }
}
