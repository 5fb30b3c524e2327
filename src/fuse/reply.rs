//! Replies: attributes as the kernel wants them, errors as errno values, and the shield
//! that turns a handler's panic into EIO for that one request.

use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyEmpty, TimeOrNow};
use tracing::{error, warn};

use super::PeerFs;
use crate::vfs::{panic_message, Attr, FsError, Kind};

/// Everything appears owned by the user who mounted.
#[derive(Clone, Copy)]
pub(super) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl PeerFs {
    /// `a` as the kernel wants it, owned by the user who mounted.
    pub(super) fn file_attr(&self, a: &Attr) -> FileAttr {
        self.owner.file_attr(a)
    }
}

impl Owner {
    pub fn file_attr(&self, a: &Attr) -> FileAttr {
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

/// Runs a request's handler so that a panic in it fails that one request (its reply,
/// dropped unanswered, becomes EIO) instead of ending a session thread.
pub(super) fn shielded(op: &str, handler: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
        error!(
            "FUSE {op}: internal error ({}); answered EIO",
            panic_message(&panic)
        );
    }
}

/// Answers an operation that returns nothing but success or an errno.
pub(super) fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// `errno` of a failed read or write of my drive's file, logged when it is EIO: my own
/// data should always be readable, so that is a fault somewhere (and a program that
/// mapped the file gets SIGBUS from it).
pub(super) fn drive_errno(op: &str, ino: u64, e: &FsError) -> Errno {
    let n = e.errno();
    if n == libc::EIO {
        warn!("{op} of inode {ino} in my drive failed: {e}");
    }
    Errno::from_i32(n)
}

pub(super) fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}
