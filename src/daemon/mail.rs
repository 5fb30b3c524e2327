//! The inbox and outbox at work: offers sent (and sent again until the recipient
//! answers, across restarts), offers taken by `accept_from` and the quotas, items
//! fetched with the verified fetcher and shown in `inbox/` only once all of them is
//! here, and receipts (delivered, read) sent back until the sender has them.
//!
//! Everything runs on the node's runtime beside it, over `/peerfs/offer/1.0.0` streams
//! (`share::wire`); what must survive a restart is in `mail.json` (`share::items`).
//! One worker loop looks at the items every `ROUND` (and at once when woken: a new
//! item, a peer connecting) and starts what is due; each item has at most one job
//! running.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;
use fuser::Notifier;
use libp2p::futures::StreamExt;
use libp2p::PeerId;
use libp2p_identity::Keypair;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, info, warn};

use super::feed::{Feed, What};
use super::follow::invalidate;
use crate::net::peerbook::PeerBook;
use crate::net::{NetHandle, RemoteBlocks};
use crate::peers::PeerView;
use crate::pin;
use crate::share::items::{InState, Incoming, Items, OutState, Outgoing, Receipt};
use crate::share::policy::{valid_name, Policy, Sender};
use crate::share::wire::{self, Answer, Body, Letter, MAX_NOTE, OFFER_PROTOCOL};
use crate::store::rocks::RocksStore;
use crate::store::{Blocks, StoreError};
use crate::unixfs::build::{build_directory, DirEntry};
use crate::unixfs::{ImportOptions, Metadata};

/// How often the items are looked at when nothing wakes the worker.
const ROUND: Duration = Duration::from_secs(1);
/// One letter's exchange, at most.
const LETTER_TIMEOUT: Duration = Duration::from_secs(15);
/// A peer that could not be reached is tried again after this, doubling to the max
/// (and at once when it connects).
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// A fetch that failed starts again after this.
const FETCH_RETRY: Duration = Duration::from_secs(5);
/// Letters read at once from all peers; more streams wait.
const LETTERS_AT_ONCE: usize = 32;
/// The pin label of the inbox's own directory nodes.
const INBOX_PIN: &str = "inbox";
/// Room beyond an offer's size for its directory and file nodes: past it, the
/// sender's claim was false and the fetch stops.
const NODE_SLACK: u64 = 1 << 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the mailroom is given.
pub(super) struct Parts {
    pub repo: PathBuf,
    pub key: Keypair,
    pub net: NetHandle,
    pub store: Arc<RocksStore>,
    pub book: Arc<Mutex<PeerBook>>,
    pub feed: Arc<Feed>,
    pub view: Arc<PeerView>,
    pub notifier: Notifier,
    pub policy: Policy,
    pub read_receipts: bool,
    pub opts: ImportOptions,
}

pub(super) struct Mailroom {
    parts: Parts,
    me: PeerId,
    items: Mutex<Items>,
    /// Items with a job running (an offer, a receipt, a fetch), by job key.
    busy: Mutex<HashSet<String>>,
    /// Peers that could not be reached: when to try again, and the next wait.
    retry: Mutex<HashMap<PeerId, (Instant, Duration)>>,
    /// Fetches that failed: when to start again.
    fetch_retry: Mutex<HashMap<String, Instant>>,
    wake: Notify,
    /// The inbox root shown now.
    inbox_root: Mutex<Option<Cid>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A job's key in `busy`.
fn out_key(id: &str) -> String {
    format!("o:{id}")
}
fn receipt_key(from: &str, id: &str) -> String {
    format!("r:{from}:{id}")
}
fn fetch_key(from: &str, id: &str) -> String {
    format!("f:{from}:{id}")
}

impl Mailroom {
    /// Loads the items and starts the worker and the letter server on the node's
    /// runtime.
    pub(super) fn start(parts: Parts) -> Result<Arc<Mailroom>, String> {
        let items = Items::load(&parts.repo).map_err(|e| e.to_string())?;
        let me = parts.key.public().to_peer_id();
        let room = Arc::new(Mailroom {
            parts,
            me,
            items: Mutex::new(items),
            busy: Mutex::default(),
            retry: Mutex::default(),
            fetch_retry: Mutex::default(),
            wake: Notify::new(),
            inbox_root: Mutex::default(),
        });
        room.show_inbox();
        let runtime = room.parts.net.runtime().clone();
        let weak = Arc::downgrade(&room);
        match room.parts.net.streams().accept(OFFER_PROTOCOL) {
            Ok(incoming) => drop(runtime.spawn(serve_letters(weak.clone(), incoming))),
            Err(e) => return Err(format!("cannot serve {OFFER_PROTOCOL}: {e}")),
        }
        runtime.spawn(work(weak));
        Ok(room)
    }

