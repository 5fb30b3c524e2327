//! Extended attributes. Every entry but the mount's own directories answers
//! `user.peerfs.cid`, its CID as of now; an entry of a peer's drive (or under `ipfs/`)
//! also says where it comes from: the peer and the head that brought it, whether all
//! of it is here, whether it is pinned. Setting `user.peerfs.pin` on such an entry
//! pins it, removing it unpins: the order goes to the daemon, which pins in the
//! background (the call returns at once; `user.peerfs.pinned` says when it is done).
//! On a directory of my drive, `user.peerfs.readers` says who may read it (a private
//! folder) and setting it changes that. Nothing else can be set, and outside `user.*`
//! nothing is supported (`EOPNOTSUPP`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use cid::Cid;

use fuser::{INodeNo, ReplyEmpty, ReplyXattr};

use super::reply::errno;
use super::PeerFs;
use crate::peers::PeerView;
use crate::vfs::ino::{is_mount_dir, is_outbox_ino, is_peer_ino};
use crate::vfs::layout::{
    CID_XATTR, DELIVERY_XATTR, HEAD_SEQ_XATTR, HEAD_TIME_XATTR, LOCAL_XATTR, PEER_ID_XATTR,
    PEER_XATTR, PINNED_XATTR, PIN_XATTR, READERS_XATTR,
};
use crate::vfs::FsError;

/// The attributes an entry of a peer's drive answers.
const PEER_XATTRS: [&str; 7] = [
    CID_XATTR,
    PEER_XATTR,
    PEER_ID_XATTR,
    HEAD_SEQ_XATTR,
    HEAD_TIME_XATTR,
    LOCAL_XATTR,
    PINNED_XATTR,
];

pub(super) fn getxattr(fs: &PeerFs, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
    let name = name.as_bytes();
    // Only `user.*` attributes exist here (no ACLs, no security labels). Saying so,
    // rather than "no such attribute", lets `ls -l` stop asking after the first entry
    // (it remembers a device without support): it asked every entry for
    // `security.selinux` and `system.posix_acl_access`, two round trips through FUSE
    // per entry that the kernel caches for neither.
    if !name.starts_with(b"user.") {
        return reply.error(errno(&FsError::Unsupported));
    }
    if is_peer_ino(ino.0) {
        // Any other is absent: answered here, not after a trip to the pool.
        if !PEER_XATTRS.iter().any(|n| n.as_bytes() == name) {
            return reply.error(errno(&FsError::NoAttribute));
        }
        let view = match fs.peer_view() {
            Ok(v) => v,
            Err(e) => return reply.error(errno(&e)),
        };
        let name = name.to_vec();
        // Whether all of it is here reads the store.
        return fs.offload(move || match peer_xattr(&view, ino.0, &name) {
            Ok(value) => xattr_reply(reply, value.as_bytes(), size),
            Err(e) => reply.error(errno(&e)),
        });
    }
    if is_outbox_ino(ino.0) {
        if name != DELIVERY_XATTR.as_bytes() {
            return reply.error(errno(&FsError::NoAttribute));
        }
        return match fs.outbox().and_then(|o| o.delivery(ino.0)) {
            Ok(value) => xattr_reply(reply, value.as_bytes(), size),
            Err(e) => reply.error(errno(&e)),
        };
    }
    if name == READERS_XATTR.as_bytes() && !is_mount_dir(ino.0) {
        return readers_of(fs, ino.0, size, reply);
    }
    if name != CID_XATTR.as_bytes() || is_mount_dir(ino.0) {
        return reply.error(errno(&FsError::NoAttribute));
    }
    match fs.drive.cid(ino.0) {
        Ok(cid) => xattr_reply(reply, cid.to_string().as_bytes(), size),
        Err(e) => reply.error(errno(&e)),
    }
}

/// An attribute of an entry of a peer's drive, as text.
fn peer_xattr(view: &Arc<PeerView>, ino: u64, name: &[u8]) -> Result<String, FsError> {
    let origin = view.origin(ino)?;
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let name = std::str::from_utf8(name).map_err(|_| FsError::NoAttribute)?;
    Ok(match name {
        CID_XATTR => origin.cid.to_string(),
        PEER_XATTR => origin.peer.ok_or(FsError::NoAttribute)?.0,
        PEER_ID_XATTR => origin.peer.ok_or(FsError::NoAttribute)?.1.to_string(),
        HEAD_SEQ_XATTR => origin.head.ok_or(FsError::NoAttribute)?.0.to_string(),
        HEAD_TIME_XATTR => {
            let (_, time) = origin.head.ok_or(FsError::NoAttribute)?;
            humantime::format_rfc3339_millis(time).to_string()
        }
        LOCAL_XATTR => match view.is_local(ino)? {
            Some(all) => yes_no(all),
            None => "unknown".to_string(),
        },
        PINNED_XATTR => yes_no(view.is_pinned(ino)?),
        // Not in `PEER_XATTRS`.
        _ => return Err(FsError::NoAttribute),
    })
}

