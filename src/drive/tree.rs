//! The inode table: every entry of the drive that the kernel knows or a commit needs.
//! Directories are read from the store on first use; a directory remembers which of its
//! names changed since the last commit, so that a commit rewrites only those.
//!
//! A directory that changed is always a loaded one: `Dir::Stored` has no room for
//! changes, so the only way to change a directory is to load it first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use cid::Cid;

use super::file::FileContent;
use crate::block::DAG_PB;
use crate::head::SignedHead;
use crate::store::Blocks;
use crate::unixfs::build::{Built, ZeroRuns};
use crate::unixfs::data::{Metadata, Mtime};
use crate::unixfs::load_node;
use crate::unixfs::node::{FileNode, Node};
use crate::vfs::attr::{DEFAULT_DIR_MODE, DEFAULT_FILE_MODE};
use crate::vfs::ino::DRIVE_ROOT;
use crate::vfs::{to_mtime, to_system_time, Attr, Kind};

pub(super) struct Inode {
    pub parent: u64,
    /// Its name in `parent` (empty for the root): changes are recorded by name.
    pub name: Vec<u8>,
    pub body: Body,
    pub mode: u32,
    pub mtime: Mtime,
    pub ctime: SystemTime,
    /// In memory only (UnixFS has no atime): what `utimensat` set, else the mtime.
    pub atime: SystemTime,
    /// How many times the kernel holds this inode (FUSE lookup count).
    pub lookups: u64,
    /// False once unlinked; the inode lives on while open or known to the kernel.
    pub linked: bool,
}

pub(super) enum Body {
    Dir(Dir),
    File(FileBody),
    Symlink { target: Vec<u8>, built: Built },
}

pub(super) struct FileBody {
    pub size: u64,
    /// File bytes outside holes, for `du`.
    pub allocated: u64,
    /// The DAG as of the last publish (close, flush, fsync, setattr).
    pub built: Built,
    /// Present while the file is open.
    pub content: Option<Arc<Mutex<FileContent>>>,
    pub open: u32,
}

pub(super) enum Dir {
    /// As stored; its entries are read on first use.
    Stored(StoredDir),
    Loaded(LoadedDir),
}

/// A directory's committed form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StoredDir {
    pub built: Built,
    /// A HAMT (edited along hash paths at commits), else one flat node.
    pub shard: bool,
}

pub(super) struct LoadedDir {
    pub children: BTreeMap<Vec<u8>, u64>,
    /// The children's name bytes: with their count, a lower bound of the shard estimate.
    pub name_bytes: u64,
    /// Children that are directories, for the link count.
    pub subdirs: u32,
    /// The last committed form; `None` for a directory made since.
    pub stored: Option<StoredDir>,
    /// Names added, removed or changed since `stored` (an empty set: only the
    /// directory's own metadata); `None` when `stored` is current.
    pub changed: Option<BTreeSet<Vec<u8>>>,
}

impl LoadedDir {
    fn new() -> LoadedDir {
        LoadedDir {
            children: BTreeMap::new(),
            name_bytes: 0,
            subdirs: 0,
            stored: None,
            changed: None,
        }
    }

    /// Adds entry `name` (a directory: `is_dir`); it must not be there yet.
    pub fn add(&mut self, name: &[u8], ino: u64, is_dir: bool) {
        if self.children.insert(name.to_vec(), ino).is_none() {
            self.name_bytes += name.len() as u64;
            self.subdirs += u32::from(is_dir);
        }
    }

    pub fn remove(&mut self, name: &[u8], is_dir: bool) -> Option<u64> {
        let ino = self.children.remove(name)?;
        self.name_bytes -= name.len() as u64;
        self.subdirs -= u32::from(is_dir);
        Some(ino)
    }
}

impl Inode {
    fn made(parent: u64, name: &[u8], body: Body, mode: u32, now: SystemTime) -> Inode {
        Inode {
            parent,
            name: name.to_vec(),
            body,
            mode: mode & 0o7777,
            mtime: to_mtime(now),
            ctime: now,
            atime: now,
            lookups: 1,
            linked: true,
        }
    }

    /// A directory made through the mount: changed, with nothing stored yet.
    pub fn new_dir(parent: u64, name: &[u8], mode: u32) -> Inode {
        let mut dir = LoadedDir::new();
        dir.changed = Some(BTreeSet::new());
        Inode::made(
            parent,
            name,
            Body::Dir(Dir::Loaded(dir)),
            mode,
            SystemTime::now(),
        )
    }

