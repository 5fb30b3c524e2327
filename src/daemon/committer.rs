//! The committer: a thread that commits the drive when changes pause, so that what is
//! written reaches the store (and the peers, as a new head) without anyone calling
//! fsync. It never dies of a failing or panicking commit; the session guard stops it.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::error;

use crate::drive::Drive;
use crate::net::NetHandle;
use crate::vfs::{panic_message, FsError};

/// Changes are committed (and announced) once they pause this long...
const COMMIT_QUIET: Duration = Duration::from_millis(100);
/// ...and at least this often while they go on. fsync and unmount commit at once.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the committer looks for changes.
const COMMIT_POLL: Duration = Duration::from_millis(25);

/// Commits changes when they pause (or every `COMMIT_INTERVAL` while they go on) until
/// the returned sender is dropped, and announces each new head, including those fsync
/// committed in between. A failing or panicking commit is logged and retried; the
/// committer itself never stops early.
pub(super) fn start(drive: Arc<Drive>, net: NetHandle) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let mut announced = drive.head().map_or(0, |h| h.head().seq);
    let mut retry_after = Instant::now();
    let handle = std::thread::spawn(move || loop {
        match stopped.recv_timeout(COMMIT_POLL) {
            Err(RecvTimeoutError::Timeout) => {
                let due = drive.commit_due(COMMIT_QUIET, COMMIT_INTERVAL);
                if due && Instant::now() >= retry_after {
                    let commit =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drive.commit()))
                            .unwrap_or_else(|p| Err(FsError::Bug(panic_message(&p))));
                    if let Err(e) = commit {
                        error!("commit failed (will retry): {e}");
                        retry_after = Instant::now() + COMMIT_INTERVAL;
                    }
                }
                if let Some(head) = drive.head().filter(|h| h.head().seq > announced) {
                    announced = head.head().seq;
                    net.publish(head);
                }
            }
            _ => return,
        }
    });
    (stop, handle)
}
