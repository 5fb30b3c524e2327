//! Read-ahead from the store, for the drive's files and for peers' cached ones. The kernel
//! sends FUSE reads of at most 128 KiB, so a sequential reader of a cold file would
//! otherwise wait on the disk for each chunk in turn. When a file is read sequentially, a few threads read its next chunks' blocks
//! from the store first and hand them over in memory: the reader takes each chunk ready,
//! while the disk works on the ones after it.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use cid::Cid;
use tracing::debug;

use crate::store::handover::Handover;
use crate::store::Blocks;

/// Threads reading ahead: enough to keep a disk's queue busy, few enough to leave the
/// reader's own reads room.
const THREADS: usize = 4;
/// Chunks queued at most; a full queue drops new requests instead of blocking a reader.
const QUEUE: usize = 64;
/// Blocks read ahead and not yet taken, at most.
const READY: usize = 32;

pub struct ReadAhead {
    queue: SyncSender<Cid>,
    ready: Arc<Handover>,
}

impl ReadAhead {
    /// Starts the threads; they end when this is dropped.
    pub fn start(store: Arc<dyn Blocks>) -> ReadAhead {
        ReadAhead::handing_to(store, Arc::new(Handover::new(READY)))
    }

    /// Starts the threads, which put what they read in `ready` (shared with others
    /// that hand blocks to the same readers).
    pub fn handing_to(store: Arc<dyn Blocks>, ready: Arc<Handover>) -> ReadAhead {
        let (queue, jobs) = sync_channel::<Cid>(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..THREADS {
            let store = Arc::clone(&store);
            let jobs = Arc::clone(&jobs);
            let ready = Arc::clone(&ready);
            let spawned = thread::Builder::new()
                .name(format!("read-ahead-{i}"))
                .spawn(move || fetch(&*store, &jobs, &ready));
            if let Err(e) = spawned {
                // Reads still work, only without read-ahead.
                debug!("no read-ahead thread: {e}");
            }
        }
        ReadAhead { queue, ready }
    }

    /// The block `cid` if it was read ahead; it is handed over once.
    pub fn take(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.ready.take(cid)
    }

    /// Asks for `cids` to be read soon; never waits.
    pub fn request(&self, cids: impl IntoIterator<Item = Cid>) {
        for cid in cids {
            match self.queue.try_send(cid) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

fn fetch(store: &dyn Blocks, jobs: &Mutex<Receiver<Cid>>, ready: &Handover) {
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(cid) = next else {
            return;
        };
        // A failure shows up when the reader itself gets to this block.
        if let Ok(Some(bytes)) = store.get(&cid) {
            ready.insert(cid, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, RAW};
    use crate::store::MemoryBlocks;
    use cid::Version;
    use std::time::{Duration, Instant};

    fn take_within(ahead: &ReadAhead, cid: &Cid) -> Option<Vec<u8>> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(b) = ahead.take(cid) {
                return Some(b);
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    #[test]
    fn blocks_read_ahead_are_handed_over_once_and_bounded() {
        let store = Arc::new(MemoryBlocks::default());
        let blocks: Vec<Block> = (0..READY as u8 + 8)
            .map(|i| Block::hash(Version::V1, RAW, vec![i; 100]))
            .collect();
        store.put_many(&blocks, false).unwrap();
        let ahead = ReadAhead::start(store);

        ahead.request([*blocks[0].cid()]);
        assert_eq!(take_within(&ahead, blocks[0].cid()), Some(vec![0; 100]));
        assert_eq!(ahead.take(blocks[0].cid()), None, "handed over once");

        // More than fit: the oldest are dropped, the newest wait.
        ahead.request(blocks[1..].iter().map(|b| *b.cid()));
        let last = blocks.last().unwrap();
        assert!(take_within(&ahead, last.cid()).is_some());
        let kept = blocks[1..].iter().filter(|b| ahead.take(b.cid()).is_some());
        assert!(kept.count() < READY);
    }
}