    fn save(&self, items: &Items) {
        if let Err(e) = items.save(&self.parts.repo) {
            warn!("cannot save the inbox and outbox: {e}");
        }
    }

    fn name_of(&self, peer: &PeerId) -> Option<String> {
        lock(&self.parts.book).by_id(peer).map(|e| e.name.clone())
    }

    /// Queues `root` (named `name`, `size` bytes) for the peer `to` (a peer-book name
    /// or a peer ID) and starts offering it.
    pub(super) fn send(
        &self,
        to: &str,
        name: &str,
        root: &str,
        size: u64,
        note: &str,
    ) -> Result<Outgoing, String> {
        let (peer, to_name) = {
            let book = lock(&self.parts.book);
            match book.by_name(to) {
                Some(e) => (e.peer_id(), e.name.clone()),
                None => {
                    let id: Option<PeerId> = to.parse().ok();
                    let name = id.and_then(|p| book.by_id(&p).map(|e| e.name.clone()));
                    (id, name.unwrap_or_else(|| to.to_string()))
                }
            }
        };
        let peer = peer.ok_or_else(|| {
            format!("{to}: no such peer (a name from `peerfs peers`, or a peer ID)")
        })?;
        if peer == self.me {
            return Err("that is this node".into());
        }
        if !valid_name(name) {
            return Err(format!("{name:?} cannot be a name in an inbox"));
        }
        if note.len() > MAX_NOTE {
            return Err(format!("the note is over {MAX_NOTE} bytes"));
        }
        Cid::try_from(root).map_err(|e| format!("{root}: not a CID ({e})"))?;
        let item = Outgoing {
            id: format!("{:016x}{:08x}", rand_u64(), std::process::id()),
            to: peer.to_string(),
            to_name,
            name: name.to_string(),
            root: root.to_string(),
            size,
            note: note.to_string(),
            created_ms: now_ms(),
            state: OutState::Queued,
            last_error: None,
        };
        // What is sent stays while it is in the outbox (it may be fetched any time).
        if let Ok(cid) = Cid::try_from(root) {
            if let Err(e) = self.parts.store.pin(&cid, &format!("outbox {}", item.id)) {
                return Err(format!("keeping {root}: {e}"));
            }
        }
        let mut items = lock(&self.items);
        items.outgoing.push(item.clone());
        self.save(&items);
        drop(items);
        self.wake.notify_one();
        Ok(item)
    }

    /// How the newest item named `name` sent to `peer` (its name here) goes.
    pub(super) fn delivery(&self, peer: &str, name: &str) -> Option<String> {
        lock(&self.items)
            .outgoing
            .iter()
            .rev()
            .find(|o| o.to_name == peer && o.name == name)
            .map(|o| crate::share::items::out_state_text(&o.state))
    }

    pub(super) fn outgoing(&self) -> Vec<Outgoing> {
        lock(&self.items).outgoing.clone()
    }

    pub(super) fn incoming(&self) -> Vec<Incoming> {
        lock(&self.items).incoming.clone()
    }

    /// A followed peer connected: what waits for it is tried now.
    pub(super) fn connected(&self, peer: &PeerId) {
        lock(&self.retry).remove(peer);
        self.wake.notify_one();
    }

