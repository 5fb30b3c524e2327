//! Following peers' drives: each new head a followed peer announces moves the peer
//! view, and the kernel is told exactly which entries that made stale.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use fuser::{INodeNo, Notifier};

use crate::head::{Head, SignedHead};
use crate::net::peerbook::PeerBook;
use crate::net::NetEvent;
use crate::peers::{Invalidation, PeerView};
use crate::store::HeadStore;

/// The root of the newest head stored for peer `id`.
pub(super) fn stored_head(store: &dyn HeadStore, id: &str) -> Option<Head> {
    let bytes = store.head(id).ok()??;
    SignedHead::verify(&bytes).ok().map(|h| h.head().clone())
}

/// Moves the peer view to each new head a followed peer announces, and tells the
/// kernel exactly what changed.
pub(super) fn follow_heads(
    inbox: mpsc::Receiver<NetEvent>,
    view: Arc<PeerView>,
    book: Arc<Mutex<PeerBook>>,
    notifier: Notifier,
) {
    std::thread::spawn(move || {
        for event in inbox {
            match event {
                NetEvent::Head(head) => {
                    let h = head.head();
                    let name = book
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .by_id(&h.peer)
                        .map(|e| e.name.clone());
                    let Some(name) = name else { continue };
                    let changes = view.add_peer(&name, h.peer, Some(h));
                    invalidate(&notifier, changes);
                }
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
