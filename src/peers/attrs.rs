//! What `stat` shows of a peer's node: read-only (nobody here can write it), dated by
//! the peer's head where the node records no time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::head::Head;
use crate::unixfs::Node;
use crate::vfs::{node_attr, Attr, Kind};

/// A followed peer whose head is not known yet: an empty directory, as of now.
pub(super) fn empty_dir_attr() -> Attr {
    let now = SystemTime::now();
    Attr {
        ino: 0,
        kind: Kind::Directory,
        size: 0,
        allocated: 0,
        perm: 0o555,
        mtime: now,
        ctime: now,
        atime: now,
        nlink: 1,
    }
}

/// What `stat` shows of a node in a peer's drive: read-only (nobody here can write
/// it, so no write bits), and dated by the peer's head where the node records no time.
pub(super) fn shown_attr(node: &Node, head_time: SystemTime) -> Attr {
    let mut attr = node_attr(0, node);
    attr.perm &= !0o222;
    if node.meta().mtime.is_none() {
        attr.mtime = head_time;
        attr.ctime = head_time;
        attr.atime = head_time;
    }
    attr
}

/// A private folder this node is no reader of: a directory nobody may open.
pub(super) fn locked_dir_attr(head_time: SystemTime) -> Attr {
    Attr {
        perm: 0,
        mtime: head_time,
        ctime: head_time,
        atime: head_time,
        ..empty_dir_attr()
    }
}

/// A raw block is a whole file with no metadata: its size is the link's.
pub(super) fn raw_file_attr(size: u64, head_time: SystemTime) -> Attr {
    Attr {
        ino: 0,
        kind: Kind::File,
        size,
        allocated: size,
        perm: 0o444,
        mtime: head_time,
        ctime: head_time,
        atime: head_time,
        nlink: 1,
    }
}

pub(super) fn head_time(head: &Head) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(head.time_ms)
}
