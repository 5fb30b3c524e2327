//! Blocks a pin kept out of a peer's drive stay that peer's: the `kept` family maps a
//! block's key to the drive's owner, so they are served under that drive's rule and
//! never under our own `readers`. A block written as ours (the drive, an import) or
//! deleted loses its mark.

use libp2p_identity::PeerId;
use rocksdb::WriteBatch;

use super::{RocksStore, CF_KEPT};
use crate::store::StoreError;

impl RocksStore {
    /// `None` when the block under `key` is not kept for a peer; else whose drive it
    /// came from (`Some(None)`: a mark that does not parse, still a peer's).
    pub(super) fn kept_for(&self, key: &[u8]) -> Result<Option<Option<PeerId>>, StoreError> {
        let cf = self.cf(CF_KEPT);
        if !self.db.key_may_exist_cf(cf, key) {
            return Ok(None);
        }
        let value = self.db.get_pinned_cf(cf, key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| PeerId::from_bytes(&v).ok()))
    }

    pub(super) fn mark_kept(&self, batch: &mut WriteBatch, key: &[u8], owner: &PeerId) {
        batch.put_cf(self.cf(CF_KEPT), key, owner.to_bytes());
    }

    /// Drops the mark of `key` in `batch`, if it has one.
    pub(super) fn unkeep(&self, batch: &mut WriteBatch, key: &[u8]) -> Result<(), StoreError> {
        if self.kept_for(key)?.is_some() {
            batch.delete_cf(self.cf(CF_KEPT), key);
        }
        Ok(())
    }
}
