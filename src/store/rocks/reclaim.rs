//! Giving deleted blocks' space back. A deleted block's bytes stay in its blob file as
//! garbage until a compaction that collects garbage copies the file's live blobs to a
//! new one and drops it. Ordinary compactions do not collect (see `family_options`):
//! collecting happens here, after `gc` and unpins, and when the cache's evictions have
//! left enough garbage behind.

use std::sync::Weak;
use std::time::Duration;

use rocksdb::{BottommostLevelCompaction, CompactOptions};
use tracing::{info, warn};

use super::{RocksStore, CF_BLOCKS};
use crate::store::StoreError;

/// Evictions are collected after once they left this much garbage...
pub const RECLAIM_AT_BYTES: u64 = 256 << 20;
/// ...making up at least this share of the blob files: a collection then copies at
/// most three live bytes per byte it frees.
const RECLAIM_AT_SHARE: u64 = 4;
/// How often the daemon looks at its garbage.
const LOOK_EVERY: Duration = Duration::from_secs(60);

impl RocksStore {
    /// Gives the space of deleted blocks back to the disk: compacts the block family
    /// with garbage collection on, which rewrites every blob file that holds garbage.
    pub fn reclaim(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reclaiming.lock().unwrap_or_else(|e| e.into_inner());
        let cf = self.cf(CF_BLOCKS);
        let collect = |on: &str| {
            self.db
                .set_options_cf(
                    cf,
                    &[
                        ("enable_blob_garbage_collection", on),
                        ("blob_garbage_collection_age_cutoff", "1.0"),
                    ],
                )
                .map_err(|e| self.err(e))
        };
        collect("true")?;
        let mut opts = CompactOptions::default();
        opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        collect("false")
    }

    /// The garbage in the block family's blob files, and their whole size, in bytes.
    /// A deleted block counts once a compaction has dropped its key.
    pub fn blob_garbage(&self) -> Result<(u64, u64), StoreError> {
        let cf = self.cf(CF_BLOCKS);
        let property = |name: &str| {
            self.db
                .property_int_value_cf(cf, name)
                .map(Option::unwrap_or_default)
                .map_err(|e| self.err(e))
        };
        Ok((
            property("rocksdb.live-blob-file-garbage-size")?,
            property("rocksdb.live-blob-file-size")?,
        ))
    }

    /// `reclaim`, if there are at least `at_bytes` of garbage and they make up a
    /// quarter of the blob files or more. Says whether it ran.
    pub fn reclaim_if_wasteful(&self, at_bytes: u64) -> Result<bool, StoreError> {
        let (garbage, size) = self.blob_garbage()?;
        if garbage < at_bytes || garbage.saturating_mul(RECLAIM_AT_SHARE) < size {
            return Ok(false);
        }
        info!("reclaiming {garbage} bytes of deleted blocks out of {size} in blob files");
        self.reclaim()?;
        Ok(true)
    }
}

/// Collects the garbage the cache's evictions leave, every minute while `store` lives.
pub fn keep_reclaiming(store: Weak<RocksStore>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(LOOK_EVERY);
        let Some(store) = store.upgrade() else {
            return;
        };
        if let Err(e) = store.reclaim_if_wasteful(RECLAIM_AT_BYTES) {
            warn!("cannot reclaim the space of evicted blocks: {e}");
        }
    });
}
