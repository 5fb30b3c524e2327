//! Entries: lookup, attributes, symlinks, and making, removing and renaming entries of
//! my drive; peers' drives answer lookups and attributes only.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuser::{
    AccessFlags, Generation, INodeNo, RenameFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    TimeOrNow,
};

use super::reply::{errno, reply_empty, time};
use super::route::{read_only, ttl, PEER_TTL};
use super::{outbox, PeerFs};
use crate::unixfs::edit::Removal;
use crate::vfs::ino::{is_outbox_ino, is_peer_ino, IPFS, MOUNT_ROOT, OUTBOX, PEERS};
use crate::vfs::layout::{DRIVE_DIR, INBOX_DIR, IPFS_DIR, OUTBOX_DIR, PEERS_DIR};
use crate::vfs::{FsError, SetAttr};

pub(super) fn lookup(fs: &PeerFs, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
    let name = name.as_bytes();
    let found = match parent.0 {
        MOUNT_ROOT => match name {
            n if n == DRIVE_DIR.as_bytes() => fs.drive.lookup_root(),
            n if n == PEERS_DIR.as_bytes() => Ok(fs.virtual_attr(PEERS)),
            n if n == IPFS_DIR.as_bytes() => Ok(fs.virtual_attr(IPFS)),
            n if n == OUTBOX_DIR.as_bytes() => fs.outbox().and_then(|o| o.attr(OUTBOX)),
            n if n == INBOX_DIR.as_bytes() => match fs.peer_view() {
                Ok(view) => view.lookup_inbox(),
                Err(e) => Err(e),
            },
            _ => Err(FsError::NotFound),
        },
        p if is_outbox_ino(p) => return outbox::lookup(fs, p, OsStr::from_bytes(name), reply),
        p if p == PEERS || p == IPFS || is_peer_ino(p) => {
            let view = match fs.peer_view() {
                Ok(v) => v,
                Err(e) => return reply.error(errno(&e)),
            };
            let (name, owner) = (name.to_vec(), fs.owner);
            return fs.offload(move || match view.lookup(p, &name) {
                Ok(a) => reply.entry(&PEER_TTL, &owner.file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            });
        }
        p => fs.drive.lookup(p, name),
    };
    match found {
        Ok(a) => reply.entry(ttl(a.ino), &fs.file_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn forget(fs: &PeerFs, ino: INodeNo, nlookup: u64) {
    if is_peer_ino(ino.0) {
        if let Some(view) = &fs.peers {
            view.forget(ino.0, nlookup);
        }
    } else if !read_only(ino.0) && !is_outbox_ino(ino.0) {
        fs.drive.forget(ino.0, nlookup);
    }
}

pub(super) fn getattr(fs: &PeerFs, ino: INodeNo, reply: ReplyAttr) {
    match fs.attr_of(ino.0) {
        Ok(a) => reply.attr(ttl(a.ino), &fs.file_attr(&a)),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn setattr(
    fs: &PeerFs,
    ino: INodeNo,
    mode: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    reply: ReplyAttr,
) {
    if read_only(ino.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    // Owners are not stored (UnixFS has no field for them): chown is accepted and
    // changes nothing, so `rsync -a` and `cp -a` as root succeed.
    let set = SetAttr {
        mode,
        size,
        mtime: mtime.map(time),
        atime: atime.map(time),
    };
    if is_outbox_ino(ino.0) {
        return outbox::setattr(fs, ino.0, set, reply);
    }
    match fs.drive.setattr(ino.0, set) {
        Ok(a) => reply.attr(ttl(a.ino), &fs.file_attr(&a)),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn readlink(fs: &PeerFs, ino: INodeNo, reply: ReplyData) {
    if is_outbox_ino(ino.0) {
        return reply.error(errno(&FsError::Invalid));
    }
    if is_peer_ino(ino.0) {
        let view = match fs.peer_view() {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&e)),
        };
        return fs.offload(move || match view.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        });
    }
    match fs.drive.readlink(ino.0) {
        Ok(t) => reply.data(&t),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn mknod(
    fs: &PeerFs,
    parent: INodeNo,
    name: &OsStr,
    mode: u32,
    umask: u32,
    reply: ReplyEntry,
) {
    if read_only(parent.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if mode & libc::S_IFMT != libc::S_IFREG {
        // Device nodes, FIFOs and sockets have no UnixFS form.
        return reply.error(errno(&FsError::NotSupported));
    }
    if is_outbox_ino(parent.0) {
        return outbox::mknod(fs, parent.0, name, mode & !umask, reply);
    }
    match fs.drive.create(parent.0, name.as_bytes(), mode & !umask) {
        Ok((a, fh)) => {
            let _ = fs.drive.release(fh);
            reply.entry(ttl(a.ino), &fs.file_attr(&a), Generation(0))
        }
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn mkdir(
    fs: &PeerFs,
    parent: INodeNo,
    name: &OsStr,
    mode: u32,
    umask: u32,
    reply: ReplyEntry,
) {
    if read_only(parent.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if is_outbox_ino(parent.0) {
        return outbox::mkdir(fs, parent.0, name, mode & !umask, reply);
    }
    match fs.drive.mkdir(parent.0, name.as_bytes(), mode & !umask) {
        Ok(a) => reply.entry(ttl(a.ino), &fs.file_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn unlink(fs: &PeerFs, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
    if let Some((folder, mut path, removes)) = fs.inbox_folder(parent.0) {
        path.push(name.to_string_lossy().into_owned());
        return reply_empty(reply, removes(&folder, &path, Removal::NotDirectory));
    }
    if read_only(parent.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if is_outbox_ino(parent.0) {
        return outbox::unlink(fs, parent.0, name, reply);
    }
    reply_empty(reply, fs.drive.unlink(parent.0, name.as_bytes()))
}

pub(super) fn rmdir(fs: &PeerFs, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
    if let Some((folder, mut path, removes)) = fs.inbox_folder(parent.0) {
        path.push(name.to_string_lossy().into_owned());
        return reply_empty(reply, removes(&folder, &path, Removal::EmptyDirectory));
    }
    if read_only(parent.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if is_outbox_ino(parent.0) {
        return outbox::rmdir(fs, parent.0, name, reply);
    }
    reply_empty(reply, fs.drive.rmdir(parent.0, name.as_bytes()))
}

pub(super) fn symlink(
    fs: &PeerFs,
    parent: INodeNo,
    link_name: &OsStr,
    target: &Path,
    reply: ReplyEntry,
) {
    if read_only(parent.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if is_outbox_ino(parent.0) {
        return reply.error(errno(&FsError::Unsupported));
    }
    let target = target.as_os_str().as_bytes();
    match fs.drive.symlink(parent.0, link_name.as_bytes(), target) {
        Ok(a) => reply.entry(ttl(a.ino), &fs.file_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn rename(
    fs: &PeerFs,
    parent: INodeNo,
    name: &OsStr,
    newparent: INodeNo,
    newname: &OsStr,
    flags: RenameFlags,
    reply: ReplyEmpty,
) {
    // Out of the inbox: `mv` copies, then deletes the item.
    if fs.inbox_folder(parent.0).is_some() && parent != newparent {
        return reply.error(fuser::Errno::from_i32(libc::EXDEV));
    }
    if read_only(parent.0) || read_only(newparent.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
        return reply.error(errno(&FsError::Invalid));
    }
    match (is_outbox_ino(parent.0), is_outbox_ino(newparent.0)) {
        (true, true) => return outbox::rename(fs, parent.0, name, newparent.0, newname, reply),
        (false, false) => {}
        // Between the outbox and the drive: `mv` copies instead.
        _ => return reply.error(fuser::Errno::from_i32(libc::EXDEV)),
    }
    let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
    reply_empty(
        reply,
        fs.drive.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            no_replace,
        ),
    )
}

pub(super) fn access(fs: &PeerFs, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
    if mask.contains(AccessFlags::W_OK) && read_only(ino.0) {
        return reply.error(errno(&FsError::ReadOnly));
    }
    match fs.attr_of(ino.0) {
        Ok(_) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}
