//! What `stat` shows of an entry and what `setattr` asks to change, with the UnixFS
//! defaults for the fields a stored node leaves out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::unixfs::data::Mtime;
use crate::unixfs::node::Node;

/// The mode of a file whose node records none, as the reference importer assumes.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// The mode of a directory whose node records none.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// The kinds of entry UnixFS holds (no devices, FIFOs or sockets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
}

/// What `stat` shows of an inode.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// Bytes that take room (holes do not), for `st_blocks`.
    pub allocated: u64,
    /// Permission bits, `0o7777` at most.
    pub perm: u16,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Kept in memory only: UnixFS has no field for it (see the README).
    pub atime: SystemTime,
    /// 0 for an unlinked file still open; 2 plus the subdirectories for a directory
    /// whose entries are loaded, 1 (unknown) for one not loaded yet.
    pub nlink: u32,
}

/// Changes `setattr` asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

/// What `stat` shows of a stored node, with the defaults for fields it lacks.
pub fn node_attr(ino: u64, node: &Node) -> Attr {
    let meta = node.meta();
    let (kind, size, default_mode) = match node {
        Node::File(f) => (Kind::File, f.filesize, DEFAULT_FILE_MODE),
        Node::Symlink { target, .. } => (Kind::Symlink, target.len() as u64, 0o777),
        Node::Directory(_) | Node::Shard(_) => (Kind::Directory, 0, DEFAULT_DIR_MODE),
    };
    let mtime = to_system_time(meta.mtime.unwrap_or_default());
    Attr {
        ino,
        kind,
        size,
        allocated: size,
        perm: (meta.mode.unwrap_or(default_mode) & 0o7777) as u16,
        mtime,
        ctime: mtime,
        atime: mtime,
        nlink: 1,
    }
}

/// A time as UnixFS stores it: seconds (negative before 1970) and nanoseconds.
pub fn to_mtime(t: SystemTime) -> Mtime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Mtime {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                Mtime {
                    secs: -(d.as_secs() as i64),
                    nanos: 0,
                }
            } else {
                Mtime {
                    secs: -(d.as_secs() as i64) - 1,
                    nanos: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

/// A stored UnixFS time as a `SystemTime`.
pub fn to_system_time(m: Mtime) -> SystemTime {
    if m.secs >= 0 {
        UNIX_EPOCH + Duration::new(m.secs as u64, m.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(m.secs.unsigned_abs())
            + Duration::from_nanos(m.nanos.into())
    }
}