    /// The first read of `inbox/<folder>/<name>`'s content: a receipt is due.
    pub(super) fn read(&self, folder: &str, name: &str) {
        if !self.parts.read_receipts {
            return;
        }
        let mut items = lock(&self.items);
        let Some(item) = items
            .incoming
            .iter_mut()
            .find(|i| i.from_name == folder && i.shown_name.as_deref() == Some(name))
        else {
            return;
        };
        let InState::Complete { at_ms } = item.state else {
            return;
        };
        item.state = InState::Read {
            complete_ms: at_ms,
            at_ms: now_ms(),
        };
        item.receipts_due.push(Receipt::Read);
        self.save(&items);
        drop(items);
        self.wake.notify_one();
    }

    /// Whether `peer` may be tried now.
    fn reachable_now(&self, peer: &PeerId) -> bool {
        lock(&self.retry)
            .get(peer)
            .is_none_or(|(at, _)| Instant::now() >= *at)
    }

    fn unreachable(&self, peer: PeerId) {
        let mut retry = lock(&self.retry);
        let wait = retry
            .get(&peer)
            .map_or(RETRY_MIN, |(_, w)| (*w * 2).min(RETRY_MAX));
        retry.insert(peer, (Instant::now() + wait, wait));
    }

    /// Claims job `key`; false if it runs already.
    fn claim(&self, key: String) -> bool {
        lock(&self.busy).insert(key)
    }

    fn release(&self, key: &str) {
        lock(&self.busy).remove(key);
    }

    /// Starts every job that is due.
    fn round(self: &Arc<Self>) {
        let (offers, receipts, fetches) = {
            let items = lock(&self.items);
            let offers: Vec<Outgoing> = items
                .outgoing
                .iter()
                .filter(|o| o.state == OutState::Queued)
                .cloned()
                .collect();
            let receipts: Vec<(String, String, Receipt)> = items
                .incoming
                .iter()
                .filter_map(|i| Some((i.from.clone(), i.id.clone(), *i.receipts_due.first()?)))
                .collect();
            let fetches: Vec<Incoming> = items
                .incoming
                .iter()
                .filter(|i| matches!(i.state, InState::Fetching { .. }))
                .cloned()
                .collect();
            (offers, receipts, fetches)
        };
        let runtime = self.parts.net.runtime().clone();
        for o in offers {
            let Ok(peer) = o.to.parse::<PeerId>() else {
                continue;
            };
            if !self.reachable_now(&peer) || !self.claim(out_key(&o.id)) {
                continue;
            }
            let room = Arc::clone(self);
            runtime.spawn(async move {
                room.offer(peer, &o).await;
                room.release(&out_key(&o.id));
            });
        }
        for (from, id, receipt) in receipts {
            let Ok(peer) = from.parse::<PeerId>() else {
                continue;
            };
            if !self.reachable_now(&peer) || !self.claim(receipt_key(&from, &id)) {
                continue;
            }
            let room = Arc::clone(self);
            runtime.spawn(async move {
                room.send_receipt(peer, &id, receipt).await;
                room.release(&receipt_key(&from, &id));
            });
        }
        for i in fetches {
            let key = fetch_key(&i.from, &i.id);
            let waiting = lock(&self.fetch_retry)
                .get(&key)
                .is_some_and(|at| Instant::now() < *at);
            if waiting || !self.claim(key.clone()) {
                continue;
            }
            let room = Arc::clone(self);
            runtime.spawn_blocking(move || {
                room.fetch(&i);
                room.release(&key);
            });
        }
    }

