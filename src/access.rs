//! What strangers may read, over the gateway and over Bitswap alike. My drive only
//! when it is open to everyone (`readers = "*"`); what I pinned, added or imported of
//! my own always; blocks fetched for a peer's drive, cached or pinned, only when that
//! drive is open to everyone, as its newest head here says. A request is judged by the
//! CID it names; everything reached from that CID along a path is served with it (the
//! gateway follows the path; Bitswap remembers, per peer, the links of what it sent).

use std::sync::Arc;

use cid::Cid;

use crate::head::SignedHead;
use crate::store::rocks::RocksStore;
use crate::store::{Blocks, HeadStore, Holding, StoreError};

/// Where the gateway and Bitswap read blocks, and whom they are open to.
pub trait Access: Send + Sync + 'static {
    fn blocks(&self) -> &dyn Blocks;
    /// Whether a stranger may read the DAG under `root`.
    fn may_serve(&self, root: &Cid) -> Result<bool, StoreError>;
}

/// The rule over a repo's store.
pub struct StoreAccess {
    store: Arc<RocksStore>,
    drive_open: bool,
}

impl StoreAccess {
    /// `drive_open`: config `readers` lets everyone read my drive.
    pub fn new(store: Arc<RocksStore>, drive_open: bool) -> Self {
        StoreAccess { store, drive_open }
    }
}

impl Access for StoreAccess {
    fn blocks(&self) -> &dyn Blocks {
        &*self.store
    }

    fn may_serve(&self, root: &Cid) -> Result<bool, StoreError> {
        // An identity CID carries its bytes: nothing of mine is in it.
        if root.hash().code() == 0 {
            return Ok(true);
        }
        Ok(match self.store.holding(root)? {
            None | Some(Holding::Fetched(None)) => false,
            // Own blocks that no pin names may be my drive's, which only an open drive
            // shows.
            // A private folder's plaintext never leaves: only its sealed form does.
            Some(Holding::Own) if self.store.private(root)? => false,
            Some(Holding::Own) => self.drive_open || self.store.is_pinned(root)?,
            Some(Holding::Fetched(Some(owner))) => self.open_drive(&owner)?,
        })
    }
}

impl StoreAccess {
    /// Whether `owner`'s newest head here says its drive is open to everyone.
    fn open_drive(&self, owner: &libp2p::PeerId) -> Result<bool, StoreError> {
        let Some(bytes) = self.store.head(&owner.to_string())? else {
            return Ok(false);
        };
        Ok(SignedHead::verify(&bytes).is_ok_and(|h| h.head().open))
    }
}
