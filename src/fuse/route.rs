//! Who answers an inode: the mount's own directories (the root, `peers/`, `ipfs/`), my
//! drive, or a peer's drive (or a CID's tree), whose requests may wait on the network and so run on the blocking
//! pool. Also what is read-only, and how long the kernel may cache each side's answers.

use std::sync::Arc;
use std::time::Duration;

use super::PeerFs;
use crate::peers::PeerView;
use crate::vfs::ino::{is_mount_dir, is_outbox_ino, is_peer_ino};
use crate::vfs::{Attr, FsError, Kind};

/// The drive changes only through this mount, so the kernel's cached entries and
/// attributes stay right; the TTL only bounds staleness if that ever stops being true.
/// Long, because every expired entry costs `ls -l`, `find` and rsync a round trip.
const DRIVE_TTL: Duration = Duration::from_secs(30);
/// Peers' drives change under the kernel (new heads); the view invalidates what changed,
/// and this short TTL covers the rest (the mount root, `peers/` itself).
pub(super) const PEER_TTL: Duration = Duration::from_secs(1);

impl PeerFs {
    /// The peer view, for an inode that belongs to it.
    pub(super) fn peer_view(&self) -> Result<Arc<PeerView>, FsError> {
        self.peers.clone().ok_or(FsError::NotFound)
    }

    /// Runs `job` on the blocking pool, so it may wait on the network.
    pub(super) fn offload(&self, job: impl FnOnce() + Send + 'static) {
        match &self.pool {
            Some(pool) => drop(pool.spawn_blocking(job)),
            None => job(),
        }
    }

    /// The mount's own directories: the top level and `peers/`.
    pub(super) fn virtual_attr(&self, ino: u64) -> Attr {
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

    pub(super) fn attr_of(&self, ino: u64) -> Result<Attr, FsError> {
        match ino {
            i if is_mount_dir(i) => Ok(self.virtual_attr(i)),
            i if is_outbox_ino(i) => self.outbox()?.attr(i),
            i if is_peer_ino(i) => self.peer_view()?.getattr(i),
            _ => self.drive.getattr(ino),
        }
    }
}

/// Where writes are refused: the mount's own directories and everything under peers/.
pub(super) fn read_only(ino: u64) -> bool {
    is_mount_dir(ino) || is_peer_ino(ino)
}

pub(super) fn ttl(ino: u64) -> &'static Duration {
    if read_only(ino) {
        &PEER_TTL
    } else {
        &DRIVE_TTL
    }
}
