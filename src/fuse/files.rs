//! Open files: create, open, read, write, flush, release, fsync, lseek, fallocate. My
//! drive's go through its handles; a peer's are read by inode, on the blocking pool
//! when they must wait on the network.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{
    FileHandle, FopenFlags, Generation, INodeNo, OpenFlags, ReplyCreate, ReplyData, ReplyEmpty,
    ReplyLseek, ReplyOpen, ReplyWrite, WriteFlags,
};

use super::reply::{drive_errno, errno, reply_empty};
use super::route::{read_only, ttl};
use super::{outbox, PeerFs};
use crate::vfs::ino::{is_outbox_ino, is_peer_ino};
use crate::vfs::{FsError, Seek};

pub(super) fn open(fs: &PeerFs, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
    if is_outbox_ino(ino.0) {
        return outbox::open(fs, ino.0, flags.0, reply);
    }
    let truncate = flags.0 & libc::O_TRUNC != 0;
    if is_peer_ino(ino.0) {
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        return match fs.attr_of(ino.0) {
            Ok(_) if writing || truncate => reply.error(errno(&FsError::ReadOnly)),
            // A new head of the peer invalidates the cached pages it changed.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&e)),
        };
    }
    match fs.drive.open(ino.0, truncate) {
        // Every change to the drive comes through this mount, so cached pages stay true.
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn read(
    fs: &PeerFs,
    ino: INodeNo,
    fh: FileHandle,
    offset: u64,
    size: u32,
    reply: ReplyData,
) {
    if is_outbox_ino(ino.0) {
        return outbox::read(fs, fh.0, offset, size, reply);
    }
    if is_peer_ino(ino.0) {
        let view = match fs.peer_view() {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&e)),
        };
        if size > 0 {
            fs.inbox_read(ino.0);
        }
        // Blocks already here (read ahead, or cached) are answered at once; only a
        // read that must wait on the network leaves the session thread.
        if let Some(data) = view.read_here(ino.0, offset, size) {
            return reply.data(&data);
        }
        return fs.offload(move || match view.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        });
    }
    match fs.drive.read(fh.0, offset, size) {
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(drive_errno("read", ino.0, &e)),
    }
}

pub(super) fn write(
    fs: &PeerFs,
    ino: INodeNo,
    fh: FileHandle,
    offset: u64,
    data: &[u8],
    write_flags: WriteFlags,
    reply: ReplyWrite,
) {
    if is_outbox_ino(ino.0) {
        return outbox::write(fs, fh.0, offset, data, reply);
    }
    let drop_privileges = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
    match fs.drive.write(fh.0, offset, data, drop_privileges) {
        Ok(()) => reply.written(data.len() as u32),
        Err(e) => reply.error(drive_errno("write", ino.0, &e)),
    }
}

pub(super) fn flush(fs: &PeerFs, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
    if is_peer_ino(ino.0) || is_outbox_ino(ino.0) {
        return reply.ok();
    }
    reply_empty(reply, fs.drive.flush(fh.0))
}

pub(super) fn release(fs: &PeerFs, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
    if is_outbox_ino(ino.0) {
        return outbox::release(fs, fh.0, reply);
    }
    if is_peer_ino(ino.0) {
        return reply.ok();
    }
    reply_empty(reply, fs.drive.release(fh.0))
}

pub(super) fn fsync(fs: &PeerFs, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
    if is_peer_ino(ino.0) || is_outbox_ino(ino.0) {
        return reply.ok();
    }
    let done = fs
        .drive
        .flush(fh.0)
        .and_then(|()| fs.drive.commit().map(drop));
    match done {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// `SEEK_DATA` and `SEEK_HOLE` (the kernel answers the other kinds itself): the
/// drive knows its holes; a peer's file is all data.
pub(super) fn lseek(
    fs: &PeerFs,
    ino: INodeNo,
    fh: FileHandle,
    offset: i64,
    whence: i32,
    reply: ReplyLseek,
) {
    let what = match whence {
        libc::SEEK_DATA => Seek::Data,
        libc::SEEK_HOLE => Seek::Hole,
        _ => return reply.error(errno(&FsError::Invalid)),
    };
    let Ok(offset) = u64::try_from(offset) else {
        return reply.error(errno(&FsError::PastEnd));
    };
    let found = if read_only(ino.0) || is_outbox_ino(ino.0) {
        fs.attr_of(ino.0).and_then(|a| match what {
            _ if offset >= a.size => Err(FsError::PastEnd),
            Seek::Data => Ok(offset),
            Seek::Hole => Ok(a.size),
        })
    } else {
        fs.drive.seek(fh.0, offset, what)
    };
    match found {
        Ok(at) => reply.offset(at as i64),
        Err(e) => reply.error(errno(&e)),
    }
}

/// `fallocate` without flags reserves nothing (blocks are written as data comes) but
/// grows the file as asked; punching holes and the other modes are not supported.
pub(super) fn fallocate(
    fs: &PeerFs,
    ino: INodeNo,
    fh: FileHandle,
    offset: u64,
    length: u64,
    mode: i32,
    reply: ReplyEmpty,
) {
    if read_only(ino.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if mode != 0 || is_outbox_ino(ino.0) {
        return reply.error(errno(&FsError::Unsupported));
    }
    let Some(end) = offset.checked_add(length) else {
        return reply.error(errno(&FsError::FileTooBig));
    };
    reply_empty(reply, fs.drive.grow(fh.0, end))
}

pub(super) fn create(
    fs: &PeerFs,
    parent: INodeNo,
    name: &OsStr,
    mode: u32,
    umask: u32,
    reply: ReplyCreate,
) {
    if read_only(parent.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if is_outbox_ino(parent.0) {
        return outbox::create(fs, parent.0, name, mode & !umask, reply);
    }
    match fs.drive.create(parent.0, name.as_bytes(), mode & !umask) {
        Ok((a, fh)) => reply.created(
            ttl(a.ino),
            &fs.file_attr(&a),
            Generation(0),
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE,
        ),
        Err(e) => reply.error(errno(&e)),
    }
}
