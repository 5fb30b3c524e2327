//! The private folders' memo (`seal::tree::Memo`): plaintext multihash → the bytes of
//! what it was sealed as. A block named here is a private folder's plaintext, which is
//! never served.

use cid::Cid;

use rocksdb::WriteBatch;

use super::{RocksStore, CF_BLOCKS, CF_SEALED};
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

    /// Forgets what each plaintext block no longer stored was sealed as (after `gc`):
    /// a block not here cannot be served in clear, and the memo would otherwise grow
    /// with every version of every private file. Returns how many entries went.
    pub fn trim_sealed_memo(&self) -> Result<u64, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SEALED));
        it.seek_to_first();
        let mut batch = WriteBatch::default();
        let mut trimmed = 0;
        while let Some(key) = it.key() {
            let stored = self
                .db
                .get_pinned_cf(self.cf(CF_BLOCKS), key)
                .map_err(|e| self.err(e))?
                .is_some();
            if !stored {
                batch.delete_cf(self.cf(CF_SEALED), key);
                trimmed += 1;
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        self.db.write(batch).map_err(|e| self.err(e))?;
        Ok(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, RAW};
    use crate::store::Blocks;

    #[test]
    fn the_memo_keeps_only_what_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), true).unwrap();
        let (kept, gone) = (
            Block::hash(cid::Version::V1, RAW, b"kept".to_vec()),
            Block::hash(cid::Version::V1, RAW, b"gone".to_vec()),
        );
        store.put_many(std::slice::from_ref(&kept), true).unwrap();
        store
            .remember_sealed(&[(*kept.cid(), b"k".to_vec()), (*gone.cid(), b"g".to_vec())])
            .unwrap();
        assert_eq!(store.trim_sealed_memo().unwrap(), 1);
        assert_eq!(store.sealed_memo(kept.cid()).unwrap(), Some(b"k".to_vec()));
        assert_eq!(store.sealed_memo(gone.cid()).unwrap(), None);
    }
}
