//! The reader's side: a `Blocks` over the network's that shows sealed folders in
//! plaintext, so the peer view reads them with the same code as any other folder.
//!
//! Asked for an envelope, it finds the reader's stanzas and answers with the plaintext
//! root of the newest version the reader has the key of; asked for a plaintext CID that
//! an opened sealed node named, it fetches the sealed block at the same place, opens it
//! with the generation's key and checks it hashes to that CID. So a non-reader gets
//! `Refused` (`EACCES`), and a wrong key or tampered ciphertext `Unsealed` (`EIO`,
//! logged and counted), never wrong bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cid::Cid;
use tracing::warn;

use super::cipher;
use super::keys::{FolderKey, ReaderKey};
use super::tree::{classify, open_envelope, Sealed};
use super::SealError;
use crate::block::{Block, DAG_PB, RAW};
use crate::store::{Blocks, StoreError, Unavailable};
use crate::unixfs::dagpb::PbNode;

/// Plaintext CIDs remembered at most: a 1 GiB file is about a thousand; past this the
/// oldest go (their parent, read again, names them again).
const MAX_KNOWN: usize = 1 << 18;

type Keys = HashMap<u32, FolderKey>;

#[derive(Default)]
struct Known {
    /// Plaintext CID → the sealed block that carries it, and its folder's keys.
    by_plain: HashMap<Cid, (Cid, Arc<Keys>)>,
    order: VecDeque<Cid>,
}

/// What a view knows of the sealed folders it opened.
pub struct Unsealer {
    /// This node's X25519 key; without it, every sealed folder is refused.
    me: Option<ReaderKey>,
    known: Mutex<Known>,
    /// Sealed blocks that did not open (tampered, or sealed with another key).
    tampered: AtomicU64,
}

impl Unsealer {
    pub fn new(me: Option<ReaderKey>) -> Unsealer {
        Unsealer {
            me,
            known: Mutex::default(),
            tampered: AtomicU64::new(0),
        }
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        // Every operation leaves the map consistent.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sealed blocks that did not open, since the start.
    pub fn tampered(&self) -> u64 {
        self.tampered.load(Ordering::Relaxed)
    }

    /// The sealed block that carries plaintext `plain`, if an opened node named it.
    pub fn sealed_of(&self, plain: &Cid) -> Option<Cid> {
        self.known().by_plain.get(plain).map(|(s, _)| *s)
    }

    fn learn(&self, pairs: impl IntoIterator<Item = (Cid, Cid)>, keys: &Arc<Keys>) {
        let mut k = self.known();
        for (plain, sealed) in pairs {
            if k.by_plain
                .insert(plain, (sealed, Arc::clone(keys)))
                .is_none()
            {
                k.order.push_back(plain);
            }
            while k.order.len() > MAX_KNOWN {
                if let Some(old) = k.order.pop_front() {
                    k.by_plain.remove(&old);
                }
            }
        }
    }

    fn bad(&self, cid: &Cid, e: SealError) -> StoreError {
        self.tampered.fetch_add(1, Ordering::Relaxed);
        warn!("private folder block {cid} does not open: {e}");
        StoreError::Unsealed(*cid)
    }

    /// Block `cid` as a reader sees it, fetched through `inner`.
    pub fn get(&self, inner: &dyn Blocks, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let refused = || StoreError::Unavailable {
            cid: *cid,
            why: Unavailable::Refused,
        };
        let mapped = self.known().by_plain.get(cid).cloned();
        if let Some((sealed, keys)) = mapped {
            let Some(bytes) = inner.get(&sealed)? else {
                return Ok(None);
            };
            let (payload, sealed_links) = match sealed.codec() {
                RAW => (bytes, Vec::new()),
                DAG_PB => match classify(&sealed, &bytes) {
                    Ok(Sealed::Node { links, payload }) => (payload, links),
                    Ok(_) => return Err(self.bad(cid, malformed(&sealed, "not a sealed node"))),
                    Err(e) => return Err(self.bad(cid, e)),
                },
                _ => return Err(self.bad(cid, malformed(&sealed, "neither dag-pb nor raw"))),
            };
            // A block of a generation this reader was not given (written after it
            // was removed) stays closed.
            let key = cipher::generation(&payload)
                .and_then(|g| keys.get(&g))
                .ok_or_else(refused)?;
            let plain = cipher::open(key, cid, &payload).map_err(|e| self.bad(cid, e))?;
            if cid.codec() == DAG_PB {
                let node = PbNode::decode(&plain)
                    .map_err(|_| self.bad(cid, malformed(cid, "plaintext is not dag-pb")))?;
                if node.links.len() != sealed_links.len() {
                    return Err(self.bad(cid, malformed(&sealed, "links do not match")));
                }
                self.learn(node.links.iter().map(|l| l.cid).zip(sealed_links), &keys);
            }
            return Ok(Some(plain));
        }
        let Some(bytes) = inner.get(cid)? else {
            return Ok(None);
        };
        match classify(cid, &bytes) {
            Ok(Sealed::Other) => Ok(Some(bytes)),
            Ok(Sealed::Envelope { links, envelope }) => {
                let me = self.me.as_ref().ok_or_else(refused)?;
                let opened = open_envelope(cid, &links, &envelope, me)
                    .map_err(|e| self.bad(cid, e))?
                    .ok_or_else(refused)?;
                let root = opened.plain_root;
                self.learn([(root, opened.sealed_root)], &Arc::new(opened.keys));
                self.get(inner, &root)
            }
            // A sealed node not reached through its folder: nothing says what it is.
            Ok(Sealed::Node { .. }) => Err(refused()),
            Err(e) => Err(self.bad(cid, e)),
        }
    }
}

fn malformed(cid: &Cid, why: &'static str) -> SealError {
    SealError::Malformed { cid: *cid, why }
}

/// `inner`'s blocks, with sealed folders opened for this node.
pub struct Unsealing<B> {
    pub inner: B,
    pub unsealer: Arc<Unsealer>,
}

impl<B: Blocks> Unsealing<B> {
    /// Where plaintext `cid` comes from: its sealed block, or itself.
    pub fn source_of(&self, cid: &Cid) -> Cid {
        self.unsealer.sealed_of(cid).unwrap_or(*cid)
    }
}

impl<B: Blocks> Blocks for Unsealing<B> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.unsealer.get(&self.inner, cid)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.inner.has(&self.source_of(cid))
    }

    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
        self.inner.put_many(blocks, durable)
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        self.inner.delete_many(cids)
    }

    fn ahead(&self, cids: &[Cid]) {
        let sources: Vec<Cid> = cids.iter().map(|c| self.source_of(c)).collect();
        self.inner.ahead(&sources);
    }
}
