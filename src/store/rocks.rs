//! The persistent block store: one RocksDB database per repo.
//!
//! Column families (DESIGN §3): `blocks` (multihash → bytes), `heads`, `pins`, `cache`,
//! `meta`. Values of a chunk's size go to BlobDB blob files, so compaction moves
//! keys, not megabytes.

use std::path::{Path, PathBuf};

use cid::Cid;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use super::{Blocks, HeadStore, StoreError};
use crate::block::Block;

pub const CF_BLOCKS: &str = "blocks";
pub const CF_HEADS: &str = "heads";
pub const CF_PINS: &str = "pins";
pub const CF_CACHE: &str = "cache";
pub const CF_META: &str = "meta";
const FAMILIES: [&str; 5] = [CF_BLOCKS, CF_HEADS, CF_PINS, CF_CACHE, CF_META];

/// Values at least this big live in blob files: every leaf, few directory nodes.
const MIN_BLOB_SIZE: u64 = 16 * 1024;

pub struct RocksStore {
    db: DB,
    path: PathBuf,
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
        let families = FAMILIES
            .iter()
            .map(|&name| ColumnFamilyDescriptor::new(name, family_options(name)));
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|e| db_error(path, e))?;
        Ok(RocksStore {
            db,
            path: path.to_path_buf(),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    fn err(&self, e: rocksdb::Error) -> StoreError {
        db_error(&self.path, e)
    }

    /// Records `cid` as a root that must stay (what `add` and `import` produce).
    pub fn pin(&self, cid: &Cid) -> Result<(), StoreError> {
        self.db
            .put_cf(self.cf(CF_PINS), cid.to_bytes(), [])
            .map_err(|e| self.err(e))
    }

    /// Writes `blocks` in one atomic batch.
    fn write_blocks(&self, blocks: &[Block], wo: &WriteOptions) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_BLOCKS);
        let mut batch = WriteBatch::default();
        for b in blocks {
            batch.put_cf(cf, b.cid().hash().to_bytes(), b.data());
        }
        self.db.write_opt(batch, wo).map_err(|e| self.err(e))
    }
}

impl HeadStore for RocksStore {
    fn head(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_HEADS), name.as_bytes())
            .map_err(|e| self.err(e))
    }

    fn commit(&self, blocks: &[Block], name: &str, record: &[u8]) -> Result<(), StoreError> {
        let cf = self.cf(CF_BLOCKS);
        let mut batch = WriteBatch::default();
        for b in blocks {
            batch.put_cf(cf, b.cid().hash().to_bytes(), b.data());
        }
        batch.put_cf(self.cf(CF_HEADS), name.as_bytes(), record);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.err(e))
    }
}

fn family_options(name: &str) -> Options {
    let mut o = Options::default();
    if name == CF_BLOCKS {
        o.set_enable_blob_files(true);
        o.set_min_blob_size(MIN_BLOB_SIZE);
        o.set_blob_file_size(256 << 20);
        o.set_enable_blob_gc(true);
        o.set_write_buffer_size(64 << 20);
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
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_BLOCKS), cid.hash().to_bytes())
            .map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        let cf = self.cf(CF_BLOCKS);
        let key = cid.hash().to_bytes();
        if !self.db.key_may_exist_cf(cf, &key) {
            return Ok(false);
        }
        Ok(self
            .db
            .get_pinned_cf(cf, &key)
            .map_err(|e| self.err(e))?
            .is_some())
    }

    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(durable);
        self.write_blocks(blocks, &wo)?;
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
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.write_blocks(blocks, &wo)
    }

    fn finish_bulk(&self) -> Result<(), StoreError> {
        self.db
            .flush_cf(self.cf(CF_BLOCKS))
            .map_err(|e| self.err(e))?;
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        let cf = self.cf(CF_BLOCKS);
        let mut batch = WriteBatch::default();
        for c in cids {
            batch.delete_cf(cf, c.hash().to_bytes());
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }
}
