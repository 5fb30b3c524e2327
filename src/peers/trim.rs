//! Keeping the view's memory flat. The kernel forgets an inode only when it evicts it,
//! which it does under memory pressure, so an `ls -R` of a huge drive would otherwise
//! keep a node here for every entry it passed. Past a limit, the least recently used
//! directories are handed back to the kernel to drop (an entry invalidation): it then
//! forgets them and everything below that nothing holds open, and `forget` frees their
//! listings. A thread of its own sends the invalidations, never a FUSE handler: the
//! kernel may wait on a handler's answer before it can process one.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::{Invalidation, PeerView};

/// Trimming takes the table down to this share of its limit, so that it runs once per
/// many listings, not on each.
const TRIM_TO_PERCENT: usize = 80;

pub(super) struct Trim {
    /// Most nodes the table holds before it asks the kernel to drop some.
    limit: usize,
    wanted: Mutex<bool>,
    wake: Condvar,
}

impl Trim {
    pub(super) fn new(limit: usize) -> Trim {
        Trim {
            limit,
            wanted: Mutex::new(false),
            wake: Condvar::new(),
        }
    }
}

impl PeerView {
    /// The table holds `nodes` now: wakes `next_trim` if that is past the limit.
    pub(super) fn note_size(&self, nodes: usize) {
        if nodes > self.trim.limit {
            *self.trim.wanted.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.trim.wake.notify_one();
        }
    }

    /// Waits, at most `timeout`, until the table is past its limit, and returns the
    /// entries the kernel should drop to bring it back under (none on timeout).
    pub fn next_trim(&self, timeout: Duration) -> Vec<Invalidation> {
        {
            let wanted = self.trim.wanted.lock().unwrap_or_else(|e| e.into_inner());
            let (mut wanted, _) = self
                .trim
                .wake
                .wait_timeout_while(wanted, timeout, |w| !*w)
                .unwrap_or_else(|e| e.into_inner());
            if !*wanted {
                return Vec::new();
            }
            *wanted = false;
        }
        let mut st = self.lock();
        let target = self.trim.limit * TRIM_TO_PERCENT / 100;
        st.least_used_dirs(target)
            .into_iter()
            .filter_map(|ino| {
                let (parent, name) = st.entry_of(ino)?;
                Some(Invalidation::Entry {
                    parent,
                    name: name.to_vec(),
                })
            })
            .collect()
    }
}
