//! Read-ahead for the drive's files. The kernel sends FUSE reads of at most 128 KiB, so a
//! sequential reader of a cold file would otherwise wait on the disk for each chunk in
//! turn. When a file is read sequentially, a few threads read its next chunks' blocks
//! from the store first: that brings them into the OS page cache, and the reader's own
//! read of each chunk finds it there while the disk works on the ones after it.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;

use cid::Cid;
use tracing::debug;

use crate::store::Blocks;

/// Threads reading ahead: enough to keep a disk's queue busy, few enough to leave the
/// reader's own reads room.
const THREADS: usize = 2;
/// Chunks queued at most; a full queue drops new requests instead of blocking a reader.
const QUEUE: usize = 64;

pub struct ReadAhead {
    queue: SyncSender<Cid>,
}

impl ReadAhead {
    /// Starts the threads; they end when this is dropped.
    pub fn start(store: Arc<dyn Blocks>) -> ReadAhead {
        let (queue, jobs) = sync_channel::<Cid>(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..THREADS {
            let store = Arc::clone(&store);
            let jobs = Arc::clone(&jobs);
            let spawned = thread::Builder::new()
                .name(format!("read-ahead-{i}"))
                .spawn(move || warm(&*store, &jobs));
            if let Err(e) = spawned {
                // Reads still work, only without read-ahead.
                debug!("no read-ahead thread: {e}");
            }
        }
        ReadAhead { queue }
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

fn warm(store: &dyn Blocks, jobs: &Mutex<Receiver<Cid>>) {
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(cid) = next else {
            return;
        };
        // The bytes are not wanted here, only the disk read; a failure shows up when
        // the reader itself gets to this block.
        let _ = store.get(&cid);
    }
}
