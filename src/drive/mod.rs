//! The mutable drive: a UnixFS tree that changes in place, as a filesystem needs.
//!
//! - `Drive`: the inode table over the stored tree (directories load lazily), open file
//!   handles, and commits. Changed directories are marked dirty up to the root and
//!   rebuilt at the next commit: once changes pause (`commit_due`), and at least every
//!   so often while they go on, like a journaling filesystem's batched commits.
//! - [`file`]: one file's contents as a chunk-granular copy-on-write overlay.
//! - [`staging`]: new blocks waiting for the commit that makes them reachable.
//! - [`error`]: `DriveError` and its errno mapping.
//!
//! Locking: a file's content lock is taken before the drive's state lock, never after.
//! A file's DAG is rebuilt when its writer flushes, fsyncs or closes it ("published"),
//! so a commit sees each file as of its last close and never half a write.

pub mod error;
pub mod file;
pub mod staging;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;
use libp2p_identity::Keypair;

use crate::store::readahead::ReadAhead;
pub use error::DriveError;
use file::FileContent;
use staging::{StageSink, Staging};

use crate::block::Block;
use crate::head::{Head, SignedHead};
use crate::store::{BlockSink, HeadStore, StoreError};
use crate::unixfs::build::{build_directory, build_symlink, Built, DirEntry};
use crate::unixfs::data::{Metadata, Mtime};
use crate::unixfs::node::Node;
use crate::unixfs::read::list;
use crate::unixfs::{load_node, ImportOptions};

/// The drive's root directory. Lower numbers belong to the mount around the drive.
pub const ROOT: u64 = 2;
const FIRST_INODE: u64 = 16;
/// The key of this drive's own head in the store's heads table.
pub const OWN_HEAD: &str = "self";
/// How far ahead of a sequential reader chunks are read from the store.
const READ_AHEAD_BYTES: u64 = 8 << 20;
/// Longest file name, in bytes, as on Linux filesystems.
const MAX_NAME: usize = 255;

const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
}

/// What `stat` shows of an inode.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits, `0o7777` at most.
    pub perm: u16,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// Changes `setattr` asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
}

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

enum Body {
    /// `children` is `None` until the directory is first listed or looked into.
    Dir {
        children: Option<BTreeMap<Vec<u8>, u64>>,
    },
    File {
        size: u64,
        /// Present while the file is open.
        content: Option<Arc<Mutex<FileContent>>>,
        open: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
}

struct Inode {
    parent: u64,
    body: Body,
    mode: u32,
    mtime: Mtime,
    ctime: SystemTime,
    /// The stored form. `None` only for directories changed since the last commit.
    built: Option<Built>,
    /// How many times the kernel holds this inode (FUSE lookup count).
    lookups: u64,
    /// False once unlinked; the inode lives on while open or known to the kernel.
    linked: bool,
}

impl Inode {
    /// A new entry made through the mount, modified now.
    fn new(parent: u64, body: Body, mode: u32) -> Inode {
        let now = SystemTime::now();
        Inode {
            parent,
            body,
            mode: mode & 0o7777,
            mtime: to_mtime(now),
            ctime: now,
            built: None,
            lookups: 1,
            linked: true,
        }
    }

    fn kind(&self) -> Kind {
        match self.body {
            Body::Dir { .. } => Kind::Directory,
            Body::File { .. } => Kind::File,
            Body::Symlink { .. } => Kind::Symlink,
        }
    }

    fn attr(&self, ino: u64) -> Attr {
        let size = match &self.body {
            Body::File { size, .. } => *size,
            Body::Symlink { target } => target.len() as u64,
            Body::Dir { .. } => 0,
        };
        Attr {
            ino,
            kind: self.kind(),
            size,
            perm: (self.mode & 0o7777) as u16,
            mtime: to_system_time(self.mtime),
            ctime: self.ctime,
        }
    }

