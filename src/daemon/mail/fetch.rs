//! Taking an item: fetching all of it (verified, resumable), then showing it in the
//! inbox's directory and telling the sender.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cid::Cid;
use libp2p::PeerId;
use tracing::{info, warn};

use super::{fetch_key, lock, now_ms, Mailroom, FETCH_RETRY, NODE_SLACK};
use crate::daemon::feed::What;
use crate::daemon::follow::invalidate;
use crate::daemon::transfers::{drive, ForTransfer, Outcome};
use crate::net::RemoteBlocks;
use crate::pin;
use crate::share::items::{InState, Incoming, Receipt, INBOX_PIN};
use crate::share::wire::Body;
use crate::store::{Blocks, StoreError};
use crate::transfers::{Kind, New, Priority};
use crate::unixfs::build::{build_directory, DirEntry};
use crate::unixfs::Metadata;

impl Mailroom {
    /// Fetches all of an incoming item (what is here already is not fetched again),
    /// keeps it, and shows it in the inbox; on failure, tries again later.
    pub(super) fn fetch(self: &Arc<Self>, item: &Incoming) {
        let (Ok(root), Ok(owner)) = (
            Cid::try_from(item.root.as_str()),
            item.from.parse::<PeerId>(),
        ) else {
            return;
        };
        let limit = item
            .size
            .saturating_add(item.size / 8)
            .saturating_add(NODE_SLACK);
        let transfers = &self.parts.transfers;
        let transfer = transfers.start(New {
            kind: Kind::Delivery,
            what: format!("{} from {}", item.name, item.from_name),
            cid: item.root.clone(),
            peer: Some(item.from.clone()),
            priority: Priority::default(),
            path: None,
            key: Some(fetch_key(&item.from, &item.id)),
        });
        let mut told = 0u8;
        let size = item.size.max(1);
        let label = item.pin_label();
        let bad_before = self.bad_blocks(&owner);
        // Each walk (one more after a pause) reads its own `limit`: what is here
        // already is read again from the store, not fetched.
        let attempt = || {
            let bounded = Bounded {
                inner: ForTransfer::new(
                    RemoteBlocks {
                        local: self.parts.store.clone(),
                        net: self.parts.net.clone(),
                        owner: Some(owner),
                        fetch: true,
                    },
                    transfers,
                    transfer,
                ),
                limit,
                read: AtomicU64::new(0),
            };
            let ahead = |cids: &[Cid]| bounded.inner.ahead(cids);
            let progress = |p: pin::WalkProgress| {
                bounded.inner.progress(p);
                let percent = (p.bytes.saturating_mul(100) / size).min(99) as u8;
                if percent >= told.saturating_add(10) {
                    told = percent;
                    self.progress(owner, &item.id, percent);
                }
            };
            let _no_sweep = self.parts.store.hold_off_sweeps();
            let sent = (&root, Some(owner));
            let done = bounded.inner.walking(|| {
                pin::pin_tree(&self.parts.store, &bounded, sent, &label, ahead, progress)
            })?;
            bounded.inner.progress(done);
            Ok::<_, pin::PinError>(done)
        };
        let outcome = match drive(transfers, &self.parts.net, transfer, attempt, || {}) {
            Outcome::Done(done) => {
                transfers.finish(transfer, Ok(()));
                Ok(done)
            }
            // Tried again later, as the same transfer, unless given up below.
            Outcome::Failed(e) => Err(e),
            Outcome::Cancelled => {
                self.given_up(item, "the recipient cancelled it".into());
                return;
            }
        };
        match outcome {
            Ok(_) => self.complete(item),
            // The sender's blocks did not hash to their CIDs: it is lying or broken, and
            // asking again gets the same.
            Err(e) if self.bad_blocks(&owner) > bad_before => {
                let reason = format!("blocks that do not verify came from the sender ({e})");
                transfers.finish(transfer, Err(reason.clone()));
                self.given_up(item, reason);
            }
            Err(e) => {
                warn!(
                    "fetching {:?} from {}: {e}; trying again in {FETCH_RETRY:?}",
                    item.name, item.from_name
                );
                lock(&self.fetch_retry).insert(
                    fetch_key(&item.from, &item.id),
                    Instant::now() + FETCH_RETRY,
                );
                let mut items = lock(&self.items);
                if let Some(i) = items
                    .incoming
                    .iter_mut()
                    .find(|i| i.from == item.from && i.id == item.id)
                {
                    i.last_error = Some(e.to_string());
                }
            }
        }
    }

    /// `item` will not be fetched: the sender is told why.
    fn given_up(&self, item: &Incoming, reason: String) {
        warn!(
            "{:?} from {}: {reason}; given up",
            item.name, item.from_name
        );
        let mut items = lock(&self.items);
        if let Some(i) = items
            .incoming
            .iter_mut()
            .find(|i| i.from == item.from && i.id == item.id)
        {
            i.state = InState::Failed { reason };
            i.receipts_due.push(Receipt::Failed);
        }
        let snapshot = items.clone();
        drop(items);
        self.save(&snapshot);
        self.wake.notify_one();
    }

