//! Following peers' drives: each new head a followed peer announces moves the peer
//! view, the kernel is told exactly which entries that made stale, and the feed what
//! changed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use cid::Cid;
use fuser::{INodeNo, Notifier};
use libp2p::PeerId;

use super::feed::{Entry, Feed, What};
use crate::head::{Head, SignedHead};
use crate::net::peerbook::PeerBook;
use crate::net::NetEvent;
use crate::peers::{Invalidation, PeerView};
use crate::store::HeadStore;
use crate::unixfs::diff::ChangeKind;

/// The root of the newest head stored for peer `id`.
pub(super) fn stored_head(store: &dyn HeadStore, id: &str) -> Option<Head> {
    let bytes = store.head(id).ok()??;
    SignedHead::verify(&bytes).ok().map(|h| h.head().clone())
}

/// Changes listed per head, at most: the feed is for watching, not for copying.
const CHANGES_PER_HEAD: usize = 1000;
/// Heads waiting for their diff; past it, a head's changes are not listed.
const DIFFS_WAITING: usize = 16;

/// A head whose changes the feed lists once its blocks are here.
struct DiffJob {
    name: String,
    peer: PeerId,
    seq: u64,
    old: Cid,
    new: Cid,
}

/// Moves the peer view to each new head a followed peer announces, tells the kernel
/// exactly what changed, and tells the feed (the head at once, its changes once the
/// blocks that say what they are are here, in a thread of their own).
pub(super) fn follow_heads(
    inbox: mpsc::Receiver<NetEvent>,
    view: Arc<PeerView>,
    book: Arc<Mutex<PeerBook>>,
    notifier: Notifier,
    feed: Arc<Feed>,
    on_connect: Box<dyn Fn(PeerId) + Send>,
) {
    let (diffs, jobs) = mpsc::sync_channel(DIFFS_WAITING);
    list_changes(jobs, Arc::clone(&view), Arc::clone(&feed));
    std::thread::spawn(move || {
        let name_of = |peer: &PeerId| {
            book.lock()
                .unwrap_or_else(|e| e.into_inner())
                .by_id(peer)
                .map(|e| e.name.clone())
        };
        for event in inbox {
            match event {
                NetEvent::Head(head) => {
                    let h = head.head();
                    let Some(name) = name_of(&h.peer) else {
                        continue;
                    };
                    let old = view.root_of(&name);
                    let changes = view.add_peer(&name, h.peer, Some(h));
                    invalidate(&notifier, changes);
                    feed.publish(What::Head {
                        peer: name.clone(),
                        peer_id: h.peer.to_string(),
                        seq: h.seq,
                        root: h.root.to_string(),
                    });
                    // Listing the changes fetches blocks: only for someone watching.
                    let Some(old) = old.filter(|o| *o != h.root && feed.watched()) else {
                        continue;
                    };
                    let job = DiffJob {
                        name,
                        peer: h.peer,
                        seq: h.seq,
                        old,
                        new: h.root,
                    };
                    if let Err(mpsc::TrySendError::Full(job)) = diffs.try_send(job) {
                        feed.publish(What::Incomplete {
                            peer: job.name,
                            seq: job.seq,
                            why: "heads came faster than their changes could be listed".into(),
                        });
                    }
                }
                NetEvent::Connected(peer) | NetEvent::Disconnected(peer) => {
                    if matches!(event, NetEvent::Connected(_)) {
                        on_connect(peer);
                    }
                    let name = name_of(&peer).unwrap_or_else(|| peer.to_string());
                    let peer_id = peer.to_string();
                    feed.publish(match event {
                        NetEvent::Connected(_) => What::Connected {
                            peer: name,
                            peer_id,
                        },
                        _ => What::Disconnected {
                            peer: name,
                            peer_id,
                        },
                    });
                }
            }
        }
    });
}

/// Lists each head's changes in the feed, in the order the heads came.
fn list_changes(jobs: mpsc::Receiver<DiffJob>, view: Arc<PeerView>, feed: Arc<Feed>) {
    std::thread::spawn(move || {
        for job in jobs {
            let diff = match view.diff(job.peer, &job.old, &job.new, CHANGES_PER_HEAD) {
                Ok(d) => d,
                Err(e) => {
                    feed.publish(What::Incomplete {
                        peer: job.name,
                        seq: job.seq,
                        why: e.to_string(),
                    });
                    continue;
                }
            };
            for c in diff.changes {
                let entry = Entry {
                    peer: job.name.clone(),
                    path: String::from_utf8_lossy(&c.path).into_owned(),
                    kind: c.kind.name().into(),
                    size: c.size,
                    cid: c.cid.to_string(),
                };
                feed.publish(match c.change {
                    ChangeKind::Added => What::Added(entry),
                    ChangeKind::Changed => What::Changed(entry),
                    ChangeKind::Removed => What::Removed(entry),
                });
            }
            if !diff.complete {
                feed.publish(What::Incomplete {
                    peer: job.name,
                    seq: job.seq,
                    why: format!("more than {CHANGES_PER_HEAD} entries changed"),
                });
            }
        }
    });
}

/// Tells the kernel to drop what a head change made stale. Errors only mean the kernel
/// did not hold that entry.
pub(super) fn invalidate(notifier: &Notifier, changes: Vec<Invalidation>) {
    for change in changes {
        let _ = match &change {
            Invalidation::Entry { parent, name } => {
                notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name))
            }
            Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
        };
    }
}