    fn meta(&self) -> Metadata {
        Metadata {
            mode: Some(self.mode & 0o7777),
            mtime: Some(self.mtime),
        }
    }
}

struct Handle {
    ino: u64,
    content: Arc<Mutex<FileContent>>,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    seq: u64,
    root: Option<Cid>,
    last_commit: Option<SystemTime>,
    /// The newest committed head, for announcing.
    head: Option<SignedHead>,
    /// The first and the latest change since the last commit.
    dirty_since: Option<Instant>,
    last_change: Option<Instant>,
}

pub struct Drive {
    state: Mutex<State>,
    staging: Staging,
    opts: ImportOptions,
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
    ) -> Result<Drive, DriveError> {
        let read_ahead = ReadAhead::start(Arc::clone(&store) as Arc<dyn crate::store::Blocks>);
        let staging = Staging::new(store);
        let head = match staging.store().head(OWN_HEAD)? {
            Some(bytes) => Some(SignedHead::verify(&bytes).map_err(|e| StoreError::Db {
                path: "heads/self".into(),
                message: e.to_string(),
            })?),
            None => None,
        };
        let now = SystemTime::now();
        let root = match &head {
            Some(h) => {
                let cid = h.head().root;
                let node = load_node(&staging, &cid)?;
                if !node.is_dir() {
                    return Err(DriveError::NotADirectory);
                }
                inode_from_node(ROOT, &node, Built { cid, tsize: 0 })
            }
            None => Inode {
                parent: ROOT,
                body: Body::Dir {
                    children: Some(BTreeMap::new()),
                },
                mode: DEFAULT_DIR_MODE,
                mtime: to_mtime(now),
                ctime: now,
                built: None,
                lookups: 1,
                linked: true,
            },
        };
        let state = State {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: FIRST_INODE,
            handles: HashMap::new(),
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
            staging,
            opts,
            key,
            open: AtomicBool::new(false),
            read_ahead,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the table consistent before anything can fail.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, DriveError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(DriveError::NotFound)?;
        let inode = st.inodes.get_mut(&ino).ok_or(DriveError::NotFound)?;
        inode.lookups += 1;
        Ok(inode.attr(ino))
    }

    /// The drive's root as the mount's `drive` entry.
    pub fn lookup_root(&self) -> Result<Attr, DriveError> {
        let mut st = self.lock();
        let root = st.inodes.get_mut(&ROOT).ok_or(DriveError::NotFound)?;
        root.lookups += 1;
        Ok(root.attr(ROOT))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
        }
        reap(&mut st, ino);
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, DriveError> {
        let st = self.lock();
        Ok(st.inodes.get(&ino).ok_or(DriveError::NotFound)?.attr(ino))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, DriveError> {
        match &self
            .lock()
            .inodes
            .get(&ino)
            .ok_or(DriveError::NotFound)?
            .body
        {
            Body::Symlink { target } => Ok(target.clone()),
            _ => Err(DriveError::Invalid),
        }
    }

    /// The entries of a directory with their attributes, in name order.
    pub fn list(&self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>, DriveError> {
        let mut st = self.lock();
        self.load_dir(&mut st, ino)?;
        let Some(Body::Dir {
            children: Some(children),
        }) = st.inodes.get(&ino).map(|i| &i.body)
        else {
            return Err(DriveError::NotADirectory);
        };
        Ok(children
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
        self.lock().inodes.get(&ino).map_or(ROOT, |i| i.parent)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> Result<Attr, DriveError> {
        let mut st = self.lock();
        let inode = Inode::new(
            parent,
            Body::Dir {
                children: Some(BTreeMap::new()),
            },
            mode,
        );
        self.insert(&mut st, parent, name, inode)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> Result<Attr, DriveError> {
        let mut st = self.lock();
        let mut inode = Inode::new(
            parent,
            Body::Symlink {
                target: target.to_vec(),
            },
            0o777,
        );
        inode.built = Some(self.build_symlink(&inode)?);
        self.insert(&mut st, parent, name, inode)
    }

    /// Creates an empty file and opens it; returns its attributes and a handle.
    pub fn create(&self, parent: u64, name: &[u8], mode: u32) -> Result<(Attr, u64), DriveError> {
        let mut st = self.lock();
        let mut content = FileContent::empty(&self.opts);
        let body = Body::File {
            size: 0,
            content: None,
            open: 0,
        };
        let mut inode = Inode::new(parent, body, mode);
        inode.built = Some(content.build(&self.staging, &self.opts, inode.meta())?);
        let content = Arc::new(Mutex::new(content));
        inode.body = Body::File {
            size: 0,
            content: Some(Arc::clone(&content)),
            open: 1,
        };
        let attr = self.insert(&mut st, parent, name, inode)?;
        let fh = new_handle(&mut st, attr.ino, content);
        Ok((attr, fh))
    }

    fn insert(
        &self,
        st: &mut State,
        parent: u64,
        name: &[u8],
        inode: Inode,
    ) -> Result<Attr, DriveError> {
        check_name(name)?;
        if self.child(st, parent, name)?.is_some() {
            return Err(DriveError::Exists);
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        let attr = inode.attr(ino);
        st.inodes.insert(ino, inode);
        children_mut(st, parent)?.insert(name.to_vec(), ino);
        touch_dir(st, parent, true);
        Ok(attr)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<(), DriveError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(DriveError::NotFound)?;
        if st.inodes[&ino].kind() == Kind::Directory {
            return Err(DriveError::IsADirectory);
        }
        children_mut(&mut st, parent)?.remove(name);
        detach(&mut st, ino);
        touch_dir(&mut st, parent, true);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<(), DriveError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(DriveError::NotFound)?;
        self.check_empty_dir(&mut st, ino)?;
        children_mut(&mut st, parent)?.remove(name);
        detach(&mut st, ino);
        touch_dir(&mut st, parent, true);
        Ok(())
    }

    fn check_empty_dir(&self, st: &mut State, ino: u64) -> Result<(), DriveError> {
        self.load_dir(st, ino)?;
        match &st.inodes[&ino].body {
            Body::Dir {
                children: Some(c), ..
            } if c.is_empty() => Ok(()),
            Body::Dir { .. } => Err(DriveError::NotEmpty),
            _ => Err(DriveError::NotADirectory),
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
    ) -> Result<(), DriveError> {
        check_name(new_name)?;
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(DriveError::NotFound)?;
        let is_dir = st.inodes[&ino].kind() == Kind::Directory;
        // A directory cannot move into itself or below itself.
        let mut up = new_parent;
        loop {
            if up == ino {
                return Err(DriveError::Invalid);
            }
            if up == ROOT {
                break;
            }
            up = st.inodes.get(&up).map_or(ROOT, |i| i.parent);
        }
        if let Some(old) = self.child(&mut st, new_parent, new_name)? {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(DriveError::Exists);
            }
            match (is_dir, st.inodes[&old].kind() == Kind::Directory) {
                (true, true) => self.check_empty_dir(&mut st, old)?,
                (true, false) => return Err(DriveError::NotADirectory),
                (false, true) => return Err(DriveError::IsADirectory),
                (false, false) => {}
            }
            detach(&mut st, old);
        }
        children_mut(&mut st, parent)?.remove(name);
        children_mut(&mut st, new_parent)?.insert(new_name.to_vec(), ino);
        let now = SystemTime::now();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.ctime = now;
        }
        touch_dir(&mut st, parent, true);
        touch_dir(&mut st, new_parent, true);
        Ok(())
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> Result<Attr, DriveError> {
        let content = {
            let mut st = self.lock();
            let inode = st.inodes.get_mut(&ino).ok_or(DriveError::NotFound)?;
            match &inode.body {
                Body::File { content, .. } => content.clone(),
                Body::Dir { .. } if set.size.is_some() => return Err(DriveError::IsADirectory),
                Body::Symlink { .. } if set.size.is_some() => return Err(DriveError::Invalid),
                _ => {
                    apply_meta(inode, set);
                    if inode.kind() == Kind::Symlink {
                        inode.built = Some(self.build_symlink(inode)?);
                        let parent = inode.parent;
                        touch_dir(&mut st, parent, false);
                    } else {
                        touch_dir(&mut st, ino, false);
                    }
                    return Ok(st.inodes[&ino].attr(ino));
                }
            }
        };
        // A file: its root carries the metadata, so it is rebuilt now.
        let content = match content {
            Some(c) => c,
            None => {
                let root = self.lock().inodes[&ino].built.map(|b| b.cid);
                let root = root.ok_or(DriveError::NotFound)?;
                Arc::new(Mutex::new(FileContent::load(
                    &self.staging,
                    &self.opts,
                    &root,
                )?))
            }
        };
        let mut content = content.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(size) = set.size {
            content.set_len(&self.staging, size)?;
        }
        let mut st = self.lock();
        let inode = st.inodes.get_mut(&ino).ok_or(DriveError::NotFound)?;
        apply_meta(inode, set);
        if set.size.is_some() && set.mtime.is_none() {
            let now = SystemTime::now();
            inode.mtime = to_mtime(now);
        }
        self.publish(&mut st, ino, &mut content)?;
        Ok(st.inodes[&ino].attr(ino))
    }

    /// Opens a file; `truncate` empties it first (O_TRUNC).
    pub fn open(&self, ino: u64, truncate: bool) -> Result<u64, DriveError> {
        let content = {
            let mut st = self.lock();
            let inode = st.inodes.get_mut(&ino).ok_or(DriveError::NotFound)?;
            let root = inode.built.map(|b| b.cid);
            let Body::File { content, open, .. } = &mut inode.body else {
                return Err(DriveError::IsADirectory);
            };
            let content = match content {
                Some(c) => Arc::clone(c),
                None => {
                    let root = root.ok_or(DriveError::NotFound)?;
                    let loaded = FileContent::load(&self.staging, &self.opts, &root)?;
                    let c = Arc::new(Mutex::new(loaded));
                    *content = Some(Arc::clone(&c));
                    c
                }
            };
            *open += 1;
            let fh = new_handle(&mut st, ino, Arc::clone(&content));
            if !truncate {
                return Ok(fh);
            }
            (fh, content)
        };
        let (fh, content) = content;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.set_len(&self.staging, 0)?;
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.mtime = to_mtime(SystemTime::now());
            if let Body::File { size, .. } = &mut inode.body {
                *size = 0;
            }
        }
        Ok(fh)
    }

    fn handle(&self, fh: u64) -> Result<(u64, Arc<Mutex<FileContent>>), DriveError> {
        let st = self.lock();
        let h = st.handles.get(&fh).ok_or(DriveError::BadHandle)?;
        Ok((h.ino, Arc::clone(&h.content)))
    }

    pub fn read(&self, fh: u64, offset: u64, len: u32) -> Result<Vec<u8>, DriveError> {
        let (_, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        let data = c.read(&self.staging, Some(&self.read_ahead), offset, len)?;
        let ahead = c.read_ahead(READ_AHEAD_BYTES);
        drop(c);
        self.read_ahead.request(ahead);
        Ok(data)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<(), DriveError> {
        let (ino, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.write(&self.staging, &self.opts, offset, data)?;
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            inode.mtime = to_mtime(now);
            inode.ctime = now;
            if let Body::File { size, .. } = &mut inode.body {
                *size = c.size();
            }
        }
        Ok(())
    }

    /// Makes the file's written contents part of the tree (close, flush, fsync).
    pub fn flush(&self, fh: u64) -> Result<(), DriveError> {
        let (ino, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        if !c.changed {
            return Ok(());
        }
        let mut st = self.lock();
        self.publish(&mut st, ino, &mut c)
    }

    pub fn release(&self, fh: u64) -> Result<(), DriveError> {
        let flushed = self.flush(fh);
        let mut st = self.lock();
        if let Some(h) = st.handles.remove(&fh) {
            if let Some(inode) = st.inodes.get_mut(&h.ino) {
                if let Body::File { content, open, .. } = &mut inode.body {
                    *open = open.saturating_sub(1);
                    if *open == 0 && flushed.is_ok() {
                        *content = None;
                    }
                }
            }
            reap(&mut st, h.ino);
        }
        flushed
    }

    /// Builds the file's DAG with its current metadata and marks its directory changed.
    fn publish(
        &self,
        st: &mut State,
        ino: u64,
        content: &mut FileContent,
    ) -> Result<(), DriveError> {
        let inode = st.inodes.get_mut(&ino).ok_or(DriveError::NotFound)?;
        let built = content.build(&self.staging, &self.opts, inode.meta())?;
        inode.built = Some(built);
        if let Body::File { size, .. } = &mut inode.body {
            *size = content.size();
        }
        let (parent, linked) = (inode.parent, inode.linked);
        if linked {
            touch_dir(st, parent, false);
        }
        Ok(())
    }

    /// Publishes every open file's writes (before unmount).
    pub fn flush_all(&self) -> Result<(), DriveError> {
        let handles: Vec<u64> = self.lock().handles.keys().copied().collect();
        handles.into_iter().try_for_each(|fh| self.flush(fh))
    }

    /// The CID of an entry as of now: commits first if it has changed.
    pub fn cid(&self, ino: u64) -> Result<Cid, DriveError> {
        let built = self
            .lock()
            .inodes
            .get(&ino)
            .ok_or(DriveError::NotFound)?
            .built;
        if let Some(b) = built {
            return Ok(b.cid);
        }
        self.commit()?;
        let st = self.lock();
        let inode = st.inodes.get(&ino).ok_or(DriveError::NotFound)?;
        // An unlinked directory is never rebuilt; say so rather than guess.
        inode.built.map(|b| b.cid).ok_or(DriveError::NotFound)
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
            dirty: st.inodes[&ROOT].built.is_none(),
        }
    }

    /// Writes every changed directory and a new signed head in one batch. Returns
    /// `None` when nothing changed since the last commit.
    pub fn commit(&self) -> Result<Option<Commit>, DriveError> {
        let mut st = self.lock();
        if st.inodes[&ROOT].built.is_some() {
            return Ok(None);
        }
        let mut blocks = Vec::new();
        let mut updates = Vec::new();
        let root = self.build_dir(&st, ROOT, &mut blocks, &mut updates)?;
        let head = Head {
            peer: self.key.public().to_peer_id(),
            seq: st.seq + 1,
            root: root.cid,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            open: self.open.load(Ordering::Relaxed),
        }
        .sign(&self.key);
        self.staging.commit(&blocks, OWN_HEAD, head.encoded())?;
        for (ino, built) in updates {
            if let Some(inode) = st.inodes.get_mut(&ino) {
                inode.built = Some(built);
            }
        }
        st.seq += 1;
        st.root = Some(root.cid);
        st.last_commit = Some(SystemTime::now());
        st.head = Some(head.clone());
        st.dirty_since = None;
        Ok(Some(Commit { head }))
    }

    /// Whether uncommitted changes should be committed now: they have paused for
    /// `quiet` (a file was saved, a copy finished), or have gone on for `longest`.
    pub fn commit_due(&self, quiet: Duration, longest: Duration) -> bool {
        let st = self.lock();
        let (Some(first), Some(last)) = (st.dirty_since, st.last_change) else {
            return false;
        };
        st.inodes[&ROOT].built.is_none() && (last.elapsed() >= quiet || first.elapsed() >= longest)
    }

    fn build_dir(
        &self,
        st: &State,
        ino: u64,
        blocks: &mut Vec<Block>,
        updates: &mut Vec<(u64, Built)>,
    ) -> Result<Built, DriveError> {
        let inode = &st.inodes[&ino];
        if let Some(b) = inode.built {
            return Ok(b);
        }
        let Body::Dir {
            children: Some(children),
        } = &inode.body
        else {
            unreachable!("only loaded directories can change")
        };
        let mut entries = Vec::with_capacity(children.len());
        for (name, child) in children {
            let c = &st.inodes[child];
            let built = match (&c.body, c.built) {
                (Body::Dir { .. }, _) => self.build_dir(st, *child, blocks, updates)?,
                (_, Some(b)) => {
                    self.staging.collect(&b.cid, blocks);
                    b
                }
                (_, None) => unreachable!("files and symlinks are built when they change"),
            };
            entries.push(DirEntry {
                name: name.clone(),
                cid: built.cid,
                tsize: built.tsize,
            });
        }
        let mut sink = VecSink(blocks);
        let built = build_directory(entries, inode.meta(), &self.opts, &mut sink)?;
        updates.push((ino, built));
        Ok(built)
    }

    fn build_symlink(&self, inode: &Inode) -> Result<Built, DriveError> {
        let Body::Symlink { target } = &inode.body else {
            return Err(DriveError::Invalid);
        };
        let mut sink = StageSink(&self.staging);
        Ok(build_symlink(target, inode.meta(), &self.opts, &mut sink)?)
    }

    /// The inode of `name` in directory `parent`, loading the directory if needed.
    fn child(&self, st: &mut State, parent: u64, name: &[u8]) -> Result<Option<u64>, DriveError> {
        if name.len() > MAX_NAME {
            return Err(DriveError::NameTooLong);
        }
        self.load_dir(st, parent)?;
        match &st.inodes.get(&parent).ok_or(DriveError::NotFound)?.body {
            Body::Dir { children: Some(c) } => Ok(c.get(name).copied()),
            _ => Err(DriveError::NotADirectory),
        }
    }

    /// Reads a stored directory's entries into the inode table, once.
    fn load_dir(&self, st: &mut State, ino: u64) -> Result<(), DriveError> {
        let inode = st.inodes.get(&ino).ok_or(DriveError::NotFound)?;
        let (Body::Dir { children: None }, Some(built)) = (&inode.body, inode.built) else {
            return Ok(());
        };
        let node = load_node(&self.staging, &built.cid)?;
        let mut children = BTreeMap::new();
        for entry in list(&self.staging, &built.cid, &node)? {
            let child = load_node(&self.staging, &entry.cid)?;
            let built = Built {
                cid: entry.cid,
                tsize: entry.tsize,
            };
            let child_ino = st.next_ino;
            st.next_ino += 1;
            st.inodes
                .insert(child_ino, inode_from_node(ino, &child, built));
            children.insert(entry.name, child_ino);
        }
        if let Some(Body::Dir { children: c }) = st.inodes.get_mut(&ino).map(|i| &mut i.body) {
            *c = Some(children);
        }
        Ok(())
    }
}

struct VecSink<'a>(&'a mut Vec<Block>);

impl BlockSink for VecSink<'_> {
    fn put(&mut self, block: Block) -> Result<(), StoreError> {
        self.0.push(block);
        Ok(())
    }
}

/// What `stat` shows of a stored node, with the defaults for fields it lacks.
pub fn node_attr(ino: u64, node: &Node) -> Attr {
    let meta = node.meta();
    let (kind, size, default_mode) = match node {
        Node::File(f) => (Kind::File, f.filesize, DEFAULT_FILE_MODE),
        Node::Symlink { target, .. } => (Kind::Symlink, target.len() as u64, 0o777),
        Node::Directory(_) | Node::Shard(_) => (Kind::Directory, 0, DEFAULT_DIR_MODE),
    };
    let mtime = to_system_time(meta.mtime.unwrap_or_default());
    Attr {
        ino,
        kind,
        size,
        perm: (meta.mode.unwrap_or(default_mode) & 0o7777) as u16,
        mtime,
        ctime: mtime,
    }
}

fn inode_from_node(parent: u64, node: &Node, built: Built) -> Inode {
    let meta = node.meta();
    let (body, default_mode) = match node {
        Node::File(f) => (
            Body::File {
                size: f.filesize,
                content: None,
                open: 0,
            },
            DEFAULT_FILE_MODE,
        ),
        Node::Symlink { target, .. } => (
            Body::Symlink {
                target: target.clone(),
            },
            0o777,
        ),
        Node::Directory(_) | Node::Shard(_) => (Body::Dir { children: None }, DEFAULT_DIR_MODE),
    };
    let mtime = meta.mtime.unwrap_or_default();
    Inode {
        parent,
        body,
        mode: meta.mode.unwrap_or(default_mode),
        mtime,
        ctime: to_system_time(mtime),
        built: Some(built),
        lookups: 0,
        linked: true,
    }
}

fn check_name(name: &[u8]) -> Result<(), DriveError> {
    if name.len() > MAX_NAME {
        return Err(DriveError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(DriveError::Invalid);
    }
    Ok(())
}

fn children_mut(st: &mut State, dir: u64) -> Result<&mut BTreeMap<Vec<u8>, u64>, DriveError> {
    match st.inodes.get_mut(&dir).map(|i| &mut i.body) {
        Some(Body::Dir { children: Some(c) }) => Ok(c),
        Some(_) => Err(DriveError::NotADirectory),
        None => Err(DriveError::NotFound),
    }
}

fn new_handle(st: &mut State, ino: u64, content: Arc<Mutex<FileContent>>) -> u64 {
    let fh = st.next_fh;
    st.next_fh += 1;
    st.handles.insert(fh, Handle { ino, content });
    fh
}

/// Marks `dir` and its ancestors changed; with `modified`, its mtime becomes now (an
/// entry was added, removed or renamed).
fn touch_dir(st: &mut State, dir: u64, modified: bool) {
    let now = Instant::now();
    st.last_change = Some(now);
    st.dirty_since.get_or_insert(now);
    if modified {
        if let Some(inode) = st.inodes.get_mut(&dir) {
            let now = SystemTime::now();
            inode.mtime = to_mtime(now);
            inode.ctime = now;
        }
    }
    let mut ino = dir;
    loop {
        let Some(inode) = st.inodes.get_mut(&ino) else {
            return;
        };
        if inode.built.is_none() && ino != dir {
            return;
        }
        inode.built = None;
        if ino == ROOT || !inode.linked {
            return;
        }
        ino = inode.parent;
    }
}

fn apply_meta(inode: &mut Inode, set: SetAttr) {
    if let Some(mode) = set.mode {
        inode.mode = mode & 0o7777;
    }
    if let Some(t) = set.mtime {
        inode.mtime = to_mtime(t);
    }
    inode.ctime = SystemTime::now();
}

/// Takes an entry out of the tree; it lives on while open or known to the kernel.
fn detach(st: &mut State, ino: u64) {
    if let Some(inode) = st.inodes.get_mut(&ino) {
        inode.linked = false;
    }
    reap(st, ino);
}

/// Drops an inode nobody can reach any more.
fn reap(st: &mut State, ino: u64) {
    let Some(inode) = st.inodes.get(&ino) else {
        return;
    };
    let open = matches!(inode.body, Body::File { open, .. } if open > 0);
    if !inode.linked && inode.lookups == 0 && !open && ino != ROOT {
        st.inodes.remove(&ino);
    }
}

pub fn to_mtime(t: SystemTime) -> Mtime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Mtime {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                Mtime {
                    secs: -(d.as_secs() as i64),
                    nanos: 0,
                }
            } else {
                Mtime {
                    secs: -(d.as_secs() as i64) - 1,
                    nanos: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

pub fn to_system_time(m: Mtime) -> SystemTime {
    if m.secs >= 0 {
        UNIX_EPOCH + Duration::new(m.secs as u64, m.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(m.secs.unsigned_abs())
            + Duration::from_nanos(m.nanos.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rocks::RocksStore;

    fn drive(dir: &std::path::Path) -> Drive {
        let store = Arc::new(RocksStore::open(dir, true).unwrap());
        Drive::load(store, ImportOptions::default(), Keypair::generate_ed25519()).unwrap()
    }

    #[test]
    fn a_commit_is_due_when_changes_pause_or_go_on_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let drive = drive(dir.path());
        let (long, none) = (Duration::from_secs(3600), Duration::ZERO);
        assert!(!drive.commit_due(none, none), "nothing changed yet");

        // Writing alone changes nothing committed: the file enters the tree on close.
        let (_, fh) = drive.create(ROOT, b"a.txt", 0o644).unwrap();
        drive.commit().unwrap();
        drive.write(fh, 0, b"hello").unwrap();
        assert!(!drive.commit_due(none, none));
        drive.release(fh).unwrap();
        assert!(drive.commit_due(none, long), "changes paused");
        assert!(drive.commit_due(long, none), "changes went on too long");
        assert!(!drive.commit_due(long, long), "neither yet");

        drive.commit().unwrap();
        assert!(!drive.commit_due(none, none), "committed");
        drive.mkdir(ROOT, b"d", 0o755).unwrap();
        assert!(drive.commit_due(none, long));
    }
}
