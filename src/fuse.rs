//! The FUSE adapter: kernel requests become `Drive` calls, errors become errno values
//! (`FsError::errno`). The mount's top level is virtual:
//!
//! ```text
//! DIR/drive/   my drive, read-write (the drive's root inode)
//! DIR/peers/   followed peers' drives, read-only (`peers::PeerView`)
//! ```
//!
//! Requests on peers' files may wait on the network, so they run on a blocking pool
//! and answer from there: a slow peer never holds a session thread, and `ls` of my own
//! drive keeps answering.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use tracing::{error, warn};

use crate::drive::Drive;
use crate::peers::PeerView;
pub use crate::vfs::ino::PEERS;
use crate::vfs::ino::{is_peer_ino, DRIVE_ROOT, MOUNT_ROOT};
use crate::vfs::{panic_message, Attr, FsError, Kind, Seek, SetAttr};

/// The names of the mount's two top-level directories.
pub const DRIVE_DIR: &str = "drive";
pub const PEERS_DIR: &str = "peers";
/// The drive changes only through this mount, so the kernel's cached entries and
/// attributes stay right; the TTL only bounds staleness if that ever stops being true.
/// Long, because every expired entry costs `ls -l`, `find` and rsync a round trip.
const DRIVE_TTL: Duration = Duration::from_secs(30);
/// Peers' drives change under the kernel (new heads); the view invalidates what changed,
/// and this short TTL covers the rest (the mount root, `peers/` itself).
const PEER_TTL: Duration = Duration::from_secs(1);
/// The largest write the kernel sends in one request: a whole 1 MiB chunk.
const MAX_WRITE: u32 = 1024 * 1024;
/// The attribute every entry answers: its CID.
pub const CID_XATTR: &str = "user.peerfs.cid";

type Listing = Vec<(Vec<u8>, Attr)>;

/// Directory listings taken at opendir, so readdir pages are consistent and cheap.
#[derive(Default)]
struct Listings {
    open: Mutex<HashMap<u64, Listing>>,
    next: AtomicU64,
}

impl Listings {
    fn insert(&self, listing: Listing) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, listing);
        fh
    }
}

/// Everything appears owned by the user who mounted.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

pub struct PeerFs {
    drive: Arc<Drive>,
    peers: Option<Arc<PeerView>>,
    /// Where requests that may wait on the network run.
    pool: Option<tokio::runtime::Handle>,
    owner: Owner,
    /// For statfs: the disk the repo lives on.
    repo: PathBuf,
    listings: Arc<Listings>,
    started: SystemTime,
}

impl PeerFs {
    pub fn new(
        drive: Arc<Drive>,
        peers: Option<(Arc<PeerView>, tokio::runtime::Handle)>,
        repo: &Path,
    ) -> PeerFs {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (peers, pool) = peers.unzip();
        PeerFs {
            drive,
            peers,
            pool,
            owner: Owner { uid, gid },
            repo: repo.to_path_buf(),
            listings: Arc::default(),
            started: SystemTime::now(),
        }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        self.owner.file_attr(a)
    }

    /// The peer view, for an inode that belongs to it.
    fn peer_view(&self) -> Result<Arc<PeerView>, FsError> {
        self.peers.clone().ok_or(FsError::NotFound)
    }

    /// Runs `job` on the blocking pool, so it may wait on the network.
    fn offload(&self, job: impl FnOnce() + Send + 'static) {
        match &self.pool {
            Some(pool) => drop(pool.spawn_blocking(job)),
            None => job(),
        }
    }
}

