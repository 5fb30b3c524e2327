//! The mutable drive: a UnixFS tree that changes in place, as a filesystem needs.
//!
//! - `Drive` (here): the drive's state and locks, opening it, what a sweep must keep.
//!   Its operations are spread over the modules below, one concern each:
//! - [`names`]: lookup, listing, mkdir, create, unlink, rename: entries by name.
//! - [`open`]: open files: handles, read, write, flush, release.
//! - [`attrs`]: `setattr`: mode, times, size.
//! - [`commit`]: batched commits: a snapshot taken under the lock, new directory blocks
//!   made outside it (HAMTs edited along one hash path), one batch with the new head.
//! - [`tree`]: the inode table: entries read from the store on first use, and the names
//!   that changed since the last commit.
//! - [`file`]: one file's contents as a chunk-granular copy-on-write overlay; holes
//!   are runs.
//! - [`leaves`]: a stored file DAG read back as its leaves and holes.
//! - [`staging`]: new blocks waiting for the commit that makes them reachable.
//!
//! Locking: a file's content lock is taken before the drive's state lock, never after.
//! A commit holds `commit_lock` throughout and the state lock only to take its snapshot
//! and to install the result. A file's DAG is rebuilt when its writer flushes, fsyncs or
//! closes it ("published"), so a commit sees each file as of its last close and never
//! half a write.

mod attrs;
mod commit;
pub mod file;
mod leaves;
mod names;
mod open;
pub mod staging;
mod tree;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cid::Cid;
use libp2p_identity::Keypair;

/// The names the daemon knows the drive's errors and caught panics by.
use crate::head::{SignedHead, OWN_HEAD, PLAIN_HEAD};
use crate::seal::publish::Publisher;
use crate::store::readahead::ReadAhead;
use crate::store::{Blocks, HeadStore, StoreError};
use crate::unixfs::build::{Built, ZeroRuns};
use crate::unixfs::{load_node, ImportOptions};
use crate::vfs::ino::{DRIVE_ROOT, FIRST_DRIVE_INO};
use crate::vfs::FsError;
use file::{FileContent, MAX_FILE_SIZE};
use staging::Staging;
use tree::{Body, Dir, Inode, State};

/// What `peerfs status` reports about the drive.
#[derive(Clone, Debug)]
pub struct DriveStatus {
    pub root: Option<Cid>,
    pub seq: u64,
    pub last_commit: Option<SystemTime>,
    pub open_files: usize,
    pub dirty: bool,
}

/// A finished commit.
#[derive(Clone, Debug)]
pub struct Commit {
    pub head: SignedHead,
}

pub struct Drive {
    state: Mutex<State>,
    /// One commit at a time; held across the commit's I/O, which the state lock is not.
    commit_lock: Mutex<()>,
    staging: Staging,
    opts: ImportOptions,
    /// The zero subtrees holes are made of, hashed once.
    zeros: ZeroRuns,
    key: Keypair,
    /// Written into every head: may holders of my blocks pass them on?
    open: AtomicBool,
    /// Written into every head: my signed profile, so it goes where my head goes.
    profile: Mutex<Option<crate::profile::SignedProfile>>,
    read_ahead: ReadAhead,
    /// Seals private folders into the published root; unset, the root is published
    /// as it is.
    publisher: std::sync::OnceLock<Arc<Publisher>>,
}

