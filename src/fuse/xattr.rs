//! Extended attributes: every entry but the mount's own directories answers one,
//! `user.peerfs.cid`, its CID as of now; nothing can be set.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{INodeNo, ReplyEmpty, ReplyXattr};

use super::reply::errno;
use super::PeerFs;
use crate::vfs::ino::{is_mount_dir, is_peer_ino};
use crate::vfs::layout::CID_XATTR;
use crate::vfs::FsError;

pub(super) fn getxattr(fs: &PeerFs, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
    if name.as_bytes() != CID_XATTR.as_bytes() {
        return reply.error(errno(&FsError::NoAttribute));
    }
    let cid = match ino.0 {
        i if is_mount_dir(i) => return reply.error(errno(&FsError::NoAttribute)),
        i if is_peer_ino(i) => fs.peer_view().and_then(|v| v.cid(i)),
        i => fs.drive.cid(i),
    };
    match cid {
        Ok(cid) => xattr_reply(reply, cid.to_string().as_bytes(), size),
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn listxattr(ino: INodeNo, size: u32, reply: ReplyXattr) {
    let names = if is_mount_dir(ino.0) {
        Vec::new()
    } else {
        format!("{CID_XATTR}\0").into_bytes()
    };
    xattr_reply(reply, &names, size)
}

/// setxattr and removexattr: the CID is not ours to set, and nothing else is kept.
pub(super) fn refuse_change(reply: ReplyEmpty) {
    reply.error(errno(&FsError::Unsupported));
}

fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() > size as usize {
        reply.error(errno(&FsError::BufferTooSmall))
    } else {
        reply.data(value)
    }
}
