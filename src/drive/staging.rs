//! Where the drive's new blocks wait. Full file chunks go to the store at once (bulk, no
//! WAL); small blocks (file roots, partial last chunks) are staged in memory until the
//! next commit, which writes the ones the new tree reaches in its single batch and drops
//! the rest (earlier versions of files rewritten within one commit interval).
//!
//! Blocks are staged under the drive's lock, as part of the change that uses them, and a
//! commit takes its snapshot under that lock too: so every block staged before the
//! snapshot (an earlier epoch) is either in the snapshot's tree or superseded, and every
//! block staged after it waits for the next commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cid::Cid;

use crate::block::{Block, DAG_PB};
use crate::store::{BlockSink, Blocks, HeadStore, StoreError};
use crate::unixfs::dagpb::PbNode;

pub struct Staging {
    store: Arc<dyn HeadStore>,
    pending: Mutex<Pending>,
    /// Chunks were written without the WAL since the last commit: flush before the head.
    bulk_written: AtomicBool,
}

/// Staged blocks, each with the epoch it was staged in.
#[derive(Default)]
struct Pending {
    blocks: HashMap<Cid, (Block, u64)>,
    epoch: u64,
}

impl Pending {
    fn stage(&mut self, block: Block) {
        let epoch = self.epoch;
        self.blocks.insert(*block.cid(), (block, epoch));
    }
}

impl Staging {
    pub fn new(store: Arc<dyn HeadStore>) -> Staging {
        Staging {
            store,
            pending: Mutex::default(),
            bulk_written: AtomicBool::new(false),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Every operation on the map is a single insert, remove or read.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store(&self) -> &dyn HeadStore {
        &*self.store
    }

    /// Stores a full file chunk now, so a big write never sits in memory.
    pub fn put_chunk(&self, block: Block) -> Result<(), StoreError> {
        self.store.put_bulk(std::slice::from_ref(&block))?;
        self.bulk_written.store(true, Ordering::Release);
        Ok(())
    }

    pub fn is_pending(&self, cid: &Cid) -> bool {
        self.pending().blocks.contains_key(cid)
    }

    /// Starts a commit's snapshot: returns the epoch it covers; blocks staged from now
    /// on belong to the next one.
    pub fn begin_commit(&self) -> u64 {
        let mut pending = self.pending();
        pending.epoch += 1;
        pending.epoch - 1
    }

    /// Copies the staged blocks reachable from `root` into `out`, each once (they stay
    /// staged until the commit succeeds). A hole's zero subtrees are linked many times
    /// over: they are visited once.
    pub fn collect(&self, root: &Cid, out: &mut Vec<Block>) {
        let pending = self.pending();
        let mut seen = HashSet::new();
        let mut todo = vec![*root];
        while let Some(cid) = todo.pop() {
            let Some((block, _)) = pending.blocks.get(&cid) else {
                continue;
            };
            if !seen.insert(cid) {
                continue;
            }
            if cid.codec() == DAG_PB {
                if let Ok(node) = PbNode::decode(block.data()) {
                    todo.extend(node.links.iter().map(|l| l.cid));
                }
            }
            out.push(block.clone());
        }
    }

    /// Writes `blocks` and the head record in one durable batch; forgets what was staged
    /// up to `epoch` (from `begin_commit`).
    pub fn commit(
        &self,
        blocks: &[Block],
        head: &str,
        record: &[u8],
        epoch: u64,
    ) -> Result<(), StoreError> {
        if self.bulk_written.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.store.finish_bulk() {
                self.bulk_written.store(true, Ordering::Release);
                return Err(e);
            }
        }
        self.store.commit(blocks, head, record)?;
        self.pending().blocks.retain(|_, (_, e)| *e > epoch);
        Ok(())
    }
}

impl Blocks for Staging {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((b, _)) = self.pending().blocks.get(cid) {
            return Ok(Some(b.data().to_vec()));
        }
        self.store.get(cid)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.is_pending(cid) || self.store.has(cid)?)
    }

    fn put_many(&self, blocks: &[Block], _durable: bool) -> Result<(), StoreError> {
        let mut pending = self.pending();
        for b in blocks {
            pending.stage(b.clone());
        }
        Ok(())
    }

    fn delete_many(&self, _cids: &[Cid]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A sink that stages what a builder makes.
pub struct StageSink<'a>(pub &'a Staging);

impl BlockSink for StageSink<'_> {
    fn put(&mut self, block: Block) -> Result<(), StoreError> {
        self.0.pending().stage(block);
        Ok(())
    }
}