    /// A file made at `now`, its DAG built with `meta_at(mode, now)`.
    pub fn new_file(parent: u64, name: &[u8], mode: u32, now: SystemTime, file: FileBody) -> Inode {
        Inode::made(parent, name, Body::File(file), mode, now)
    }

    /// A symlink made at `now`, its node built with `meta_at(0o777, now)`.
    pub fn new_symlink(
        parent: u64,
        name: &[u8],
        target: &[u8],
        now: SystemTime,
        built: Built,
    ) -> Inode {
        let body = Body::Symlink {
            target: target.to_vec(),
            built,
        };
        Inode::made(parent, name, body, 0o777, now)
    }

    /// The drive's root when nothing was ever committed: empty and unchanged.
    pub fn empty_root() -> Inode {
        let body = Body::Dir(Dir::Loaded(LoadedDir::new()));
        let mut root = Inode::made(DRIVE_ROOT, b"", body, DEFAULT_DIR_MODE, SystemTime::now());
        root.lookups = 0;
        root
    }

    /// An entry as stored, under `parent`.
    pub fn stored(
        parent: u64,
        name: &[u8],
        node: &Node,
        built: Built,
        blocks: &dyn Blocks,
        zeros: &ZeroRuns,
    ) -> Inode {
        let meta = node.meta();
        let (body, default_mode) = match node {
            Node::File(f) => {
                let file = FileBody {
                    size: f.filesize,
                    allocated: f.filesize - holes_in(blocks, f, zeros, 0),
                    built,
                    content: None,
                    open: 0,
                };
                (Body::File(file), DEFAULT_FILE_MODE)
            }
            Node::Symlink { target, .. } => (
                Body::Symlink {
                    target: target.clone(),
                    built,
                },
                0o777,
            ),
            Node::Directory(_) | Node::Shard(_) => {
                let shard = matches!(node, Node::Shard(_));
                (
                    Body::Dir(Dir::Stored(StoredDir { built, shard })),
                    DEFAULT_DIR_MODE,
                )
            }
        };
        let mtime = meta.mtime.unwrap_or_default();
        Inode {
            parent,
            name: name.to_vec(),
            body,
            mode: meta.mode.unwrap_or(default_mode),
            mtime,
            ctime: to_system_time(mtime),
            atime: to_system_time(mtime),
            lookups: 0,
            linked: true,
        }
    }

    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Dir(_) => Kind::Directory,
            Body::File(_) => Kind::File,
            Body::Symlink { .. } => Kind::Symlink,
        }
    }

    pub fn attr(&self, ino: u64) -> Attr {
        let (size, allocated) = match &self.body {
            Body::File(f) => (f.size, f.allocated),
            Body::Symlink { target, .. } => (target.len() as u64, target.len() as u64),
            Body::Dir(_) => (0, 0),
        };
        let nlink = match &self.body {
            _ if !self.linked => 0,
            Body::Dir(Dir::Loaded(d)) => 2 + d.subdirs,
            _ => 1,
        };
        Attr {
            ino,
            kind: self.kind(),
            size,
            allocated,
            perm: (self.mode & 0o7777) as u16,
            mtime: to_system_time(self.mtime),
            ctime: self.ctime,
            atime: self.atime,
            nlink,
        }
    }

    pub fn meta(&self) -> Metadata {
        Metadata {
            mode: Some(self.mode & 0o7777),
            mtime: Some(self.mtime),
        }
    }

    /// The stored form as of now; `None` for a directory changed since the last commit.
    pub fn built(&self) -> Option<Built> {
        match &self.body {
            Body::File(f) => Some(f.built),
            Body::Symlink { built, .. } => Some(*built),
            Body::Dir(Dir::Stored(s)) => Some(s.built),
            Body::Dir(Dir::Loaded(d)) => d.stored.filter(|_| d.changed.is_none()).map(|s| s.built),
        }
    }

    pub fn loaded_dir(&mut self) -> Option<&mut LoadedDir> {
        match &mut self.body {
            Body::Dir(Dir::Loaded(d)) => Some(d),
            _ => None,
        }
    }

    pub fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = to_mtime(now);
        self.ctime = now;
    }
}

/// How deep `holes_in` looks into a sparse file's DAG: a 16 TiB file is four levels.
const MAX_HOLE_DEPTH: usize = 4;