    /// Sends one signed letter to `peer`, and returns its answer.
    async fn post(&self, peer: PeerId, body: Body) -> Result<Answer, String> {
        let letter = Letter {
            from: self.me,
            to: peer,
            time_ms: now_ms(),
            body,
        };
        let signed = letter.sign(&self.parts.key).map_err(|e| e.to_string())?;
        let mut control = self.parts.net.streams();
        let exchange = async {
            let mut stream = control
                .open_stream(peer, OFFER_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            wire::send_letter(&mut stream, signed)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(LETTER_TIMEOUT, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err("no answer in time".into()),
        }
    }

    async fn offer(&self, peer: PeerId, o: &Outgoing) {
        let Ok(root) = Cid::try_from(o.root.as_str()) else {
            return;
        };
        let body = Body::Offer {
            id: o.id.clone(),
            name: o.name.clone(),
            root: root.to_bytes(),
            size: o.size,
            note: o.note.clone(),
        };
        let answer = self.post(peer, body).await;
        let mut items = lock(&self.items);
        let Some(item) = items.outgoing.iter_mut().find(|i| i.id == o.id) else {
            return;
        };
        match answer {
            Ok(Answer::Accepted) => {
                if item.state == OutState::Queued {
                    item.state = OutState::Delivering { percent: 0 };
                }
                item.last_error = None;
                info!("{} offered to {}: accepted", o.name, o.to_name);
            }
            Ok(Answer::Refused { reason }) => {
                info!("{} offered to {}: refused: {reason}", o.name, o.to_name);
                item.state = OutState::Refused {
                    reason: reason.clone(),
                };
                self.parts.feed.publish(What::Refused {
                    peer: o.to_name.clone(),
                    peer_id: o.to.clone(),
                    name: o.name.clone(),
                    reason,
                });
            }
            Ok(Answer::Noted) => {}
            Err(e) => {
                debug!("offering {} to {}: {e}", o.name, o.to_name);
                item.last_error = Some(e);
                drop(items);
                self.unreachable(peer);
                return;
            }
        }
        let snapshot = items.clone();
        drop(items);
        self.save(&snapshot);
    }

    async fn send_receipt(&self, peer: PeerId, id: &str, receipt: Receipt) {
        let failure = || {
            let from = peer.to_string();
            lock(&self.items)
                .incoming
                .iter()
                .find(|i| i.from == from && i.id == id)
                .and_then(|i| match &i.state {
                    InState::Failed { reason } => Some(reason.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let body = match receipt {
            Receipt::Delivered => Body::Delivered { id: id.to_string() },
            Receipt::Read => Body::Read { id: id.to_string() },
            Receipt::Failed => Body::Failed {
                id: id.to_string(),
                reason: failure(),
            },
        };
        match self.post(peer, body).await {
            Ok(_) => {
                let mut items = lock(&self.items);
                let from = peer.to_string();
                if let Some(i) = items
                    .incoming
                    .iter_mut()
                    .find(|i| i.from == from && i.id == id)
                {
                    i.receipts_due.retain(|r| *r != receipt);
                }
                let snapshot = items.clone();
                drop(items);
                self.save(&snapshot);
                self.wake.notify_one();
            }
            Err(e) => {
                debug!("receipt for {id} to {peer}: {e}");
                self.unreachable(peer);
            }
        }
    }

    /// A letter from `peer`, verified: what to answer.
    fn letter(self: &Arc<Self>, peer: PeerId, letter: Letter) -> Answer {
        match letter.body {
            Body::Offer {
                id,
                name,
                root,
                size,
                note,
            } => self.offered(peer, id, name, &root, size, note),
            Body::Progress { id, percent } => {
                self.outgoing_update(peer, &id, |item| {
                    if let OutState::Delivering { .. } | OutState::Queued = item.state {
                        item.state = OutState::Delivering {
                            percent: percent.min(99),
                        };
                    }
                    None
                });
                Answer::Noted
            }
            Body::Delivered { id } => {
                self.outgoing_update(peer, &id, |item| match item.state {
                    OutState::Delivered { .. } | OutState::Read { .. } => None,
                    _ => {
                        item.state = OutState::Delivered { at_ms: now_ms() };
                        Some(What::Delivered {
                            peer: item.to_name.clone(),
                            peer_id: item.to.clone(),
                            name: item.name.clone(),
                        })
                    }
                });
                Answer::Noted
            }
            Body::Failed { id, reason } => {
                self.outgoing_update(peer, &id, |item| {
                    let reason = format!("the recipient gave up on it: {reason}");
                    item.state = OutState::Refused {
                        reason: reason.clone(),
                    };
                    Some(What::Refused {
                        peer: item.to_name.clone(),
                        peer_id: item.to.clone(),
                        name: item.name.clone(),
                        reason,
                    })
                });
                Answer::Noted
            }
            Body::Read { id } => {
                self.outgoing_update(peer, &id, |item| {
                    let delivered_ms = match item.state {
                        OutState::Read { .. } => return None,
                        OutState::Delivered { at_ms } => at_ms,
                        _ => now_ms(),
                    };
                    item.state = OutState::Read {
                        delivered_ms,
                        at_ms: now_ms(),
                    };
                    Some(What::Read {
                        peer: item.to_name.clone(),
                        peer_id: item.to.clone(),
                        name: item.name.clone(),
                    })
                });
                Answer::Noted
            }
        }
    }

    /// Changes my outgoing item `id` to `peer` by `change`, saves, and publishes the
    /// event it returns.
    fn outgoing_update(
        &self,
        peer: PeerId,
        id: &str,
        change: impl FnOnce(&mut Outgoing) -> Option<What>,
    ) {
        let to = peer.to_string();
        let mut items = lock(&self.items);
        let Some(item) = items.outgoing.iter_mut().find(|i| i.id == id && i.to == to) else {
            return;
        };
        let event = change(item);
        if let Some(event) = event {
            let snapshot = items.clone();
            drop(items);
            self.save(&snapshot);
            self.parts.feed.publish(event);
        }
    }

    /// An offer from `peer`: taken (and fetched from now on) or refused, with why.
    fn offered(
        self: &Arc<Self>,
        peer: PeerId,
        id: String,
        name: String,
        root: &[u8],
        size: u64,
        note: String,
    ) -> Answer {
        let refuse = |reason: String| {
            info!("offer of {name:?} from {peer} refused: {reason}");
            Answer::Refused { reason }
        };
        let Ok(root) = Cid::try_from(root) else {
            return refuse("the root is not a CID".into());
        };
        if !valid_name(&name) || id.is_empty() || id.len() > 128 {
            return refuse(format!("{name:?} cannot be a name in an inbox"));
        }
        let from = peer.to_string();
        let followed_as = self.name_of(&peer);
        let mut items = lock(&self.items);
        // The same offer again (the sender did not hear my answer): taken already.
        if items.incoming.iter().any(|i| i.from == from && i.id == id) {
            return Answer::Accepted;
        }
        let held = items.held_from(&from);
        let count = items.incoming.iter().filter(|i| i.from == from).count();
        let sender = Sender {
            id: peer,
            followed_as: followed_as.as_deref(),
        };
        if let Some(reason) = self.parts.policy.refusal(&sender, size, held, count) {
            return refuse(reason);
        }
        info!("offer of {name:?} ({size} bytes) from {peer} taken");
        items.incoming.push(Incoming {
            id,
            from,
            from_name: followed_as.unwrap_or_else(|| peer.to_string()),
            name,
            shown_name: None,
            root: root.to_string(),
            size,
            note,
            offered_ms: now_ms(),
            state: InState::Fetching { percent: 0 },
            receipts_due: Vec::new(),
            last_error: None,
        });
        let snapshot = items.clone();
        drop(items);
        self.save(&snapshot);
        self.wake.notify_one();
        Answer::Accepted
    }

    /// Fetches all of an incoming item (what is here already is not fetched again),
    /// keeps it, and shows it in the inbox; on failure, tries again later.
    fn fetch(self: &Arc<Self>, item: &Incoming) {
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
        let bounded = Bounded {
            inner: RemoteBlocks {
                local: self.parts.store.clone(),
                net: self.parts.net.clone(),
                owner: Some(owner),
                fetch: true,
            },
            limit,
            read: AtomicU64::new(0),
        };
        let net = self.parts.net.clone();
        let store = Arc::clone(&self.parts.store);
        let ahead = |cids: &[Cid]| {
            for c in cids {
                if !store.has(c).unwrap_or(true) {
                    net.prefetch(c, Some(owner));
                }
            }
        };
        let mut told = 0u8;
        let size = item.size.max(1);
        let progress = |p: pin::WalkProgress| {
            let percent = (p.bytes.saturating_mul(100) / size).min(99) as u8;
            if percent >= told.saturating_add(10) {
                told = percent;
                self.progress(owner, &item.id, percent);
            }
        };
        let label = format!("inbox {} {}", item.from, item.id);
        let bad_before = self.bad_blocks(&owner);
        let _no_sweep = self.parts.store.hold_off_sweeps();
        match pin::pin_tree(&self.parts.store, &bounded, &root, &label, ahead, progress) {
            Ok(_) => self.complete(item),
            // The sender's blocks did not hash to their CIDs: it is lying or broken, and
            // asking again gets the same.
            Err(e) if self.bad_blocks(&owner) > bad_before => {
                warn!(
                    "{:?} from {}: its blocks do not verify ({e}); given up",
                    item.name, item.from_name
                );
                let mut items = lock(&self.items);
                if let Some(i) = items
                    .incoming
                    .iter_mut()
                    .find(|i| i.from == item.from && i.id == item.id)
                {
                    i.state = InState::Failed {
                        reason: format!("blocks that do not verify came from the sender ({e})"),
                    };
                    i.receipts_due.push(Receipt::Failed);
                }
                let snapshot = items.clone();
                drop(items);
                self.save(&snapshot);
                self.wake.notify_one();
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
    fn show_inbox(&self) {
        let mut folders: std::collections::BTreeMap<String, Vec<DirEntry>> = Default::default();
        for i in &lock(&self.items).incoming {
            let (Some(name), Ok(cid)) = (&i.shown_name, Cid::try_from(i.root.as_str())) else {
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
            Err(e) => return warn!("cannot build the inbox's directory: {e}"),
        };
        let store = &self.parts.store;
        if let Err(e) = store
            .put_many(&blocks, true)
            .and_then(|()| store.pin(&root, INBOX_PIN))
        {
            return warn!("cannot keep the inbox's directory: {e}");
        }
        let old = lock(&self.inbox_root).replace(root);
        if let Some(old) = old.filter(|o| *o != root) {
            let _ = store.unpin_label(&old, INBOX_PIN);
        }
        let changes = self.parts.view.show_inbox(root);
        invalidate(&self.parts.notifier, changes);
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
struct Bounded {
    inner: RemoteBlocks,
    limit: u64,
    read: AtomicU64,
}

impl Blocks for Bounded {
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

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The worker: a round every `ROUND`, or when woken; ends with the mailroom.
async fn work(room: Weak<Mailroom>) {
    loop {
        let Some(r) = room.upgrade() else { return };
        r.round();
        let woken = async { r.wake.notified().await };
        let _ = tokio::time::timeout(ROUND, woken).await;
    }
}

/// Reads letters from the streams peers open, `LETTERS_AT_ONCE` at a time.
async fn serve_letters(room: Weak<Mailroom>, mut incoming: libp2p_stream::IncomingStreams) {
    let at_once = Arc::new(Semaphore::new(LETTERS_AT_ONCE));
    while let Some((peer, mut stream)) = incoming.next().await {
        // Over the bound: the stream is dropped, and the sender tries again later.
        let Ok(permit) = Arc::clone(&at_once).try_acquire_owned() else {
            continue;
        };
        let Some(r) = room.upgrade() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let bytes = wire::read_letter(&mut stream).await?;
                let answer = match Letter::verify(&bytes, peer, r.me) {
                    Ok(letter) => {
                        let r2 = Arc::clone(&r);
                        tokio::task::spawn_blocking(move || r2.letter(peer, letter))
                            .await
                            .unwrap_or(Answer::Refused {
                                reason: "the recipient failed to read the offer".into(),
                            })
                    }
                    Err(e) => Answer::Refused {
                        reason: e.to_string(),
                    },
                };
                wire::answer(&mut stream, &answer).await
            };
            if let Ok(Err(e)) = tokio::time::timeout(LETTER_TIMEOUT, exchange).await {
                debug!("letter from {peer}: {e}");
            }
        });
    }
}
