//! Pins: roots that must stay, each with the labels that say where it came from.

use std::sync::Mutex;

use cid::Cid;
use rocksdb::IteratorMode;

use super::{RocksStore, CF_PINS};
use crate::store::StoreError;

/// Labels of one pin are one value, read, changed and written back under this lock.
static PIN_LABELS: Mutex<()> = Mutex::new(());

/// A pin's labels, NUL-separated: labels are paths and CIDs, which hold no NUL, and a
/// value written before pins had several labels reads as its one label.
fn join_labels(labels: &[String]) -> Vec<u8> {
    labels.join("\0").into_bytes()
}

fn split_labels(value: &[u8]) -> Vec<String> {
    value
        .split(|b| *b == 0)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

impl RocksStore {
    /// Records `cid` as a root that must stay (what `add` and `import` produce), with a
    /// label saying where it came from. A root pinned again under another label keeps
    /// both: each names a place the user may look for it.
    pub fn pin(&self, cid: &Cid, label: &str) -> Result<(), StoreError> {
        let _one_at_a_time = PIN_LABELS.lock().unwrap_or_else(|e| e.into_inner());
        let mut labels = self.pin_labels(cid)?;
        if !labels.iter().any(|l| l == label) {
            labels.push(label.to_string());
        }
        self.db
            .put_cf(self.cf(CF_PINS), cid.to_bytes(), join_labels(&labels))
            .map_err(|e| self.err(e))
    }

    /// Removes one label of a pin, and the pin with its last label; false when `cid`
    /// had no such label.
    pub fn unpin_label(&self, cid: &Cid, label: &str) -> Result<bool, StoreError> {
        let _one_at_a_time = PIN_LABELS.lock().unwrap_or_else(|e| e.into_inner());
        let mut labels = self.pin_labels(cid)?;
        let before = labels.len();
        labels.retain(|l| l != label);
        if labels.len() == before {
            return Ok(false);
        }
        let cf = self.cf(CF_PINS);
        let done = if labels.is_empty() {
            self.db.delete_cf(cf, cid.to_bytes())
        } else {
            self.db.put_cf(cf, cid.to_bytes(), join_labels(&labels))
        };
        done.map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Whether `cid` is pinned under any label.
    pub fn is_pinned(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(!self.pin_labels(cid)?.is_empty())
    }

    fn pin_labels(&self, cid: &Cid) -> Result<Vec<String>, StoreError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_PINS), cid.to_bytes())
            .map_err(|e| self.err(e))?;
        Ok(value.map_or_else(Vec::new, |v| split_labels(&v)))
    }

    /// Removes a pin; false when `cid` was not pinned. Its blocks stay until `gc`.
    pub fn unpin(&self, cid: &Cid) -> Result<bool, StoreError> {
        let cf = self.cf(CF_PINS);
        let key = cid.to_bytes();
        if self
            .db
            .get_pinned_cf(cf, &key)
            .map_err(|e| self.err(e))?
            .is_none()
        {
            return Ok(false);
        }
        self.db.delete_cf(cf, key).map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Every pin, once per label (a CID pinned under two labels comes twice).
    pub fn pins(&self) -> Result<Vec<(Cid, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PINS), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.err(e))?;
            // A key that is not a CID was not written by us; gc must not guess at it.
            let cid = Cid::try_from(&key[..]).map_err(|e| StoreError::Db {
                path: self.path.display().to_string(),
                message: format!("unreadable pin: {e}"),
            })?;
            out.extend(split_labels(&value).into_iter().map(|l| (cid, l)));
        }
        Ok(out)
    }
}
