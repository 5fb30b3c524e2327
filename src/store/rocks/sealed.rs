//! The private folders' memo (`seal::tree::Memo`): plaintext multihash → the bytes of
//! what it was sealed as. A block named here is a private folder's plaintext, which is
//! never served.

use cid::Cid;

use super::{RocksStore, CF_SEALED};
use crate::store::StoreError;

impl RocksStore {
    /// What plaintext `cid` was sealed as, encoded (`seal::tree::Memoed`).
    pub fn sealed_memo(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_SEALED), cid.hash().to_bytes())
            .map_err(|e| self.err(e))
    }

    /// Remembers what each plaintext block was sealed as.
    pub fn remember_sealed(&self, entries: &[(Cid, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        for (cid, value) in entries {
            batch.put_cf(self.cf(CF_SEALED), cid.hash().to_bytes(), value);
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }
}
