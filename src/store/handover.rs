//! Blocks read ahead of a reader and handed to it in memory, so a block that was just
//! read from disk or fetched from a peer is not read back from the store. Each block is
//! handed over once; beyond the capacity the oldest are dropped (a reader that stopped
//! leaves no more than that behind).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use cid::Cid;

pub struct Handover {
    capacity: usize,
    ready: Mutex<Ready>,
}

/// Blocks waiting, oldest first.
#[derive(Default)]
struct Ready {
    blocks: HashMap<Cid, Vec<u8>>,
    order: VecDeque<Cid>,
}

impl Handover {
    pub fn new(capacity: usize) -> Handover {
        Handover {
            capacity,
            ready: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ready> {
        // Every operation leaves the map consistent.
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, cid: Cid, bytes: Vec<u8>) {
        let mut ready = self.lock();
        if ready.blocks.insert(cid, bytes).is_none() {
            ready.order.push_back(cid);
        }
        while ready.order.len() > self.capacity {
            if let Some(old) = ready.order.pop_front() {
                ready.blocks.remove(&old);
            }
        }
    }

    /// The block `cid`, if it is waiting; it is handed over once.
    pub fn take(&self, cid: &Cid) -> Option<Vec<u8>> {
        let mut ready = self.lock();
        let bytes = ready.blocks.remove(cid)?;
        ready.order.retain(|c| c != cid);
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, RAW};
    use cid::Version;

    #[test]
    fn blocks_are_handed_over_once_and_the_oldest_go_first() {
        let blocks: Vec<Block> = (0..6u8)
            .map(|i| Block::hash(Version::V1, RAW, vec![i; 10]))
            .collect();
        let handover = Handover::new(4);
        for b in &blocks {
            handover.insert(*b.cid(), b.data().to_vec());
        }
        assert_eq!(handover.take(blocks[0].cid()), None, "dropped as oldest");
        assert_eq!(handover.take(blocks[1].cid()), None, "dropped as oldest");
        assert_eq!(handover.take(blocks[5].cid()), Some(vec![5; 10]));
        assert_eq!(handover.take(blocks[5].cid()), None, "handed over once");
        handover.insert(*blocks[0].cid(), vec![0; 10]);
        for b in &blocks[2..5] {
            assert!(handover.take(b.cid()).is_some());
        }
        assert_eq!(handover.take(blocks[0].cid()), Some(vec![0; 10]));
    }
}
