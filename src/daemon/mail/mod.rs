//! The inbox and outbox at work: offers sent (and sent again until the recipient
//! answers, across restarts), offers taken by `accept_from` and the quotas, items
//! fetched with the verified fetcher and shown in `inbox/` only once all of them is
//! here, and receipts (delivered, read) sent back until the sender has them.
//!
//! - `letters`: letters posted to peers, and those peers post to me, answered.
//! - `fetch`: an item taken: fetched whole, shown in `inbox/`, the sender told.
//!
//! Everything runs on the node's runtime beside it, over `/peerfs/offer/1.0.0` streams
//! (`share::wire`); what must survive a restart is in `mail.json` (`share::items`).
//! One worker loop looks at the items every `ROUND` (and at once when woken: a new
//! item, a peer connecting) and starts what is due; each item has at most one job
//! running.

mod fetch;
mod letters;
mod remove;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;
use fuser::Notifier;
use libp2p::PeerId;
use libp2p_identity::Keypair;
use tokio::sync::Notify;
use tracing::warn;

use super::feed::Feed;
use crate::net::peerbook::PeerBook;
use crate::net::NetHandle;
use crate::peers::PeerView;
use crate::share::items::{InState, Incoming, Items, OutState, Outgoing, Receipt};
use crate::share::policy::{valid_name, Policy};
use crate::share::wire::{MAX_NOTE, OFFER_PROTOCOL};
use crate::store::rocks::RocksStore;
use crate::unixfs::ImportOptions;

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
    /// Deliveries being fetched are transfers too.
    pub transfers: Arc<crate::transfers::Transfers>,
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
            Ok(incoming) => drop(runtime.spawn(letters::serve_letters(weak.clone(), incoming))),
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
