//! Requests under `outbox/`, passed to [`crate::outbox::Outbox`]: plain files on the
//! repo's disk, so each answers at once and on the session thread.

use std::ffi::OsStr;

use fuser::{
    FileHandle, FopenFlags, Generation, ReplyAttr, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite,
};

use super::reply::{errno, reply_empty};
use super::route::ttl;
use super::PeerFs;
use crate::outbox::Outbox;
use crate::vfs::{FsError, SetAttr};

impl PeerFs {
    pub(super) fn outbox(&self) -> Result<&Outbox, FsError> {
        self.outbox.as_deref().ok_or(FsError::NotFound)
    }
}

pub(super) fn entry(fs: &PeerFs, found: Result<crate::vfs::Attr, FsError>, reply: ReplyEntry) {
    match found {
        Ok(a) => reply.entry(ttl(a.ino), &fs.file_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn lookup(fs: &PeerFs, parent: u64, name: &OsStr, reply: ReplyEntry) {
    entry(fs, fs.outbox().and_then(|o| o.lookup(parent, name)), reply)
}

pub(super) fn setattr(fs: &PeerFs, ino: u64, set: SetAttr, reply: ReplyAttr) {
    match fs.outbox().and_then(|o| o.setattr(ino, set)) {
        Ok(a) => reply.attr(ttl(a.ino), &fs.file_attr(&a)),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn mkdir(fs: &PeerFs, parent: u64, name: &OsStr, mode: u32, reply: ReplyEntry) {
    entry(
        fs,
        fs.outbox().and_then(|o| o.mkdir(parent, name, mode)),
        reply,
    )
}

pub(super) fn mknod(fs: &PeerFs, parent: u64, name: &OsStr, mode: u32, reply: ReplyEntry) {
    let made = fs.outbox().and_then(|o| {
        let (a, fh) = o.create(parent, name, mode)?;
        o.release(fh);
        Ok(a)
    });
    entry(fs, made, reply)
}

pub(super) fn create(fs: &PeerFs, parent: u64, name: &OsStr, mode: u32, reply: ReplyCreate) {
    match fs.outbox().and_then(|o| o.create(parent, name, mode)) {
        Ok((a, fh)) => reply.created(
            ttl(a.ino),
            &fs.file_attr(&a),
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
        ),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn open(fs: &PeerFs, ino: u64, flags: i32, reply: ReplyOpen) {
    match fs.outbox().and_then(|o| o.open(ino, flags)) {
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn read(fs: &PeerFs, fh: u64, offset: u64, size: u32, reply: ReplyData) {
    match fs.outbox().and_then(|o| o.read(fh, offset, size)) {
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn write(fs: &PeerFs, fh: u64, offset: u64, data: &[u8], reply: ReplyWrite) {
    match fs.outbox().and_then(|o| o.write(fh, offset, data)) {
        Ok(()) => reply.written(data.len() as u32),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn release(fs: &PeerFs, fh: u64, reply: ReplyEmpty) {
    if let Ok(o) = fs.outbox() {
        o.release(fh);
    }
    reply.ok()
}

pub(super) fn unlink(fs: &PeerFs, parent: u64, name: &OsStr, reply: ReplyEmpty) {
    reply_empty(reply, fs.outbox().and_then(|o| o.unlink(parent, name)))
}

pub(super) fn rmdir(fs: &PeerFs, parent: u64, name: &OsStr, reply: ReplyEmpty) {
    reply_empty(reply, fs.outbox().and_then(|o| o.rmdir(parent, name)))
}

pub(super) fn rename(
    fs: &PeerFs,
    parent: u64,
    name: &OsStr,
    newparent: u64,
    newname: &OsStr,
    reply: ReplyEmpty,
) {
    reply_empty(
        reply,
        fs.outbox()
            .and_then(|o| o.rename(parent, name, newparent, newname)),
    )
}
