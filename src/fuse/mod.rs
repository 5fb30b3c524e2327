//! The FUSE adapter: kernel requests become `Drive` and `PeerView` calls, errors become
//! errno values (`FsError::errno`). The mount's top level is virtual:
//!
//! ```text
//! DIR/drive/   my drive, read-write (the drive's root inode)
//! DIR/peers/   followed peers' drives, read-only (`peers::PeerView`)
//! DIR/ipfs/    any CID, looked up by name (`peers::PeerView`)
//! DIR/inbox/   items peers sent me, read-only, once complete (`peers::inbox`)
//! DIR/outbox/  a folder per followed peer: what is copied there is sent (`outbox`)
//! ```
//!
//! Requests on peers' files may wait on the network, so they run on a blocking pool
//! and answer from there: a slow peer never holds a session thread, and `ls` of my own
//! drive keeps answering.
//!
//! - `PeerFs` (here): the `Filesystem` the session runs; each request goes to one
//!   handler below, inside `reply::shielded`.
//! - [`route`]: who answers an inode: the mount's own directories, my drive, or a
//!   peer's drive (off the session thread); what is read-only; cache lifetimes.
//! - [`entries`]: lookup, attributes, and making, removing and renaming entries.
//! - [`files`]: open files: create, open, read, write, flush, fsync, lseek, fallocate.
//! - [`dirs`]: directory listings taken at opendir and paged by readdir.
//! - [`xattr`]: the `user.peerfs.*` attributes; setting `user.peerfs.pin` pins.
//! - `outbox`: requests under `outbox/`, passed to [`crate::outbox`].
//! - [`reply`]: attributes as the kernel wants them, errors as errno, panics as EIO.

mod dirs;
mod entries;
mod files;
mod outbox;
mod reply;
mod route;
mod xattr;

pub use xattr::{PinOrder, Readers};

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, INodeNo, InitFlags, IoctlFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::drive::Drive;
use crate::peers::PeerView;
use crate::unixfs::edit::Removal;
use crate::vfs::FsError;
use dirs::Listings;
use reply::{errno, shielded, Owner};

/// The largest write the kernel sends in one request: a whole 1 MiB chunk.
const MAX_WRITE: u32 = 1024 * 1024;

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
    /// Where `user.peerfs.pin` changes go; `None`: they are refused.
    pin_orders: Option<std::sync::mpsc::Sender<PinOrder>>,
    /// Where `user.peerfs.readers` is read and changed; `None`: it is not there.
    readers: Option<Arc<dyn xattr::Readers>>,
    /// Told (sender folder, item name) on the first read of an inbox item's content.
    inbox_reads: Option<InboxReads>,
    /// Inodes whose read was told already, so a read costs a set lookup after that.
    inbox_told: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// `outbox/`, when the daemon sends what is copied there.
    outbox: Option<Arc<crate::outbox::Outbox>>,
    inbox_removes: Option<InboxRemoves>,
}