impl Owner {
    fn file_attr(&self, a: &Attr) -> FileAttr {
        let kind = match a.kind {
            Kind::File => FileType::RegularFile,
            Kind::Directory => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.allocated.div_ceil(512),
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.ctime,
            kind,
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl PeerFs {
    /// The mount's own directories: the top level and `peers/`.
    fn virtual_attr(&self, ino: u64) -> Attr {
        Attr {
            ino,
            kind: Kind::Directory,
            size: 0,
            allocated: 0,
            // Nothing can be made here: only drive/ and peers/ exist.
            perm: 0o555,
            mtime: self.started,
            ctime: self.started,
            atime: self.started,
            nlink: 1,
        }
    }

    fn attr_of(&self, ino: u64) -> Result<Attr, FsError> {
        match ino {
            MOUNT_ROOT | PEERS => Ok(self.virtual_attr(ino)),
            i if is_peer_ino(i) => self.peer_view()?.getattr(i),
            _ => self.drive.getattr(ino),
        }
    }

    /// Lists a directory with `.` and `..` first.
    fn listing(&self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>, FsError> {
        let (parent, entries) = match ino {
            MOUNT_ROOT => {
                let drive = self.drive.getattr(DRIVE_ROOT)?;
                let peers = self.virtual_attr(PEERS);
                (
                    MOUNT_ROOT,
                    vec![
                        (DRIVE_DIR.as_bytes().to_vec(), drive),
                        (PEERS_DIR.as_bytes().to_vec(), peers),
                    ],
                )
            }
            PEERS => (
                MOUNT_ROOT,
                self.peers.as_ref().map(|p| p.tops()).unwrap_or_default(),
            ),
            i if is_peer_ino(i) => {
                let view = self.peer_view()?;
                (view.parent(i), view.list(i)?)
            }
            DRIVE_ROOT => (MOUNT_ROOT, self.drive.list(ino)?),
            _ => (self.drive.parent(ino), self.drive.list(ino)?),
        };
        let mut out = vec![
            (b".".to_vec(), self.attr_of(ino)?),
            (b"..".to_vec(), self.attr_of(parent)?),
        ];
        out.extend(entries);
        Ok(out)
    }

    fn listing_page(&self, fh: FileHandle, offset: u64) -> Vec<(usize, Vec<u8>, Attr)> {
        let listings = self.listings.open.lock().unwrap_or_else(|e| e.into_inner());
        listings.get(&fh.0).map_or_else(Vec::new, |l| {
            l.iter()
                .enumerate()
                .skip(offset as usize)
                .map(|(i, (n, a))| (i, n.clone(), *a))
                .collect()
        })
    }
}

/// Runs a request's handler so that a panic in it fails that one request (its reply,
/// dropped unanswered, becomes EIO) instead of ending a session thread.
fn shielded(op: &str, handler: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
        error!(
            "FUSE {op}: internal error ({}); answered EIO",
            panic_message(&panic)
        );
    }
}

/// Answers an operation that returns nothing but success or an errno.
fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// `errno` of a failed read or write of my drive's file, logged when it is EIO: my own
/// data should always be readable, so that is a fault somewhere (and a program that
/// mapped the file gets SIGBUS from it).
fn drive_errno(op: &str, ino: u64, e: &FsError) -> Errno {
    let n = e.errno();
    if n == libc::EIO {
        warn!("{op} of inode {ino} in my drive failed: {e}");
    }
    Errno::from_i32(n)
}

/// Where writes are refused: the mount's own directories and everything under peers/.
fn read_only(ino: u64) -> bool {
    ino == MOUNT_ROOT || ino == PEERS || is_peer_ino(ino)
}

fn ttl(ino: u64) -> &'static Duration {
    if read_only(ino) {
        &PEER_TTL
    } else {
        &DRIVE_TTL
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for PeerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(cap);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        shielded("lookup", move || {
            let name = name.as_bytes();
            let found = match parent.0 {
                MOUNT_ROOT => match name {
                    n if n == DRIVE_DIR.as_bytes() => self.drive.lookup_root(),
                    n if n == PEERS_DIR.as_bytes() => Ok(self.virtual_attr(PEERS)),
                    _ => Err(FsError::NotFound),
                },
                p if p == PEERS || is_peer_ino(p) => {
                    let view = match self.peer_view() {
                        Ok(v) => v,
                        Err(e) => return reply.error(errno(&e)),
                    };
                    let (name, owner) = (name.to_vec(), self.owner);
                    return self.offload(move || match view.lookup(p, &name) {
                        Ok(a) => reply.entry(&PEER_TTL, &owner.file_attr(&a), Generation(0)),
                        Err(e) => reply.error(errno(&e)),
                    });
                }
                p => self.drive.lookup(p, name),
            };
            match found {
                Ok(a) => reply.entry(ttl(a.ino), &self.file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        shielded("forget", move || {
            if is_peer_ino(ino.0) {
                if let Some(view) = &self.peers {
                    view.forget(ino.0, nlookup);
                }
            } else if !read_only(ino.0) {
                self.drive.forget(ino.0, nlookup);
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        shielded("getattr", move || match self.attr_of(ino.0) {
            Ok(a) => reply.attr(ttl(a.ino), &self.file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        shielded("setattr", move || {
            if read_only(ino.0) {
                return reply.error(Errno::EROFS);
            }
            // Owners are not stored (UnixFS has no field for them): chown is accepted and
            // changes nothing, so `rsync -a` and `cp -a` as root succeed.
            let set = SetAttr {
                mode,
                size,
                mtime: mtime.map(time),
                atime: atime.map(time),
            };
            match self.drive.setattr(ino.0, set) {
                Ok(a) => reply.attr(ttl(a.ino), &self.file_attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        shielded("readlink", move || {
            if is_peer_ino(ino.0) {
                let view = match self.peer_view() {
                    Ok(v) => v,
                    Err(e) => return reply.error(errno(&e)),
                };
                return self.offload(move || match view.readlink(ino.0) {
                    Ok(t) => reply.data(&t),
                    Err(e) => reply.error(errno(&e)),
                });
            }
            match self.drive.readlink(ino.0) {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        shielded("mknod", move || {
            if read_only(parent.0) {
                return reply.error(Errno::EROFS);
            }
            if mode & libc::S_IFMT != libc::S_IFREG {
                // Device nodes, FIFOs and sockets have no UnixFS form.
                return reply.error(Errno::EPERM);
            }
            match self.drive.create(parent.0, name.as_bytes(), mode & !umask) {
                Ok((a, fh)) => {
                    let _ = self.drive.release(fh);
                    reply.entry(ttl(a.ino), &self.file_attr(&a), Generation(0))
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        shielded("mkdir", move || {
            if read_only(parent.0) {
                return reply.error(Errno::EROFS);
            }
            match self.drive.mkdir(parent.0, name.as_bytes(), mode & !umask) {
                Ok(a) => reply.entry(ttl(a.ino), &self.file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        shielded("unlink", move || {
            if read_only(parent.0) {
                return reply.error(Errno::EROFS);
            }
            reply_empty(reply, self.drive.unlink(parent.0, name.as_bytes()))
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        shielded("rmdir", move || {
            if read_only(parent.0) {
                return reply.error(Errno::EROFS);
            }
            reply_empty(reply, self.drive.rmdir(parent.0, name.as_bytes()))
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        shielded("symlink", move || {
            if read_only(parent.0) {
                return reply.error(Errno::EROFS);
            }
            let target = target.as_os_str().as_bytes();
            match self.drive.symlink(parent.0, link_name.as_bytes(), target) {
                Ok(a) => reply.entry(ttl(a.ino), &self.file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        shielded("rename", move || {
            if read_only(parent.0) || read_only(newparent.0) {
                return reply.error(Errno::EROFS);
            }
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return reply.error(Errno::EINVAL);
            }
            let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            reply_empty(
                reply,
                self.drive.rename(
                    parent.0,
                    name.as_bytes(),
                    newparent.0,
                    newname.as_bytes(),
                    no_replace,
                ),
            )
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        shielded("link", move || {
            // UnixFS has no hard links.
            reply.error(Errno::EPERM);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        shielded("open", move || {
            let truncate = flags.0 & libc::O_TRUNC != 0;
            if is_peer_ino(ino.0) {
                let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
                return match self.attr_of(ino.0) {
                    Ok(_) if writing || truncate => reply.error(Errno::EROFS),
                    // A new head of the peer invalidates the cached pages it changed.
                    Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
                    Err(e) => reply.error(errno(&e)),
                };
            }
            match self.drive.open(ino.0, truncate) {
                // Every change to the drive comes through this mount, so cached pages stay true.
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        shielded("read", move || {
            if is_peer_ino(ino.0) {
                let view = match self.peer_view() {
                    Ok(v) => v,
                    Err(e) => return reply.error(errno(&e)),
                };
                // Blocks already here (read ahead, or cached) are answered at once; only a
                // read that must wait on the network leaves the session thread.
                if let Some(data) = view.read_here(ino.0, offset, size) {
                    return reply.data(&data);
                }
                return self.offload(move || match view.read(ino.0, offset, size) {
                    Ok(data) => reply.data(&data),
                    Err(e) => reply.error(errno(&e)),
                });
            }
            match self.drive.read(fh.0, offset, size) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(drive_errno("read", ino.0, &e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        shielded("write", move || {
            let drop_privileges = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
            match self.drive.write(fh.0, offset, data, drop_privileges) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(drive_errno("write", ino.0, &e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        shielded("flush", move || {
            if is_peer_ino(ino.0) {
                return reply.ok();
            }
            reply_empty(reply, self.drive.flush(fh.0))
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        shielded("release", move || {
            if is_peer_ino(ino.0) {
                return reply.ok();
            }
            reply_empty(reply, self.drive.release(fh.0))
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        shielded("fsync", move || {
            if is_peer_ino(ino.0) {
                return reply.ok();
            }
            let done = self
                .drive
                .flush(fh.0)
                .and_then(|()| self.drive.commit().map(drop));
            match done {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        shielded("opendir", move || {
            if is_peer_ino(ino.0) {
                let (view, listings) = match self.peer_view() {
                    Ok(v) => (v, Arc::clone(&self.listings)),
                    Err(e) => return reply.error(errno(&e)),
                };
                let peers_attr = self.virtual_attr(PEERS);
                return self.offload(move || {
                    let listing = view.list(ino.0).and_then(|entries| {
                        let parent = view.parent(ino.0);
                        let attr_of = |i| match i {
                            PEERS => Ok(peers_attr),
                            _ => view.getattr(i),
                        };
                        let mut out = vec![
                            (b".".to_vec(), attr_of(ino.0)?),
                            (b"..".to_vec(), attr_of(parent)?),
                        ];
                        out.extend(entries);
                        Ok(out)
                    });
                    match listing {
                        Ok(l) => reply.opened(FileHandle(listings.insert(l)), FopenFlags::empty()),
                        Err(e) => reply.error(errno(&e)),
                    }
                });
            }
            match self.listing(ino.0) {
                Ok(entries) => {
                    let fh = self.listings.insert(entries);
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        shielded("readdir", move || {
            for (i, name, a) in self.listing_page(fh, offset) {
                let kind = self.file_attr(&a).kind;
                if reply.add(INodeNo(a.ino), i as u64 + 1, kind, OsStr::from_bytes(&name)) {
                    break;
                }
            }
            reply.ok()
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        shielded("readdirplus", move || {
            for (i, name, a) in self.listing_page(fh, offset) {
                let attr = self.file_attr(&a);
                let name = OsStr::from_bytes(&name);
                if reply.add(
                    INodeNo(a.ino),
                    i as u64 + 1,
                    name,
                    ttl(a.ino),
                    &attr,
                    Generation(0),
                ) {
                    break;
                }
                // The kernel holds every entry but . and .. as if looked up.
                if i >= 2 && !read_only(a.ino) {
                    self.drive.remember(a.ino);
                }
            }
            reply.ok()
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        shielded("releasedir", move || {
            self.listings
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&fh.0);
            reply.ok()
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        shielded("fsyncdir", move || match self.drive.commit() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        });
    }

    /// `SEEK_DATA` and `SEEK_HOLE` (the kernel answers the other kinds itself): the
    /// drive knows its holes; a peer's file is all data.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        shielded("lseek", move || {
            let what = match whence {
                libc::SEEK_DATA => Seek::Data,
                libc::SEEK_HOLE => Seek::Hole,
                _ => return reply.error(Errno::EINVAL),
            };
            let Ok(offset) = u64::try_from(offset) else {
                return reply.error(Errno::ENXIO);
            };
            let found = if read_only(ino.0) {
                self.attr_of(ino.0).and_then(|a| match what {
                    _ if offset >= a.size => Err(FsError::PastEnd),
                    Seek::Data => Ok(offset),
                    Seek::Hole => Ok(a.size),
                })
            } else {
                self.drive.seek(fh.0, offset, what)
            };
            match found {
                Ok(at) => reply.offset(at as i64),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    /// `fallocate` without flags reserves nothing (blocks are written as data comes) but
    /// grows the file as asked; punching holes and the other modes are not supported.
    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        shielded("fallocate", move || {
            if read_only(ino.0) {
                return reply.error(Errno::EROFS);
            }
            if mode != 0 {
                return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
            }
            let Some(end) = offset.checked_add(length) else {
                return reply.error(Errno::from_i32(libc::EFBIG));
            };
            reply_empty(reply, self.drive.grow(fh.0, end))
        });
    }

    /// No ioctls: terminal requests (`TCGETS`, as vim and Python send) get the answer a
    /// plain file gives, quietly.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        shielded("ioctl", move || {
            reply.error(Errno::from_i32(libc::ENOTTY));
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        shielded("statfs", move || match crate::disk::statvfs(&self.repo) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from(e)),
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        shielded("getxattr", move || {
            if name.as_bytes() != CID_XATTR.as_bytes() {
                return reply.error(Errno::from_i32(libc::ENODATA));
            }
            let cid = match ino.0 {
                MOUNT_ROOT | PEERS => return reply.error(Errno::from_i32(libc::ENODATA)),
                i if is_peer_ino(i) => self.peer_view().and_then(|v| v.cid(i)),
                i => self.drive.cid(i),
            };
            match cid {
                Ok(cid) => xattr_reply(reply, cid.to_string().as_bytes(), size),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        shielded("listxattr", move || {
            let names = if ino.0 == MOUNT_ROOT || ino.0 == PEERS {
                Vec::new()
            } else {
                format!("{CID_XATTR}\0").into_bytes()
            };
            xattr_reply(reply, &names, size)
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        shielded("setxattr", move || {
            reply.error(Errno::from_i32(libc::ENOTSUP));
        });
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        shielded("removexattr", move || {
            reply.error(Errno::from_i32(libc::ENOTSUP));
        });
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        shielded("access", move || {
            if mask.contains(AccessFlags::W_OK) && read_only(ino.0) {
                return reply.error(Errno::EROFS);
            }
            match self.attr_of(ino.0) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        shielded("create", move || {
            if read_only(parent.0) {
                return reply.error(Errno::EROFS);
            }
            match self.drive.create(parent.0, name.as_bytes(), mode & !umask) {
                Ok((a, fh)) => reply.created(
                    ttl(a.ino),
                    &self.file_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE))
    } else {
        reply.data(value)
    }
}
