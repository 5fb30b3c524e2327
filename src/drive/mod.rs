//! The mutable drive: a UnixFS tree that changes in place, as a filesystem needs.
//!
//! - `Drive` (here): the filesystem's operations over the inode table, open files.
//! - [`tree`]: the inode table: entries read from the store on first use, and the names
//!   that changed since the last commit.
//! - [`commit`]: batched commits: a snapshot taken under the lock, new directory blocks
//!   made outside it (HAMTs edited along one hash path), one batch with the new head.
//! - [`file`]: one file's contents as a chunk-granular copy-on-write overlay; holes
//!   are runs.
//! - [`staging`]: new blocks waiting for the commit that makes them reachable.
//!
//! Locking: a file's content lock is taken before the drive's state lock, never after.
//! A commit holds `commit_lock` throughout and the state lock only to take its snapshot
//! and to install the result. A file's DAG is rebuilt when its writer flushes, fsyncs or
//! closes it ("published"), so a commit sees each file as of its last close and never
//! half a write.

mod commit;
pub mod file;
pub mod staging;
mod tree;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cid::Cid;
use libp2p_identity::Keypair;

/// The names the daemon knows the drive's errors and caught panics by.
pub use crate::vfs::{panic_message, FsError as DriveError};
pub use file::MAX_FILE_SIZE;

use crate::head::{Head, SignedHead, OWN_HEAD};
use crate::store::readahead::ReadAhead;
use crate::store::{Blocks, HeadStore, StoreError};
use crate::unixfs::build::{build_symlink, Built, ZeroRuns};
use crate::unixfs::read::list;
use crate::unixfs::{load_node, ImportOptions};
use crate::vfs::ino::{DRIVE_ROOT, FIRST_DRIVE_INO};
use crate::vfs::{to_mtime, Attr, FsError, Kind, Seek, SetAttr};
use file::FileContent;
use staging::{StageSink, Staging};
use tree::{meta_at, Body, Dir, FileBody, Inode, LoadedDir, State};

