//! Block storage behind a small trait, so the format code never knows where blocks live.
//!
//! - `Blocks`: get / has / put / delete, keyed by CID (stored by multihash, so a CIDv0
//!   and a CIDv1 of the same DAG-PB bytes are one block).
//! - `BlockSink`: where builders put finished blocks; `Batcher` turns many puts into a
//!   few large write batches.
//! - `MemoryBlocks`: in memory, for pure format tests.
//! - `rocks`: the persistent store in RocksDB (feature `rocksdb`, on by default).

#[cfg(feature = "rocksdb")]
pub mod rocks;

use std::collections::HashMap;
use std::sync::Mutex;

use cid::Cid;

use crate::block::{Block, BlockError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("repo {path} is in use by pid {pid} (is `peerfs mount` running?)")]
    InUse { path: String, pid: String },
    #[error("no repo at {0}: run `peerfs init` first")]
    NoRepo(String),
    #[error("database {path}: {message}")]
    Db { path: String, message: String },
    #[error("no space left on the repo's disk ({0})")]
    DiskFull(String),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub trait Blocks: Send + Sync {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;
    fn has(&self, cid: &Cid) -> Result<bool, StoreError>;
    /// Writes all of `blocks` or none; with `durable` they are on disk before it returns.
    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError>;
    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError>;
    /// Writes blocks of a bulk import; they may stay volatile until `finish_bulk`.
    fn put_bulk(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.put_many(blocks, false)
    }
    /// Makes every earlier `put_bulk` durable.
    fn finish_bulk(&self) -> Result<(), StoreError> {
        self.put_many(&[], true)
    }
}

/// Receives the blocks a builder makes, in the order it makes them.
pub trait BlockSink {
    fn put(&mut self, block: Block) -> Result<(), StoreError>;
}

/// Discards blocks: for computing CIDs only (`add --only-hash`).
pub struct NullSink;

impl BlockSink for NullSink {
    fn put(&mut self, _block: Block) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Batches puts into bulk writes of about `BATCH_BYTES`; `finish` makes them durable.
pub struct Batcher<'s> {
    store: &'s dyn Blocks,
    pending: Vec<Block>,
    bytes: u64,
    /// Every CID written, for callers that must undo a failed import.
    written: Option<Vec<Cid>>,
}

/// Large enough that per-batch costs vanish, small enough to stay a few chunks of memory.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

impl<'s> Batcher<'s> {
    pub fn new(store: &'s dyn Blocks) -> Self {
        Batcher {
            store,
            pending: Vec::new(),
            bytes: 0,
            written: None,
        }
    }

    /// Also remembers every CID written (see `written`).
    pub fn recording(store: &'s dyn Blocks) -> Self {
        Batcher {
            written: Some(Vec::new()),
            ..Batcher::new(store)
        }
    }

    fn flush_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.store.put_bulk(&self.pending)?;
        if let Some(w) = &mut self.written {
            w.extend(self.pending.iter().map(|b| *b.cid()));
        }
        self.pending.clear();
        self.bytes = 0;
        Ok(())
    }

    /// Drops what is pending and returns what already reached the store.
    pub fn abandon(mut self) -> Vec<Cid> {
        self.pending.clear();
        self.written.take().unwrap_or_default()
    }

    /// Writes what is pending and makes everything written durable.
    pub fn finish(mut self) -> Result<Vec<Cid>, StoreError> {
        self.flush_pending()?;
        self.store.finish_bulk()?;
        Ok(self.written.take().unwrap_or_default())
    }
}

impl BlockSink for Batcher<'_> {
    fn put(&mut self, block: Block) -> Result<(), StoreError> {
        self.bytes += block.len();
        self.pending.push(block);
        if self.bytes >= BATCH_BYTES {
            self.flush_pending()?;
        }
        Ok(())
    }
}

/// Blocks in a hash map.
#[derive(Default)]
pub struct MemoryBlocks {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBlocks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        // A poisoned map is still a consistent map: every operation is one insert or remove.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Blocks for MemoryBlocks {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&cid.hash().to_bytes()).cloned())
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.lock().contains_key(&cid.hash().to_bytes()))
    }

    fn put_many(&self, blocks: &[Block], _durable: bool) -> Result<(), StoreError> {
        let mut map = self.lock();
        for b in blocks {
            map.insert(b.cid().hash().to_bytes(), b.data().to_vec());
        }
        Ok(())
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        let mut map = self.lock();
        for c in cids {
            map.remove(&c.hash().to_bytes());
        }
        Ok(())
    }
}

impl BlockSink for &MemoryBlocks {
    fn put(&mut self, block: Block) -> Result<(), StoreError> {
        self.put_many(std::slice::from_ref(&block), false)
    }
}
