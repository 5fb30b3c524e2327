//! Where an entry of a peer's drive comes from, for its `user.peerfs.*` attributes:
//! whose drive it is in and which head brought it, whether every block of it is here,
//! and whether the store keeps it for good.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::SystemTime;

use cid::Cid;
use libp2p::PeerId;

use super::PeerView;
use super::MAX_PATH_DEPTH;
use crate::car::{links, CarError};
use crate::vfs::ino::{is_peer_ino, IPFS, PEERS};
use crate::vfs::layout::{IPFS_DIR, PEERS_DIR};
use crate::vfs::FsError;

/// Blocks a locality check reads at most: past it the answer is "unknown", rather
/// than a `getfattr` that walks a huge tree.
const LOCAL_CHECK_MAX: usize = 100_000;

/// Whose drive an entry is in, and the head that brought it. All `None` under `ipfs/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub cid: Cid,
    /// The peer's name in the peer book, and its ID.
    pub peer: Option<(String, PeerId)>,
    pub head: Option<(u64, SystemTime)>,
}

impl PeerView {
    pub fn origin(&self, ino: u64) -> Result<Origin, FsError> {
        let st = self.lock();
        let node = st.nodes.get(&ino).ok_or(FsError::NotFound)?;
        let cid = node.cid.ok_or(FsError::NoAttribute)?;
        let Some(owner) = node.owner else {
            return Ok(Origin {
                cid,
                peer: None,
                head: None,
            });
        };
        let name = st
            .tops
            .iter()
            .find(|(_, top)| st.nodes.get(top).is_some_and(|n| n.owner == Some(owner)))
            .map(|(name, _)| String::from_utf8_lossy(name).into_owned());
        Ok(Origin {
            cid,
            peer: name.map(|n| (n, owner)),
            head: st.heads.get(&owner).copied(),
        })
    }

    /// Whether every block under `ino` is in the store; `None` when the tree is too
    /// big to tell cheaply.
    pub fn is_local(&self, ino: u64) -> Result<Option<bool>, FsError> {
        let (_, root) = self.owner_cid(ino)?;
        let mut seen = HashSet::new();
        let mut stack = vec![root];
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            if seen.len() > LOCAL_CHECK_MAX {
                return Ok(None);
            }
            let Some(data) = self.local.get(&cid)? else {
                return Ok(Some(false));
            };
            let below = links(&cid, &data).map_err(|e| match e {
                CarError::UnixFs(e) => FsError::Format(e),
                _ => FsError::Invalid,
            })?;
            stack.extend(below);
        }
        Ok(Some(true))
    }

    /// Where the entry is, from the mount's root (`peers/alice/a/b`), while the
    /// listings on its way still name it.
    pub fn path_of(&self, ino: u64) -> Result<PathBuf, FsError> {
        let st = self.lock();
        let mut names = Vec::new();
        let mut at = ino;
        for _ in 0..MAX_PATH_DEPTH {
            let (parent, name) = st.entry_of(at).ok_or(FsError::NotFound)?;
            names.push(OsStr::from_bytes(name).to_owned());
            let top = match parent {
                PEERS => PEERS_DIR,
                IPFS => IPFS_DIR,
                _ => {
                    at = parent;
                    continue;
                }
            };
            return Ok(std::iter::once(OsStr::new(top).to_owned())
                .chain(names.into_iter().rev())
                .collect());
        }
        Err(FsError::NotFound)
    }

    /// Whether the entry is pinned: it, or a directory above it, is a pin's root.
    pub fn is_pinned(&self, ino: u64) -> Result<bool, FsError> {
        let mut at = ino;
        for _ in 0..MAX_PATH_DEPTH {
            let (cid, parent) = {
                let st = self.lock();
                let n = st.nodes.get(&at).ok_or(FsError::NotFound)?;
                (n.cid.ok_or(FsError::NoAttribute)?, n.parent)
            };
            if self.local.is_pin_root(&cid)? {
                return Ok(true);
            }
            if !is_peer_ino(parent) {
                break;
            }
            at = parent;
        }
        Ok(false)
    }
}