/// How far ahead of a sequential reader chunks are read from the store.
const READ_AHEAD_BYTES: u64 = 8 << 20;
/// Longest file name, in bytes, as on Linux filesystems.
const MAX_NAME: usize = 255;
/// Permission bits a write by someone else takes away (as the kernel's rule for
/// `file_remove_privs`): set-user-ID and set-group-ID.
const PRIVILEGE_BITS: u32 = 0o6000;

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
    read_ahead: ReadAhead,
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
        let head = match staging.store().head(OWN_HEAD)? {
            Some(bytes) => Some(SignedHead::verify(&bytes).map_err(|e| StoreError::Db {
                path: "heads/self".into(),
                message: e.to_string(),
            })?),
            None => None,
        };
        let root = match &head {
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
            seq: head.as_ref().map_or(0, |h| h.head().seq),
            root: head.as_ref().map(|h| h.head().root),
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
            read_ahead,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the table consistent before anything can fail.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        inode.lookups += 1;
        Ok(inode.attr(ino))
    }

    /// The drive's root as the mount's `drive` entry.
    pub fn lookup_root(&self) -> Result<Attr, FsError> {
        let mut st = self.lock();
        let root = st.inodes.get_mut(&DRIVE_ROOT).ok_or(FsError::NotFound)?;
        root.lookups += 1;
        Ok(root.attr(DRIVE_ROOT))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
        }
        st.reap(ino);
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let st = self.lock();
        Ok(st.inodes.get(&ino).ok_or(FsError::NotFound)?.attr(ino))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        match &self.lock().inodes.get(&ino).ok_or(FsError::NotFound)?.body {
            Body::Symlink { target, .. } => Ok(target.clone()),
            _ => Err(FsError::Invalid),
        }
    }

    /// The entries of a directory with their attributes, in name order.
    pub fn list(&self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>, FsError> {
        let mut st = self.lock();
        self.load_dir(&mut st, ino)?;
        let st = &*st;
        let dir = match st.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::Dir(Dir::Loaded(d))) => d,
            Some(_) => return Err(FsError::NotADirectory),
            None => return Err(FsError::NotFound),
        };
        Ok(dir
            .children
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), st.inodes.get(c)?.attr(*c))))
            .collect())
    }

    /// Counts a lookup the kernel took through readdirplus.
    pub fn remember(&self, ino: u64) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.lookups += 1;
        }
    }

    pub fn parent(&self, ino: u64) -> u64 {
        self.lock()
            .inodes
            .get(&ino)
            .map_or(DRIVE_ROOT, |i| i.parent)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> Result<Attr, FsError> {
        let mut st = self.lock();
        self.insert(&mut st, Inode::new_dir(parent, name, mode))
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> Result<Attr, FsError> {
        let mut st = self.lock();
        let now = SystemTime::now();
        let mut sink = StageSink(&self.staging);
        let built = build_symlink(target, meta_at(0o777, now), &self.opts, &mut sink)?;
        self.insert(
            &mut st,
            Inode::new_symlink(parent, name, target, now, built),
        )
    }

    /// Creates an empty file and opens it; returns its attributes and a handle.
    pub fn create(&self, parent: u64, name: &[u8], mode: u32) -> Result<(Attr, u64), FsError> {
        let mut st = self.lock();
        let now = SystemTime::now();
        let mut content = FileContent::empty(&self.opts);
        let built = content.build(&self.staging, &self.opts, &self.zeros, meta_at(mode, now))?;
        let content = Arc::new(Mutex::new(content));
        let file = FileBody {
            size: 0,
            allocated: 0,
            built,
            content: Some(Arc::clone(&content)),
            open: 1,
        };
        let attr = self.insert(&mut st, Inode::new_file(parent, name, mode, now, file))?;
        let fh = st.new_handle(attr.ino, content);
        Ok((attr, fh))
    }

    /// Links a new entry into its parent (named in the inode).
    fn insert(&self, st: &mut State, inode: Inode) -> Result<Attr, FsError> {
        check_name(&inode.name)?;
        let (parent, name) = (inode.parent, inode.name.clone());
        if self.child(st, parent, &name)?.is_some() {
            return Err(FsError::Exists);
        }
        let ino = st.new_ino();
        let attr = inode.attr(ino);
        let is_dir = attr.kind == Kind::Directory;
        st.inodes.insert(ino, inode);
        st.loaded_dir(parent)
            .ok_or(FsError::NotADirectory)?
            .add(&name, ino, is_dir);
        st.entry_changed(parent, &name, true);
        Ok(attr)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        if st.inodes[&ino].kind() == Kind::Directory {
            return Err(FsError::IsADirectory);
        }
        self.remove_entry(&mut st, parent, name, ino);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        self.check_empty_dir(&mut st, ino)?;
        self.remove_entry(&mut st, parent, name, ino);
        Ok(())
    }

    fn remove_entry(&self, st: &mut State, parent: u64, name: &[u8], ino: u64) {
        let is_dir = st
            .inodes
            .get(&ino)
            .is_some_and(|i| i.kind() == Kind::Directory);
        if let Some(dir) = st.loaded_dir(parent) {
            dir.remove(name, is_dir);
        }
        st.detach(ino);
        st.entry_changed(parent, name, true);
    }

    fn check_empty_dir(&self, st: &mut State, ino: u64) -> Result<(), FsError> {
        self.load_dir(st, ino)?;
        match &st.inodes[&ino].body {
            Body::Dir(Dir::Loaded(d)) if d.children.is_empty() => Ok(()),
            Body::Dir(_) => Err(FsError::NotEmpty),
            _ => Err(FsError::NotADirectory),
        }
    }

    /// Moves `name` to `new_name`, atomically replacing what was there (unless
    /// `no_replace`), as rename(2) does.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        no_replace: bool,
    ) -> Result<(), FsError> {
        check_name(new_name)?;
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        let is_dir = st.inodes[&ino].kind() == Kind::Directory;
        // A directory cannot move into itself or below itself.
        let mut up = new_parent;
        loop {
            if up == ino {
                return Err(FsError::Invalid);
            }
            if up == DRIVE_ROOT {
                break;
            }
            up = st.inodes.get(&up).map_or(DRIVE_ROOT, |i| i.parent);
        }
        if let Some(old) = self.child(&mut st, new_parent, new_name)? {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            match (is_dir, st.inodes[&old].kind() == Kind::Directory) {
                (true, true) => self.check_empty_dir(&mut st, old)?,
                (true, false) => return Err(FsError::NotADirectory),
                (false, true) => return Err(FsError::IsADirectory),
                (false, false) => {}
            }
            st.detach(old);
        }
        if let Some(dir) = st.loaded_dir(parent) {
            dir.remove(name, is_dir);
        }
        st.loaded_dir(new_parent)
            .ok_or(FsError::NotADirectory)?
            .add(new_name, ino, is_dir);
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_vec();
            inode.ctime = SystemTime::now();
        }
        st.entry_changed(parent, name, true);
        st.entry_changed(new_parent, new_name, true);
        Ok(())
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> Result<Attr, FsError> {
        let content = {
            let mut st = self.lock();
            let kind = st.inodes.get(&ino).ok_or(FsError::NotFound)?.kind();
            match kind {
                Kind::Directory if set.size.is_some() => return Err(FsError::IsADirectory),
                Kind::Symlink if set.size.is_some() => return Err(FsError::Invalid),
                Kind::Directory => {
                    // Only a loaded directory records changes.
                    self.load_dir(&mut st, ino)?;
                    apply_meta(st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?, set);
                    st.dir_changed(ino);
                    return Ok(st.inodes[&ino].attr(ino));
                }
                Kind::Symlink => {
                    let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
                    apply_meta(inode, set);
                    let meta = inode.meta();
                    if let Body::Symlink { target, built } = &mut inode.body {
                        let mut sink = StageSink(&self.staging);
                        *built = build_symlink(target, meta, &self.opts, &mut sink)?;
                    }
                    let (parent, name, linked) = (inode.parent, inode.name.clone(), inode.linked);
                    if linked {
                        st.entry_changed(parent, &name, false);
                    }
                    return Ok(st.inodes[&ino].attr(ino));
                }
                Kind::File => self.file_content(&mut st, ino)?,
            }
        };
        // A file: its root carries the metadata, so it is rebuilt now.
        let mut content = content.lock().unwrap_or_else(|e| e.into_inner());
        let resized = set
            .size
            .map_or(Ok(()), |size| content.set_len(&self.staging, size));
        let mut st = self.lock();
        let done = resized.and_then(|()| {
            let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
            apply_meta(inode, set);
            if set.size.is_some() && set.mtime.is_none() {
                inode.touch();
            }
            self.publish(&mut st, ino, &mut content)
        });
        if let Some(Body::File(f)) = st.inodes.get_mut(&ino).map(|i| &mut i.body) {
            if f.open == 0 && !content.changed {
                f.content = None;
            }
        }
        done?;
        Ok(st.inodes[&ino].attr(ino))
    }

    /// The open contents of file `ino`, or its stored contents loaded now.
    fn file_content(&self, st: &mut State, ino: u64) -> Result<Arc<Mutex<FileContent>>, FsError> {
        let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        let Body::File(f) = &mut inode.body else {
            return Err(FsError::IsADirectory);
        };
        if let Some(c) = &f.content {
            return Ok(Arc::clone(c));
        }
        let loaded = FileContent::load(&self.staging, &self.opts, &self.zeros, &f.built.cid)?;
        // Installed at once, so that a file has one contents however many handles and
        // setattrs use it meanwhile; dropped again when nobody holds it open.
        let content = Arc::new(Mutex::new(loaded));
        f.content = Some(Arc::clone(&content));
        Ok(content)
    }

    /// Opens a file; `truncate` empties it first (O_TRUNC).
    pub fn open(&self, ino: u64, truncate: bool) -> Result<u64, FsError> {
        let (fh, content) = {
            let mut st = self.lock();
            let content = self.file_content(&mut st, ino)?;
            let Some(Body::File(f)) = st.inodes.get_mut(&ino).map(|i| &mut i.body) else {
                return Err(FsError::IsADirectory);
            };
            f.open += 1;
            (st.new_handle(ino, Arc::clone(&content)), content)
        };
        if !truncate {
            return Ok(fh);
        }
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.set_len(&self.staging, 0)?;
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.touch();
            if let Body::File(f) = &mut inode.body {
                f.size = 0;
                f.allocated = 0;
            }
        }
        Ok(fh)
    }

    fn handle(&self, fh: u64) -> Result<(u64, Arc<Mutex<FileContent>>), FsError> {
        let st = self.lock();
        let h = st.handles.get(&fh).ok_or(FsError::BadHandle)?;
        Ok((h.ino, Arc::clone(&h.content)))
    }

    pub fn read(&self, fh: u64, offset: u64, len: u32) -> Result<Vec<u8>, FsError> {
        let (_, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        let data = c.read(&self.staging, Some(&self.read_ahead), offset, len)?;
        let ahead = c.read_ahead(READ_AHEAD_BYTES);
        drop(c);
        self.read_ahead.request(ahead);
        Ok(data)
    }

    /// Writes through handle `fh`. `drop_privileges`: the writer is not the owner, so
    /// set-user-ID and set-group-ID bits go, as a write on any Linux filesystem does.
    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        drop_privileges: bool,
    ) -> Result<(), FsError> {
        let (ino, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.write(&self.staging, &self.opts, offset, data)?;
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.touch();
            if drop_privileges {
                inode.mode &= !PRIVILEGE_BITS;
            }
            if let Body::File(f) = &mut inode.body {
                f.size = c.size();
            }
        }
        Ok(())
    }

    /// Makes the file at least `size` bytes long (fallocate): the new room is a hole.
    pub fn grow(&self, fh: u64, size: u64) -> Result<(), FsError> {
        let (_, content) = self.handle(fh)?;
        if content.lock().unwrap_or_else(|e| e.into_inner()).size() >= size {
            return Ok(());
        }
        // An empty write at `size` extends the file as a write past its end does.
        self.write(fh, size, &[], false)
    }

    /// Where the next data or hole at or after `offset` is (lseek's `SEEK_DATA` and
    /// `SEEK_HOLE`).
    pub fn seek(&self, fh: u64, offset: u64, what: Seek) -> Result<u64, FsError> {
        let (_, content) = self.handle(fh)?;
        let c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.seek(offset, what).ok_or(FsError::PastEnd)
    }

    /// Makes the file's written contents part of the tree (close, flush, fsync).
    pub fn flush(&self, fh: u64) -> Result<(), FsError> {
        let (ino, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        if !c.changed {
            return Ok(());
        }
        let mut st = self.lock();
        self.publish(&mut st, ino, &mut c)
    }

    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        let flushed = self.flush(fh);
        let mut st = self.lock();
        if let Some(h) = st.handles.remove(&fh) {
            if let Some(Body::File(f)) = st.inodes.get_mut(&h.ino).map(|i| &mut i.body) {
                f.open = f.open.saturating_sub(1);
                if f.open == 0 && flushed.is_ok() {
                    f.content = None;
                }
            }
            st.reap(h.ino);
        }
        flushed
    }

    /// Builds the file's DAG with its current metadata and marks its entry changed.
    fn publish(&self, st: &mut State, ino: u64, content: &mut FileContent) -> Result<(), FsError> {
        let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        let built = content.build(&self.staging, &self.opts, &self.zeros, inode.meta())?;
        if let Body::File(f) = &mut inode.body {
            f.built = built;
            f.size = content.size();
            f.allocated = content.allocated();
        }
        let (parent, name, linked) = (inode.parent, inode.name.clone(), inode.linked);
        if linked {
            st.entry_changed(parent, &name, false);
        }
        Ok(())
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

    /// Publishes every open file's writes (before unmount).
    pub fn flush_all(&self) -> Result<(), FsError> {
        let handles: Vec<u64> = self.lock().handles.keys().copied().collect();
        handles.into_iter().try_for_each(|fh| self.flush(fh))
    }

    /// The CID of an entry as of now: commits first if it has changed.
    pub fn cid(&self, ino: u64) -> Result<Cid, FsError> {
        let built = self
            .lock()
            .inodes
            .get(&ino)
            .ok_or(FsError::NotFound)?
            .built();
        if let Some(b) = built {
            return Ok(b.cid);
        }
        self.commit_with(true)?;
        let st = self.lock();
        let inode = st.inodes.get(&ino).ok_or(FsError::NotFound)?;
        // An unlinked directory is never rebuilt; say so rather than guess.
        inode.built().map(|b| b.cid).ok_or(FsError::NotFound)
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

    /// Writes every changed directory and a new signed head in one batch. Returns
    /// `None` when nothing changed since the last commit.
    pub fn commit(&self) -> Result<Option<Commit>, FsError> {
        self.commit_with(false)
    }

    /// `force`: commit an untouched new drive too, so that its root has a CID.
    fn commit_with(&self, force: bool) -> Result<Option<Commit>, FsError> {
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(snap) = commit::snapshot(&mut self.lock(), &self.staging, &self.opts, force)
        else {
            return Ok(None);
        };
        // A panic while building must not lose the changes the snapshot took.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            snap.build(&self.staging, &self.opts)
        }))
        .unwrap_or_else(|panic| Err(FsError::Bug(panic_message(&panic))));
        let written = built.and_then(|prepared| {
            let head = Head {
                peer: self.key.public().to_peer_id(),
                seq: snap.seq,
                root: prepared.root.cid,
                time_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                open: self.open.load(Ordering::Relaxed),
            }
            .sign(&self.key);
            self.staging
                .commit(&prepared.blocks, OWN_HEAD, head.encoded(), snap.epoch)?;
            Ok((prepared, head))
        });
        let mut st = self.lock();
        match written {
            Ok((prepared, head)) => {
                st.seq = snap.seq;
                st.root = Some(prepared.root.cid);
                st.last_commit = Some(SystemTime::now());
                st.head = Some(head.clone());
                commit::install(&mut st, snap, Some(&prepared));
                Ok(Some(Commit { head }))
            }
            Err(e) => {
                commit::install(&mut st, snap, None);
                Err(e)
            }
        }
    }

    /// Whether uncommitted changes should be committed now: they have paused for
    /// `quiet` (a file was saved, a copy finished), or have gone on for `longest`.
    pub fn commit_due(&self, quiet: Duration, longest: Duration) -> bool {
        let st = self.lock();
        let (Some(first), Some(last)) = (st.dirty_since, st.last_change) else {
            return false;
        };
        st.changed() && (last.elapsed() >= quiet || first.elapsed() >= longest)
    }

    /// The inode of `name` in directory `parent`, loading the directory if needed.
    fn child(&self, st: &mut State, parent: u64, name: &[u8]) -> Result<Option<u64>, FsError> {
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        self.load_dir(st, parent)?;
        match &st.inodes.get(&parent).ok_or(FsError::NotFound)?.body {
            Body::Dir(Dir::Loaded(d)) => Ok(d.children.get(name).copied()),
            _ => Err(FsError::NotADirectory),
        }
    }

    /// Reads a stored directory's entries into the inode table, once.
    fn load_dir(&self, st: &mut State, ino: u64) -> Result<(), FsError> {
        let inode = st.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let Body::Dir(Dir::Stored(stored)) = &inode.body else {
            return Ok(());
        };
        let stored = *stored;
        let node = load_node(&self.staging, &stored.built.cid)?;
        let mut dir = LoadedDir {
            children: BTreeMap::new(),
            name_bytes: 0,
            subdirs: 0,
            stored: Some(stored),
            changed: None,
        };
        let mut loaded = Vec::new();
        for entry in list(&self.staging, &stored.built.cid, &node)? {
            let child = load_node(&self.staging, &entry.cid)?;
            let built = Built {
                cid: entry.cid,
                tsize: entry.tsize,
            };
            loaded.push((
                entry.name,
                Inode::stored(ino, b"", &child, built, &self.staging, &self.zeros),
            ));
        }
        for (name, mut child) in loaded {
            let child_ino = st.new_ino();
            child.name = name.clone();
            let is_dir = child.kind() == Kind::Directory;
            st.inodes.insert(child_ino, child);
            dir.add(&name, child_ino, is_dir);
        }
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.body = Body::Dir(Dir::Loaded(dir));
        }
        Ok(())
    }
}

fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid);
    }
    Ok(())
}

fn apply_meta(inode: &mut Inode, set: SetAttr) {
    if let Some(mode) = set.mode {
        inode.mode = mode & 0o7777;
    }
    if let Some(t) = set.mtime {
        inode.mtime = to_mtime(t);
    }
    if let Some(t) = set.atime {
        inode.atime = t;
    }
    inode.ctime = SystemTime::now();
}

#[cfg(test)]
mod tests;