/// What the daemon does when an item in `inbox/` is read: send a read receipt.
pub type InboxReads = Arc<dyn Fn(&str, &str) + Send + Sync>;
/// What the daemon does when something in `inbox/<sender>/` is deleted: the sender's
/// folder, the path below it (the item's name first), and whether `rmdir` asked.
pub type InboxRemoves = Arc<dyn Fn(&str, &[String], Removal) -> Result<(), FsError> + Send + Sync>;

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
            pin_orders: None,
            readers: None,
            inbox_reads: None,
            inbox_told: std::sync::Mutex::default(),
            outbox: None,
            inbox_removes: None,
        }
    }

    /// Lets what is in `inbox/<sender>/` be deleted (or moved out) through `removes`.
    pub fn on_inbox_remove(&mut self, removes: InboxRemoves) {
        self.inbox_removes = Some(removes);
    }

    /// When `parent` is a sender's folder in `inbox/` or a directory below it, and
    /// deleting is on: the folder, the path from it to `parent`, and the deleter.
    fn inbox_folder(&self, parent: u64) -> Option<(String, Vec<String>, &InboxRemoves)> {
        let removes = self.inbox_removes.as_ref()?;
        let (folder, path) = self.peers.as_ref()?.inbox_path_of(parent)?;
        Some((folder, path, removes))
    }

    /// Shows `outbox/`, passed through to `outbox`.
    pub fn with_outbox(&mut self, outbox: Arc<crate::outbox::Outbox>) {
        self.outbox = Some(outbox);
    }

    /// Calls `reads` on the first read of each file's content under `inbox/`.
    pub fn on_inbox_read(&mut self, reads: InboxReads) {
        self.inbox_reads = Some(reads);
    }

    /// A read of peer inode `ino`: if it is an inbox item's, tells the daemon once.
    fn inbox_read(&self, ino: u64) {
        let (Some(reads), Some(view)) = (&self.inbox_reads, &self.peers) else {
            return;
        };
        {
            let mut told = self.inbox_told.lock().unwrap_or_else(|e| e.into_inner());
            if told.contains(&ino) {
                return;
            }
            // Bounded: a long session reading many peer files starts over.
            if told.len() > 100_000 {
                told.clear();
            }
            told.insert(ino);
        }
        if let Some((sender, item)) = view.inbox_item_of(ino) {
            reads(&sender, &item);
        }
    }

    /// Answers and changes `user.peerfs.readers` through `readers`.
    pub fn with_readers(&mut self, readers: Arc<dyn xattr::Readers>) {
        self.readers = Some(readers);
    }

    /// Sends pins and unpins asked for through `user.peerfs.pin` to `orders`.
    pub fn with_pin_orders(&mut self, orders: std::sync::mpsc::Sender<PinOrder>) {
        self.pin_orders = Some(orders);
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
        shielded("lookup", move || entries::lookup(self, parent, name, reply));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        shielded("forget", move || entries::forget(self, ino, nlookup));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        shielded("getattr", move || entries::getattr(self, ino, reply));
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
            entries::setattr(self, ino, mode, size, atime, mtime, reply)
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        shielded("readlink", move || entries::readlink(self, ino, reply));
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
            entries::mknod(self, parent, name, mode, umask, reply)
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
            entries::mkdir(self, parent, name, mode, umask, reply)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        shielded("unlink", move || entries::unlink(self, parent, name, reply));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        shielded("rmdir", move || entries::rmdir(self, parent, name, reply));
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
            entries::symlink(self, parent, link_name, target, reply)
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
            entries::rename(self, parent, name, newparent, newname, flags, reply)
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
            reply.error(errno(&FsError::NotSupported));
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        shielded("open", move || files::open(self, ino, flags, reply));
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
            files::read(self, ino, fh, offset, size, reply)
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
            files::write(self, ino, fh, offset, data, write_flags, reply)
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
        shielded("flush", move || files::flush(self, ino, fh, reply));
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
        shielded("release", move || files::release(self, ino, fh, reply));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        shielded("fsync", move || files::fsync(self, ino, fh, reply));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        shielded("opendir", move || dirs::opendir(self, ino, reply));
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        shielded("readdir", move || dirs::readdir(self, fh, offset, reply));
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        shielded("readdirplus", move || {
            dirs::readdirplus(self, fh, offset, reply)
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
        shielded("releasedir", move || dirs::releasedir(self, fh, reply));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        shielded("fsyncdir", move || dirs::fsyncdir(self, reply));
    }

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
            files::lseek(self, ino, fh, offset, whence, reply)
        });
    }

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
            files::fallocate(self, ino, fh, offset, length, mode, reply)
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
            reply.error(errno(&FsError::NoIoctl));
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
            // The disk's own errno, passed on as it is.
            Err(e) => reply.error(Errno::from(e)),
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        shielded("getxattr", move || {
            xattr::getxattr(self, ino, name, size, reply)
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        shielded("listxattr", move || {
            xattr::listxattr(self, ino, size, reply)
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        shielded("setxattr", move || {
            if xattr::is_readers(ino, name) {
                return xattr::set_readers(self, ino, value, reply);
            }
            xattr::change_pin(self, ino, name, !xattr::says_no(value), reply)
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        shielded("removexattr", move || {
            xattr::change_pin(self, ino, name, false, reply)
        });
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        shielded("access", move || entries::access(self, ino, mask, reply));
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
            files::create(self, parent, name, mode, umask, reply)
        });
    }
}
