//! `DIR/outbox/<peer>/`: a folder per followed peer; what is copied there is sent to
//! that peer. The entries are plain files and folders in `REPO/outbox/<peer>/` (the
//! FUSE layer passes each call through), so `cp`, `cp -r` and `rsync` work as on any
//! disk. A top-level entry (`outbox/<peer>/<item>`) counts as finished once nothing
//! under it is open and nothing was written for `QUIET`: `cp -r` of a folder writes
//! file after file, and there is no one call that says it is done. The daemon then
//! takes the finished items (`finished`) and sends them; each entry's
//! `user.peerfs.delivery` says how its delivery goes.
//!
//! Inode numbers are `OUTBOX_INO_BASE` and up, one per path seen; the table grows
//! with what the user copies here, not with anything a peer does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::store::StoreError;
use crate::vfs::ino::{OUTBOX, OUTBOX_INO_BASE};
use crate::vfs::{Attr, FsError, Kind, SetAttr};

/// How long an item must see no write, and have nothing open, to count as finished.
pub const QUIET: Duration = Duration::from_secs(2);

/// The followed peers' names, asked each time `outbox/` is listed or looked in.
pub type Peers = Box<dyn Fn() -> Vec<String> + Send + Sync>;
/// How the delivery of `outbox/<peer>/<item>` goes, as `peerfs outbox` says it.
pub type Delivery = Box<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// An item: the peer's folder and the entry's name in it.
type ItemKey = (String, String);

#[derive(Default)]
struct Table {
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next: u64,
}

/// An item being written: when last, and how many handles are open under it.
#[derive(Clone, Copy)]
struct Busy {
    written: Instant,
    open: usize,
}

