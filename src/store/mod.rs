//! Block storage behind a small trait, so the format code never knows where blocks live.
//!
//! - `Blocks`: get / has / put / delete, keyed by CID (stored by multihash, so a CIDv0
//!   and a CIDv1 of the same DAG-PB bytes are one block).
//! - `BlockSink`: where builders put finished blocks; `write_behind` gives one whose
//!   blocks a second thread writes in large batches.
//! - `MemoryBlocks`: in memory, for pure format tests.
//! - `rocks`: the persistent store in RocksDB (feature `rocksdb`, on by default).
//! - `cache`: the least-recently-used index of evictable blocks fetched from peers.
//! - `handover`: blocks read ahead, handed to their reader in memory.
//! - `readahead`: threads that read a sequential reader's next blocks early.

#[cfg(feature = "rocksdb")]
pub mod rocks;

pub mod cache;
pub mod handover;
pub mod readahead;

use std::collections::HashMap;
use std::sync::Mutex;

use cid::Cid;
use libp2p_identity::PeerId;

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
    #[error("the block writer stopped")]
    WriterStopped,
    /// A block that is not here and that no peer delivered.
    #[error("block {cid}: {why}")]
    Unavailable { cid: Cid, why: Unavailable },
    /// A private folder's block that does not open: a wrong key or tampered bytes.
    #[error("private folder block {0} does not open: a wrong key or tampered bytes")]
    Unsealed(Cid),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Why a remote block did not arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no connected peer has it")]
    NoPeer,
    #[error("the peers that have it do not let us read it")]
    Refused,
    #[error("no peer delivered it within the fetch timeout")]
    Timeout,
    #[error("the network is not running")]
    Stopped,
}

/// Whose a block held here is, which decides whom it may be passed on to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// The drive's, an import's, or a pin's of something that was not a peer's:
    /// served under my `readers`.
    Own,
    /// Fetched for a peer's drive (`None`: whose is not known): evictable cache, or
    /// kept under a pin. Served under that drive's rule, never under mine.
    Fetched(Option<PeerId>),
}

pub trait Blocks: Send + Sync {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;
    fn has(&self, cid: &Cid) -> Result<bool, StoreError>;
    /// Writes all of `blocks` or none; with `durable` they are on disk before it returns.
    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError>;
    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError>;
    /// A hint: `cids` are about to be read. A store that fetches asks for those it
    /// lacks all at once, so that a walk's next blocks arrive together.
    fn ahead(&self, cids: &[Cid]) {
        let _ = cids;
    }
    /// Writes blocks of a bulk import; they may stay volatile until `finish_bulk`.
    fn put_bulk(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.put_many(blocks, false)
    }
    /// Makes every earlier `put_bulk` durable.
    fn finish_bulk(&self) -> Result<(), StoreError> {
        self.put_many(&[], true)
    }
    /// Keeps blocks fetched from peers for `owner`'s drive: evictable, unless the store
    /// already had them. A store without a cache keeps them as its own.
    fn put_cached(&self, blocks: &[Block], owner: Option<PeerId>) -> Result<(), StoreError> {
        let _ = owner;
        self.put_bulk(blocks)
    }
    /// Block `cid` and whose it is.
    fn get_held(&self, cid: &Cid) -> Result<Option<(Vec<u8>, Holding)>, StoreError> {
        Ok(self.get(cid)?.map(|b| (b, Holding::Own)))
    }
    /// Whose block `cid` is, if it is here (`get_held` without the bytes).
    fn holding(&self, cid: &Cid) -> Result<Option<Holding>, StoreError> {
        Ok(self.get_held(cid)?.map(|(_, h)| h))
    }
    /// Whether `cid` is the root of a pin. A store without pins has none.
    fn is_pin_root(&self, cid: &Cid) -> Result<bool, StoreError> {
        let _ = cid;
        Ok(false)
    }
    /// Whether `cid` is the plaintext of a private folder, which is never passed on
    /// (only its sealed form is). A store without private folders has none.
    fn private(&self, cid: &Cid) -> Result<bool, StoreError> {
        let _ = cid;
        Ok(false)
    }
    /// Copies the bytes of block `cid` from `offset` into `out` and returns the block's
    /// length (`None` if it is missing). A block too short for the range copies nothing:
    /// the caller compares the length with what it expected.
    fn read_part(&self, cid: &Cid, offset: u64, out: &mut [u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.get(cid)?.map(|bytes| copy_part(&bytes, offset, out)))
    }
}