pub(super) fn listxattr(fs: &PeerFs, ino: INodeNo, size: u32, reply: ReplyXattr) {
    let mut names: Vec<&str> = Vec::new();
    if is_peer_ino(ino.0) {
        let origin = fs.peer_view().and_then(|v| v.origin(ino.0));
        if let Ok(origin) = origin {
            names.push(CID_XATTR);
            if origin.peer.is_some() {
                names.extend([PEER_XATTR, PEER_ID_XATTR]);
            }
            if origin.head.is_some() {
                names.extend([HEAD_SEQ_XATTR, HEAD_TIME_XATTR]);
            }
            names.extend([LOCAL_XATTR, PINNED_XATTR]);
        }
    } else if is_outbox_ino(ino.0) {
        if ino.0 != crate::vfs::ino::OUTBOX {
            names.push(DELIVERY_XATTR);
        }
    } else if !is_mount_dir(ino.0) {
        names.push(CID_XATTR);
    }
    let list: Vec<u8> = names
        .iter()
        .flat_map(|n| n.bytes().chain(std::iter::once(0)))
        .collect();
    xattr_reply(reply, &list, size)
}

/// setxattr and removexattr: the CID is not ours to set, and nothing else is kept.
pub(super) fn refuse_change(reply: ReplyEmpty) {
    reply.error(errno(&FsError::Unsupported));
}

/// Who may read the private folders of my drive, and changing that (the daemon's
/// `peerfs share`). Errors are for the log; the caller gets an errno.
pub trait Readers: Send + Sync {
    /// The readers of `path` (relative to the drive), `None` when it is not private.
    fn get(&self, path: &str) -> Result<Option<String>, String>;
    /// Makes `path` private to `readers` (names or peer IDs, comma-separated).
    fn set(&self, path: &str, readers: &str) -> Result<(), String>;
}

/// `user.peerfs.readers` of a drive entry.
fn readers_of(fs: &PeerFs, ino: u64, size: u32, reply: ReplyXattr) {
    let (Some(readers), Some(path)) = (fs.readers.clone(), fs.drive.path_of(ino)) else {
        return reply.error(errno(&FsError::NoAttribute));
    };
    match readers.get(&path) {
        Ok(Some(value)) => xattr_reply(reply, value.as_bytes(), size),
        Ok(None) => reply.error(errno(&FsError::NoAttribute)),
        Err(_) => reply.error(errno(&FsError::Invalid)),
    }
}

/// setxattr of `user.peerfs.readers` on a directory of my drive; sealing and
/// publishing run off the session thread.
pub(super) fn set_readers(fs: &PeerFs, ino: INodeNo, value: &[u8], reply: ReplyEmpty) {
    let (Some(readers), Some(path)) = (fs.readers.clone(), fs.drive.path_of(ino.0)) else {
        return refuse_change(reply);
    };
    let Ok(value) = std::str::from_utf8(value).map(str::to_string) else {
        return reply.error(errno(&FsError::Invalid));
    };
    fs.offload(move || match readers.set(&path, &value) {
        Ok(()) => reply.ok(),
        Err(e) => {
            tracing::warn!("{READERS_XATTR} of {path}: {e}");
            reply.error(errno(&FsError::Invalid))
        }
    });
}

/// Whether a setxattr is of `user.peerfs.readers` on my drive.
pub(super) fn is_readers(ino: INodeNo, name: &OsStr) -> bool {
    name.as_bytes() == READERS_XATTR.as_bytes()
        && !is_peer_ino(ino.0)
        && !is_outbox_ino(ino.0)
        && !is_mount_dir(ino.0)
}

/// A pin or unpin asked for through `user.peerfs.pin`.
#[derive(Debug)]
pub struct PinOrder {
    /// Where the entry is, from the mount's root (`peers/alice/photos`).
    pub path: PathBuf,
    pub cid: Cid,
    /// False: unpin.
    pub pin: bool,
}

/// setxattr (`pin`: any value but 0, no or false) or removexattr (`pin` false) of
/// `user.peerfs.pin`; any other change is refused.
pub(super) fn change_pin(fs: &PeerFs, ino: INodeNo, name: &OsStr, pin: bool, reply: ReplyEmpty) {
    let Some(orders) = fs.pin_orders.as_ref() else {
        return refuse_change(reply);
    };
    if !is_peer_ino(ino.0) || name.as_bytes() != PIN_XATTR.as_bytes() {
        return refuse_change(reply);
    }
    let order = fs.peer_view().and_then(|view| {
        Ok(PinOrder {
            path: view.path_of(ino.0)?,
            cid: view.origin(ino.0)?.cid,
            pin,
        })
    });
    match order {
        Ok(order) => match orders.send(order) {
            Ok(()) => reply.ok(),
            // The daemon is stopping.
            Err(_) => reply.error(errno(&FsError::Unsupported)),
        },
        Err(e) => reply.error(errno(&e)),
    }
}

/// Whether a `user.peerfs.pin` value asks to unpin.
pub(super) fn says_no(value: &[u8]) -> bool {
    matches!(value.trim_ascii(), b"0" | b"no" | b"false")
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