    /// Blocks from `peer` that did not match their CID, so far.
    fn bad_blocks(&self, peer: &PeerId) -> u64 {
        let id = peer.to_string();
        self.parts
            .net
            .peers()
            .into_iter()
            .find(|p| p.id == id)
            .map_or(0, |p| p.bad_blocks)
    }

    /// Tells the sender how far a fetch is, best effort, and notes it here.
    fn progress(self: &Arc<Self>, sender: PeerId, id: &str, percent: u8) {
        {
            let from = sender.to_string();
            let mut items = lock(&self.items);
            if let Some(i) = items
                .incoming
                .iter_mut()
                .find(|i| i.from == from && i.id == id)
            {
                i.state = InState::Fetching { percent };
            }
        }
        let room = Arc::clone(self);
        let body = Body::Progress {
            id: id.to_string(),
            percent,
        };
        self.parts.net.runtime().spawn(async move {
            let _ = room.post(sender, body).await;
        });
    }

    /// All of `item` is here: it shows in the inbox, and the sender is told.
    fn complete(self: &Arc<Self>, item: &Incoming) {
        let mut items = lock(&self.items);
        let shown = items.free_name(&item.from_name, &item.name);
        let Some(i) = items
            .incoming
            .iter_mut()
            .find(|i| i.from == item.from && i.id == item.id)
        else {
            return;
        };
        i.shown_name = Some(shown.clone());
        i.state = InState::Complete { at_ms: now_ms() };
        i.last_error = None;
        i.receipts_due.push(Receipt::Delivered);
        let snapshot = items.clone();
        drop(items);
        self.save(&snapshot);
        info!(
            "{:?} from {} is in the inbox as {shown:?}",
            item.name, item.from_name
        );
        self.show_inbox();
        self.parts.feed.publish(What::Arrived {
            peer: item.from_name.clone(),
            peer_id: item.from.clone(),
            name: shown,
            size: item.size,
            cid: item.root.clone(),
        });
        self.wake.notify_one();
    }

    /// Builds the inbox's directory (`<sender>/<name>` for every complete item), keeps
    /// it, and shows it as `DIR/inbox/`.
    pub(super) fn show_inbox(&self) {
        invalidate(&self.parts.notifier, self.rebuild_inbox());
    }

    /// `show_inbox` without telling the kernel: the changes it must be told.
    pub(super) fn rebuild_inbox(&self) -> Vec<crate::peers::Invalidation> {
        let mut folders: std::collections::BTreeMap<String, Vec<DirEntry>> = Default::default();
        for i in &lock(&self.items).incoming {
            let (Some(name), Ok(cid)) = (&i.shown_name, Cid::try_from(i.shown_tree())) else {
                continue;
            };
            folders
                .entry(i.from_name.clone())
                .or_default()
                .push(DirEntry {
                    name: name.as_bytes().to_vec(),
                    cid,
                    tsize: i.size,
                });
        }
        let mut blocks = Vec::new();
        let built = (|| {
            let mut top = Vec::new();
            for (folder, entries) in folders {
                let tsize = entries.iter().map(|e| e.tsize).sum();
                let built =
                    build_directory(entries, Metadata::default(), &self.parts.opts, &mut blocks)?;
                top.push(DirEntry {
                    name: folder.into_bytes(),
                    cid: built.cid,
                    tsize: built.tsize.max(tsize),
                });
            }
            build_directory(top, Metadata::default(), &self.parts.opts, &mut blocks)
        })();
        let root = match built {
            Ok(b) => b.cid,
            Err(e) => {
                warn!("cannot build the inbox's directory: {e}");
                return Vec::new();
            }
        };
        let store = &self.parts.store;
        if let Err(e) = store
            .put_many(&blocks, true)
            .and_then(|()| store.pin(&root, INBOX_PIN))
        {
            warn!("cannot keep the inbox's directory: {e}");
            return Vec::new();
        }
        let old = lock(&self.inbox_root).replace(root);
        if let Some(old) = old.filter(|o| *o != root) {
            let _ = store.unpin_label(&old, INBOX_PIN);
        }
        self.parts.view.show_inbox(root)
    }
}

/// A sink that keeps blocks in memory: the inbox's few directory nodes.
impl crate::store::BlockSink for Vec<crate::block::Block> {
    fn put(&mut self, block: crate::block::Block) -> Result<(), StoreError> {
        self.push(block);
        Ok(())
    }
}

/// The blocks of an item, fetched as needed, up to `limit` bytes read: a sender's
/// size claim bounds what it can make me store.
struct Bounded<'a> {
    inner: ForTransfer<'a>,
    limit: u64,
    read: AtomicU64,
}

impl Blocks for Bounded<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.inner.get(cid)?;
        if let Some(b) = &got {
            let read = self.read.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
            if read > self.limit {
                return Err(StoreError::Io {
                    path: cid.to_string(),
                    source: std::io::Error::other(format!(
                        "the item is bigger than the {} bytes offered",
                        self.limit
                    )),
                });
            }
        }
        Ok(got)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.inner.has(cid)
    }

    fn put_many(&self, blocks: &[crate::block::Block], durable: bool) -> Result<(), StoreError> {
        self.inner.put_many(blocks, durable)
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        self.inner.delete_many(cids)
    }
}