pub struct Outbox {
    /// `REPO/outbox`.
    root: PathBuf,
    peers: Peers,
    delivery: Delivery,
    table: Mutex<Table>,
    /// Open files by handle, each with the item (peer, name) it is under.
    files: Mutex<HashMap<u64, (File, ItemKey)>>,
    next_fh: AtomicU64,
    busy: Mutex<HashMap<(String, String), Busy>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FsError + '_ {
    move |source| {
        FsError::Store(StoreError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

fn attr_of(ino: u64, m: &fs::Metadata) -> Attr {
    let kind = if m.is_dir() {
        Kind::Directory
    } else if m.file_type().is_symlink() {
        Kind::Symlink
    } else {
        Kind::File
    };
    let time = |s: i64, ns: i64| {
        UNIX_EPOCH
            + Duration::new(
                u64::try_from(s).unwrap_or(0),
                u32::try_from(ns).unwrap_or(0),
            )
    };
    Attr {
        ino,
        kind,
        size: m.len(),
        allocated: m.blocks() * 512,
        perm: (m.mode() & 0o7777) as u16,
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        atime: time(m.atime(), m.atime_nsec()),
        nlink: m.nlink() as u32,
    }
}

impl Outbox {
    pub fn new(root: PathBuf, peers: Peers, delivery: Delivery) -> Outbox {
        Outbox {
            root,
            peers,
            delivery,
            table: Mutex::new(Table {
                next: OUTBOX_INO_BASE,
                ..Table::default()
            }),
            files: Mutex::default(),
            next_fh: AtomicU64::new(1),
            busy: Mutex::default(),
        }
    }

    /// The path below `outbox/` of `ino` (empty for `outbox/` itself).
    fn rel(&self, ino: u64) -> Result<PathBuf, FsError> {
        if ino == OUTBOX {
            return Ok(PathBuf::new());
        }
        lock(&self.table)
            .paths
            .get(&ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn ino_of(&self, rel: &Path) -> u64 {
        let mut t = lock(&self.table);
        if let Some(&ino) = t.inos.get(rel) {
            return ino;
        }
        let ino = t.next;
        t.next += 1;
        t.paths.insert(ino, rel.to_path_buf());
        t.inos.insert(rel.to_path_buf(), ino);
        ino
    }

    /// The peer and item a path below `outbox/` is in, if it is that deep.
    fn item_of(rel: &Path) -> Option<(String, String)> {
        let mut parts = rel.components();
        let peer = parts.next()?.as_os_str().to_string_lossy().into_owned();
        let item = parts.next()?.as_os_str().to_string_lossy().into_owned();
        Some((peer, item))
    }

    /// Makes sure each followed peer has its folder.
    fn peer_dirs(&self) -> Vec<String> {
        let peers = (self.peers)();
        for p in &peers {
            let _ = fs::create_dir_all(self.root.join(p));
        }
        peers
    }

    /// `parent/name` below `outbox/`; the top level holds only the peers' folders.
    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, FsError> {
        if name.len() > 255 {
            return Err(FsError::NameTooLong);
        }
        let rel = self.rel(parent)?.join(name);
        if parent == OUTBOX
            && !self
                .peer_dirs()
                .iter()
                .any(|p| p.as_bytes() == name.as_bytes())
        {
            return Err(FsError::NotFound);
        }
        Ok(rel)
    }

    fn touch(&self, rel: &Path, open: isize) {
        let Some(key) = Outbox::item_of(rel) else {
            return;
        };
        let mut busy = lock(&self.busy);
        let b = busy.entry(key).or_insert(Busy {
            written: Instant::now(),
            open: 0,
        });
        b.written = Instant::now();
        b.open = b.open.saturating_add_signed(open);
    }

    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        let rel = self.rel(ino)?;
        let path = self.root.join(&rel);
        if ino == OUTBOX {
            fs::create_dir_all(&path).map_err(io(&path))?;
        }
        let m = fs::symlink_metadata(&path).map_err(io(&path))?;
        let mut a = attr_of(ino, &m);
        if ino == OUTBOX {
            // Only the peers' folders are here.
            a.perm = 0o555;
        }
        Ok(a)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let rel = self.child(parent, name)?;
        let path = self.root.join(&rel);
        let m = fs::symlink_metadata(&path).map_err(io(&path))?;
        Ok(attr_of(self.ino_of(&rel), &m))
    }

    pub fn list(&self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>, FsError> {
        let rel = self.rel(ino)?;
        let names: Vec<std::ffi::OsString> = if ino == OUTBOX {
            self.peer_dirs().into_iter().map(Into::into).collect()
        } else {
            let path = self.root.join(&rel);
            fs::read_dir(&path)
                .map_err(io(&path))?
                .filter_map(|e| Some(e.ok()?.file_name()))
                .collect()
        };
        let mut out = Vec::new();
        for name in names {
            let child = rel.join(&name);
            if let Ok(m) = fs::symlink_metadata(self.root.join(&child)) {
                out.push((name.as_bytes().to_vec(), attr_of(self.ino_of(&child), &m)));
            }
        }
        Ok(out)
    }

    pub fn parent(&self, ino: u64) -> Option<u64> {
        let rel = self.rel(ino).ok()?;
        match rel.parent() {
            Some(p) if !p.as_os_str().is_empty() => Some(self.ino_of(p)),
            _ => Some(OUTBOX),
        }
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32) -> Result<Attr, FsError> {
        if parent == OUTBOX {
            return Err(FsError::ReadOnly);
        }
        let rel = self.child(parent, name)?;
        let path = self.root.join(&rel);
        fs::create_dir(&path).map_err(io(&path))?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777));
        self.touch(&rel, 0);
        self.lookup(parent, name)
    }

    pub fn create(&self, parent: u64, name: &OsStr, mode: u32) -> Result<(Attr, u64), FsError> {
        if parent == OUTBOX {
            return Err(FsError::ReadOnly);
        }
        let rel = self.child(parent, name)?;
        let path = self.root.join(&rel);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&path)
            .map_err(io(&path))?;
        let attr = attr_of(self.ino_of(&rel), &file.metadata().map_err(io(&path))?);
        Ok((attr, self.hold(file, &rel)))
    }

    fn hold(&self, file: File, rel: &Path) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let key = Outbox::item_of(rel).unwrap_or_default();
        self.touch(rel, 1);
        lock(&self.files).insert(fh, (file, key));
        fh
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, FsError> {
        let rel = self.rel(ino)?;
        let path = self.root.join(&rel);
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let file = OpenOptions::new()
            .read(true)
            .write(writing)
            .truncate(writing && flags & libc::O_TRUNC != 0)
            .open(&path)
            .map_err(io(&path))?;
        Ok(self.hold(file, &rel))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let files = lock(&self.files);
        let (file, _) = files.get(&fh).ok_or(FsError::BadHandle)?;
        let mut buf = vec![0u8; size as usize];
        let n = file
            .read_at(&mut buf, offset)
            .map_err(io(Path::new("outbox")))?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<(), FsError> {
        let key = {
            let files = lock(&self.files);
            let (file, key) = files.get(&fh).ok_or(FsError::BadHandle)?;
            file.write_all_at(data, offset)
                .map_err(io(Path::new("outbox")))?;
            key.clone()
        };
        if let Some(b) = lock(&self.busy).get_mut(&key) {
            b.written = Instant::now();
        }
        Ok(())
    }

    pub fn release(&self, fh: u64) {
        let Some((_, key)) = lock(&self.files).remove(&fh) else {
            return;
        };
        if let Some(b) = lock(&self.busy).get_mut(&key) {
            b.open = b.open.saturating_sub(1);
            b.written = Instant::now();
        }
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> Result<Attr, FsError> {
        if ino == OUTBOX {
            return Err(FsError::ReadOnly);
        }
        let rel = self.rel(ino)?;
        let path = self.root.join(&rel);
        if let Some(mode) = set.mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io(&path))?;
        }
        if let Some(size) = set.size {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(size))
                .map_err(io(&path))?;
        }
        if set.mtime.is_some() || set.atime.is_some() {
            let f = File::options()
                .write(!fs::metadata(&path).map_err(io(&path))?.is_dir())
                .read(true)
                .open(&path)
                .map_err(io(&path))?;
            let mut times = fs::FileTimes::new();
            if let Some(t) = set.mtime {
                times = times.set_modified(t);
            }
            if let Some(t) = set.atime {
                times = times.set_accessed(t);
            }
            // A directory opened read-only cannot take times this way; its times do
            // not travel with an item anyway.
            let _ = f.set_times(times);
        }
        self.touch(&rel, 0);
        self.attr(ino)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        if parent == OUTBOX {
            return Err(FsError::ReadOnly);
        }
        let rel = self.child(parent, name)?;
        let path = self.root.join(&rel);
        fs::remove_file(&path).map_err(io(&path))
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        if parent == OUTBOX {
            return Err(FsError::ReadOnly);
        }
        let rel = self.child(parent, name)?;
        let path = self.root.join(&rel);
        fs::remove_dir(&path).map_err(io(&path))
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
    ) -> Result<(), FsError> {
        if parent == OUTBOX || newparent == OUTBOX {
            return Err(FsError::ReadOnly);
        }
        let (from, to) = (self.child(parent, name)?, self.child(newparent, newname)?);
        let (a, b) = (self.root.join(&from), self.root.join(&to));
        fs::rename(&a, &b).map_err(io(&a))?;
        let mut t = lock(&self.table);
        let moved: Vec<(PathBuf, u64)> = t
            .inos
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, ino) in moved {
            let Ok(below) = p.strip_prefix(&from) else {
                continue;
            };
            let new = to.join(below);
            t.inos.remove(&p);
            t.inos.insert(new.clone(), ino);
            t.paths.insert(ino, new);
        }
        drop(t);
        self.touch(&to, 0);
        Ok(())
    }

    /// `user.peerfs.delivery` of `ino`: how its item's delivery goes.
    pub fn delivery(&self, ino: u64) -> Result<String, FsError> {
        let rel = self.rel(ino)?;
        let (peer, item) = Outbox::item_of(&rel).ok_or(FsError::NoAttribute)?;
        if lock(&self.busy).contains_key(&(peer.clone(), item.clone())) {
            return Ok("being written".into());
        }
        (self.delivery)(&peer, &item).ok_or(FsError::NoAttribute)
    }

    /// Items finished being written (see `QUIET`): their peer, name and path on disk.
    /// Each is returned once per round of writing.
    pub fn finished(&self) -> Vec<(String, String, PathBuf)> {
        let mut busy = lock(&self.busy);
        let done: Vec<(String, String)> = busy
            .iter()
            .filter(|(_, b)| b.open == 0 && b.written.elapsed() >= QUIET)
            .map(|(k, _)| k.clone())
            .collect();
        done.into_iter()
            .filter_map(|(peer, item)| {
                busy.remove(&(peer.clone(), item.clone()));
                let path = self.root.join(&peer).join(&item);
                path.exists().then_some((peer, item, path))
            })
            .collect()
    }
}
