//! Deleting, while the daemon runs, the blocks the drive no longer reaches. Every
//! rewrite of a file leaves its old chunks behind; without this the store would grow
//! with every write until an offline `peerfs gc`.
//!
//! Offline, `pin::collect_garbage` judges alone; here the drive's memory counts too.
//!
//! A sweep walks everything that is kept (the drive's whole tree, pins, followed
//! peers' heads), so it runs only once as much has been written since the last one as
//! the store holds (and at least `sweep_after`): its cost stays in proportion to the
//! writes that made the garbage.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tracing::{info, warn};

use crate::drive::Drive;
use crate::net::peerbook::PeerBook;
use crate::pin::{self, GcReport, PinError};
use crate::store::rocks::RocksStore;

/// How often the sweeper looks at how much was written.
const POLL: Duration = Duration::from_secs(5);

/// One sweep of the cache and our own blocks. `None` when an import or pin is under
/// way and `wait` is false.
pub fn sweep(
    drive: &Drive,
    store: &RocksStore,
    book: &Mutex<PeerBook>,
    wait: bool,
) -> Result<Option<GcReport>, PinError> {
    if wait {
        // Asked for by a user: what was just rewritten goes now, not after the next
        // commit (the committed head still names the old version until then).
        drive.commit().map_err(PinError::Drive)?;
    }
    let followed: Vec<_> = {
        let book = book.lock().unwrap_or_else(|e| e.into_inner());
        book.entries().iter().filter_map(|e| e.peer_id()).collect()
    };
    pin::collect_garbage_online(
        store,
        drive.blocks(),
        &followed,
        || drive.live_roots(),
        wait,
    )
}

/// Sweeps whenever enough was written, until the daemon lets go of the drive.
pub fn start(
    drive: Weak<Drive>,
    store: Weak<RocksStore>,
    book: Arc<Mutex<PeerBook>>,
    db: PathBuf,
    after: u64,
) {
    std::thread::spawn(move || {
        let mut due_at = after.max(dir_size(&db));
        loop {
            std::thread::sleep(POLL);
            let (Some(drive), Some(store)) = (drive.upgrade(), store.upgrade()) else {
                return;
            };
            if store.own_written() < due_at {
                continue;
            }
            let written = store.own_written();
            match sweep(&drive, &store, &book, false) {
                Ok(Some(r)) => {
                    let size = dir_size(&db);
                    due_at = after.max(size);
                    info!(
                        "swept {} blocks ({} bytes) no longer reached, after {written} bytes written; the store is {size} bytes now",
                        r.removed, r.removed_bytes
                    );
                }
                // An import or pin is under way: next time.
                Ok(None) => {}
                Err(e) => warn!("sweeping old blocks failed (will retry): {e}"),
            }
        }
    });
}

/// The bytes of the files in `dir` (the store's database), not counting subdirectories.
pub(super) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}