impl Drive {
    /// Opens the drive at its last committed head, or a new empty one.
    pub fn load(
        store: Arc<dyn HeadStore>,
        opts: ImportOptions,
        key: Keypair,
    ) -> Result<Drive, FsError> {
        let read_ahead = ReadAhead::start(Arc::clone(&store) as Arc<dyn crate::store::Blocks>);
        let staging = Staging::new(store);
        let zeros = ZeroRuns::new(&opts, MAX_FILE_SIZE);
        let verified = |name: &str| -> Result<Option<SignedHead>, StoreError> {
            match staging.store().head(name)? {
                Some(bytes) => Ok(Some(SignedHead::verify(&bytes).map_err(|e| {
                    StoreError::Db {
                        path: format!("heads/{name}"),
                        message: e.to_string(),
                    }
                })?)),
                None => Ok(None),
            }
        };
        let head = verified(OWN_HEAD)?;
        // With private folders, the mount shows the plaintext root (as new as the
        // published one, or newer when a crash came between the two).
        let plain = verified(PLAIN_HEAD)?
            .filter(|p| head.as_ref().is_none_or(|h| p.head().seq >= h.head().seq));
        let root = match plain.as_ref().or(head.as_ref()) {
            Some(h) => {
                let cid = h.head().root;
                let node = load_node(&staging, &cid)?;
                if !node.is_dir() {
                    return Err(FsError::NotADirectory);
                }
                Inode::stored(
                    DRIVE_ROOT,
                    b"",
                    &node,
                    Built { cid, tsize: 0 },
                    &staging,
                    &zeros,
                )
            }
            None => Inode::empty_root(),
        };
        let state = State {
            inodes: [(DRIVE_ROOT, root)].into(),
            next_ino: FIRST_DRIVE_INO,
            handles: Default::default(),
            next_fh: 1,
            seq: plain.as_ref().or(head.as_ref()).map_or(0, |h| h.head().seq),
            root: plain.as_ref().or(head.as_ref()).map(|h| h.head().root),
            last_commit: head
                .as_ref()
                .map(|h| UNIX_EPOCH + Duration::from_millis(h.head().time_ms)),
            head,
            dirty_since: None,
            last_change: None,
        };
        Ok(Drive {
            state: Mutex::new(state),
            commit_lock: Mutex::new(()),
            staging,
            opts,
            zeros,
            key,
            open: AtomicBool::new(false),
            profile: Mutex::new(None),
            read_ahead,
            publisher: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the table consistent before anything can fail.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the drive holds that an online sweep must keep: the committed root, each
    /// entry's DAG as held in memory (published, not committed yet), the stored form
    /// of directories being changed (commits edit it), and the stored chunks of open
    /// files. Blocks the drive writes after this are the sweep's guard's to keep.
    pub fn live_roots(&self) -> Vec<Cid> {
        let (mut roots, contents) = {
            // Between commits: a commit installs what it built under this lock.
            let _no_commit = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
            let st = self.lock();
            let mut roots: Vec<Cid> = st.root.into_iter().collect();
            let mut contents: Vec<Arc<Mutex<FileContent>>> = Vec::new();
            for inode in st.inodes.values() {
                match &inode.body {
                    Body::File(f) => {
                        roots.push(f.built.cid);
                        contents.extend(f.content.iter().cloned());
                    }
                    Body::Symlink { built, .. } => roots.push(built.cid),
                    Body::Dir(Dir::Stored(d)) => roots.push(d.built.cid),
                    Body::Dir(Dir::Loaded(d)) => {
                        roots.extend(d.stored.as_ref().map(|s| s.built.cid))
                    }
                }
            }
            contents.extend(st.handles.values().map(|h| Arc::clone(&h.content)));
            (roots, contents)
        };
        // Outside both locks: a writer holds its contents while it waits for them.
        for c in contents {
            roots.extend(c.lock().unwrap_or_else(|e| e.into_inner()).stored_leaves());
        }
        roots
    }

    /// The drive's blocks as a sweep must read them: staged ones first, then the store.
    pub fn blocks(&self) -> &dyn Blocks {
        &self.staging
    }

    /// Seals private folders in every commit from now on.
    pub fn set_publisher(&self, publisher: Arc<Publisher>) {
        let _ = self.publisher.set(publisher);
    }

    pub fn publisher(&self) -> Option<&Arc<Publisher>> {
        self.publisher.get()
    }

    /// Carries `profile` in future heads (`republish` makes one at once).
    pub fn set_profile(&self, profile: Option<crate::profile::SignedProfile>) {
        *self.profile.lock().unwrap_or_else(|e| e.into_inner()) = profile;
    }

    /// The profile future heads carry.
    pub fn profile(&self) -> Option<crate::profile::SignedProfile> {
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Says in future heads whether everyone may read the drive (see `Head::open`).
    pub fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::Relaxed);
    }

    /// The newest committed head, if the drive was ever committed.
    pub fn head(&self) -> Option<SignedHead> {
        self.lock().head.clone()
    }

    pub fn status(&self) -> DriveStatus {
        let st = self.lock();
        DriveStatus {
            root: st.root,
            seq: st.seq,
            last_commit: st.last_commit,
            open_files: st.handles.len(),
            dirty: st.changed(),
        }
    }
}

#[cfg(test)]
mod tests;