/// `read_part` on bytes in memory.
pub fn copy_part(bytes: &[u8], offset: u64, out: &mut [u8]) -> u64 {
    let start = offset as usize;
    if let Some(part) = bytes.get(start..start.saturating_add(out.len())) {
        out.copy_from_slice(part);
    }
    bytes.len() as u64
}

/// A block store that also keeps named heads (a drive's current root record), each
/// written in one atomic batch with the blocks it names.
pub trait HeadStore: Blocks {
    fn head(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `blocks` and sets head `name` to `record` atomically and durably.
    fn commit(&self, blocks: &[Block], name: &str, record: &[u8]) -> Result<(), StoreError>;
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

/// Large enough that per-batch costs vanish, small enough to stay a few chunks of memory.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Batches queued for the writer thread: the importer runs at most this far ahead.
const QUEUED_BATCHES: usize = 2;

/// Runs `work` with a sink whose blocks a second thread writes to `store` in bulk
/// batches, so hashing (here) and storing (there) use both cores; then makes every block
/// durable. A store error ends `work` at its next put and is the error returned.
pub fn write_behind<T, E: From<StoreError>>(
    store: &dyn Blocks,
    work: impl FnOnce(&mut dyn BlockSink) -> Result<T, E>,
) -> Result<T, E> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Block>>(QUEUED_BATCHES);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || rx.iter().try_for_each(|batch| store.put_bulk(&batch)));
        let mut sink = QueueSink {
            tx,
            pending: Vec::new(),
            bytes: 0,
        };
        let result = work(&mut sink);
        let sent = sink.send_pending();
        drop(sink);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written?;
        let value = result?;
        sent?;
        store.finish_bulk()?;
        Ok(value)
    })
}

struct QueueSink {
    tx: std::sync::mpsc::SyncSender<Vec<Block>>,
    pending: Vec<Block>,
    bytes: u64,
}

impl QueueSink {
    fn send_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        // A closed queue means the writer failed; `write_behind` reports its error.
        self.tx
            .send(std::mem::take(&mut self.pending))
            .map_err(|_| StoreError::WriterStopped)
    }
}

impl BlockSink for QueueSink {
    fn put(&mut self, block: Block) -> Result<(), StoreError> {
        self.bytes += block.len();
        self.pending.push(block);
        if self.bytes >= BATCH_BYTES {
            self.send_pending()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose disk fills up after `room` bulk batches.
    struct FillsUp {
        inner: MemoryBlocks,
        room: Mutex<usize>,
    }

    impl Blocks for FillsUp {
        fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(cid)
        }
        fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
            self.inner.has(cid)
        }
        fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(StoreError::DiskFull("test".into()));
            }
            *room -= 1;
            self.inner.put_many(blocks, durable)
        }
        fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
            self.inner.delete_many(cids)
        }
    }

    fn megabyte(i: u32) -> Block {
        let mut data = vec![0u8; 1 << 20];
        data[..4].copy_from_slice(&i.to_le_bytes());
        Block::hash(cid::Version::V1, crate::block::RAW, data)
    }

    #[test]
    fn write_behind_stores_everything_and_returns_the_value() {
        let store = MemoryBlocks::default();
        let v = write_behind(&store, |sink| {
            (0..40).try_for_each(|i| sink.put(megabyte(i)))?;
            Ok::<_, StoreError>(7)
        })
        .unwrap();
        assert_eq!(v, 7);
        assert_eq!(store.len(), 40);
    }

    #[test]
    fn a_failing_writer_stops_the_work_with_its_own_error() {
        let store = FillsUp {
            inner: MemoryBlocks::default(),
            room: Mutex::new(1),
        };
        let mut puts = 0;
        let err = write_behind(&store, |sink| {
            for i in 0..400 {
                sink.put(megabyte(i))?;
                puts += 1;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::DiskFull(_)), "{err}");
        assert!(puts < 400, "the importer stopped early ({puts} puts)");
    }
}