/// The bytes of `file` in holes (its zero subtrees), for `du`. Only a file with a hole
/// at this level is looked into further, so a dense file costs nothing and a sparse
/// one costs its data's internal nodes; a node that cannot be read counts as data.
fn holes_in(blocks: &dyn Blocks, file: &FileNode, zeros: &ZeroRuns, depth: usize) -> u64 {
    let is_hole = |cid: &Cid| zeros.chunks_under(cid).is_some();
    if depth >= MAX_HOLE_DEPTH || !file.children.iter().any(|(cid, _)| is_hole(cid)) {
        return 0;
    }
    file.children
        .iter()
        .map(|(cid, len)| match is_hole(cid) {
            true => *len,
            false if cid.codec() == DAG_PB => match load_node(blocks, cid) {
                Ok(Node::File(child)) => holes_in(blocks, &child, zeros, depth + 1).min(*len),
                _ => 0,
            },
            false => 0,
        })
        .sum()
}

/// The metadata of an entry made at `now` with `mode`, as `Inode::meta` will give it.
pub fn meta_at(mode: u32, now: SystemTime) -> Metadata {
    Metadata {
        mode: Some(mode & 0o7777),
        mtime: Some(to_mtime(now)),
    }
}

/// An open file handle.
pub(super) struct Handle {
    pub ino: u64,
    pub content: Arc<Mutex<FileContent>>,
}

pub(super) struct State {
    pub inodes: HashMap<u64, Inode>,
    pub next_ino: u64,
    pub handles: HashMap<u64, Handle>,
    pub next_fh: u64,
    pub seq: u64,
    pub root: Option<Cid>,
    pub last_commit: Option<SystemTime>,
    /// The newest committed head, for announcing.
    pub head: Option<SignedHead>,
    /// The first and the latest change since the last commit's snapshot.
    pub dirty_since: Option<Instant>,
    pub last_change: Option<Instant>,
}

impl State {
    /// Whether anything changed since the last commit's snapshot.
    pub fn changed(&self) -> bool {
        match self.inodes.get(&DRIVE_ROOT).map(|r| &r.body) {
            Some(Body::Dir(Dir::Loaded(d))) => d.changed.is_some(),
            _ => false,
        }
    }

    pub fn loaded_dir(&mut self, ino: u64) -> Option<&mut LoadedDir> {
        self.inodes.get_mut(&ino)?.loaded_dir()
    }

    pub fn new_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    pub fn new_handle(&mut self, ino: u64, content: Arc<Mutex<FileContent>>) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, content });
        fh
    }

    /// Records that entry `name` of loaded directory `dir` changed (added, removed,
    /// renamed, or its content rewritten); with `modified`, the directory's mtime
    /// becomes now, as for any change to its entries.
    pub fn entry_changed(&mut self, dir: u64, name: &[u8], modified: bool) {
        if let Some(inode) = self.inodes.get_mut(&dir) {
            if modified {
                inode.touch();
            }
            if let Some(d) = inode.loaded_dir() {
                d.changed.get_or_insert_default().insert(name.to_vec());
            }
        }
        self.propagate(dir);
    }

    /// Records that loaded directory `dir`'s own metadata changed.
    pub fn dir_changed(&mut self, dir: u64) {
        if let Some(d) = self.loaded_dir(dir) {
            d.changed.get_or_insert_default();
        }
        self.propagate(dir);
    }

    /// Marks `dir`'s entry changed in each directory above it, up to one that was
    /// changed already (its own ancestors are marked then).
    fn propagate(&mut self, mut dir: u64) {
        let now = Instant::now();
        self.last_change = Some(now);
        self.dirty_since.get_or_insert(now);
        while dir != DRIVE_ROOT {
            let Some(inode) = self.inodes.get(&dir) else {
                return;
            };
            if !inode.linked {
                return;
            }
            let (parent, name) = (inode.parent, inode.name.clone());
            let Some(p) = self.loaded_dir(parent) else {
                // The parent of a loaded entry is loaded; nothing to mark otherwise.
                return;
            };
            let was_changed = p.changed.is_some();
            p.changed.get_or_insert_default().insert(name);
            if was_changed {
                return;
            }
            dir = parent;
        }
    }

    /// Takes an entry out of the tree; it lives on while open or known to the kernel.
    pub fn detach(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.linked = false;
        }
        self.reap(ino);
    }

    /// Drops an inode nobody can reach any more.
    pub fn reap(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let open = matches!(&inode.body, Body::File(f) if f.open > 0);
        if !inode.linked && inode.lookups == 0 && !open && ino != DRIVE_ROOT {
            self.inodes.remove(&ino);
        }
    }
}
