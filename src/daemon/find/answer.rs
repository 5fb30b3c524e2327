//! Answering `/peerfs/find/1.0.0`: a peer my `readers` allow asks me to search my drive
//! as last published (what it could fetch and walk itself), and gets the matches.
//!
//! What a stranger can make me do is bounded: `AT_ONCE` searches at a time and one per
//! peer, `MAX_MATCHES` matches and `WALK_LIMIT` of walking each, and an asker that stops
//! reading loses its search after `STALLED`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use super::super::follow::stored_head;
use crate::find::wire::{self, Answer, FIND_PROTOCOL, MAX_MATCHES};
use crate::find::{self, Hooks, Next, Walked};
use crate::head::OWN_HEAD;
use crate::net::peerbook::PeerBook;
use crate::net::NetHandle;
use crate::store::rocks::RocksStore;

/// Searches running at once, from all peers.
const AT_ONCE: usize = 4;
/// One search walks this long at most; then it ends, truncated.
const WALK_LIMIT: Duration = Duration::from_secs(60);
/// How long an answer may wait for an asker that does not read, or an ask to come.
const STALLED: Duration = Duration::from_secs(30);
/// Answers waiting between the walk and the stream.
const QUEUED: usize = 256;

/// What answering needs.
pub(in crate::daemon) struct Answering {
    pub net: NetHandle,
    pub store: Arc<RocksStore>,
    pub book: Arc<Mutex<PeerBook>>,
}

/// Starts answering searches on the node's runtime.
pub(in crate::daemon) fn start(parts: Answering) -> Result<(), String> {
    let incoming = parts
        .net
        .streams()
        .accept(FIND_PROTOCOL)
        .map_err(|e| format!("cannot serve {FIND_PROTOCOL}: {e}"))?;
    let runtime = parts.net.runtime().clone();
    runtime.spawn(serve(Arc::new(parts), incoming));
    Ok(())
}

async fn serve(parts: Arc<Answering>, mut incoming: libp2p_stream::IncomingStreams) {
    let at_once = Arc::new(Semaphore::new(AT_ONCE));
    let asking: Arc<Mutex<HashSet<PeerId>>> = Arc::default();
    while let Some((peer, stream)) = incoming.next().await {
        let permit = Arc::clone(&at_once).try_acquire_owned().ok();
        let first = lock(&asking).insert(peer);
        let (parts, asking) = (Arc::clone(&parts), Arc::clone(&asking));
        tokio::spawn(async move {
            let refusal = match (&permit, first) {
                (_, false) => Some("a search of yours is running here already"),
                (None, _) => Some("this node is answering other searches; walk instead"),
                _ => None,
            };
            if let Err(e) = answer(&parts, peer, stream, refusal).await {
                debug!("search asked by {peer}: {e}");
            }
            drop(permit);
            if first {
                lock(&asking).remove(&peer);
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn answer(
    parts: &Answering,
    peer: PeerId,
    mut stream: Stream,
    refusal: Option<&str>,
) -> std::io::Result<()> {
    let timed = |e| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{e}"));
    let ask = tokio::time::timeout(STALLED, wire::read_ask(&mut stream))
        .await
        .map_err(timed)??;
    let followed = lock(&parts.book).by_id(&peer).is_some();
    let reason = match refusal {
        Some(r) => Some(r.to_string()),
        None if !parts.net.readers().allows(&peer, followed) => {
            Some("this node's `readers` do not include you".to_string())
        }
        None => None,
    };
    if let Some(reason) = reason {
        wire::send_answer(&mut stream, &Answer::Refused { reason }).await?;
        return stream.close().await;
    }
    let Some(root) = stored_head(parts.store.as_ref(), OWN_HEAD).map(|h| h.root) else {
        // Nothing published yet: nothing to find.
        let end = Answer::End {
            walked: Walked::default(),
            truncated: false,
        };
        wire::send_answer(&mut stream, &end).await?;
        return stream.close().await;
    };
    let matcher = match ask.query.compile() {
        Ok(m) => m,
        Err(e) => {
            let refused = Answer::Refused {
                reason: e.to_string(),
            };
            wire::send_answer(&mut stream, &refused).await?;
            return stream.close().await;
        }
    };
    let limit = ask.limit.min(MAX_MATCHES);
    let (tx, mut rx) = mpsc::channel(QUEUED);
    let store = Arc::clone(&parts.store);
    // The walk reads the store: off the runtime, feeding the stream through `tx`. When
    // the asker goes away, `rx` is dropped and the walk stops at its next report.
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WALK_LIMIT;
        let truncated = std::cell::Cell::new(false);
        let mut matches = 0;
        let hooks = Hooks {
            found: |hit| {
                matches += 1;
                let full = matches >= limit;
                truncated.set(truncated.get() || full);
                match tx.blocking_send(Answer::Hit(hit)) {
                    Ok(()) if !full => Next::Go,
                    _ => Next::Stop,
                }
            },
            progress: |w: &Walked| {
                let late = Instant::now() > deadline;
                truncated.set(truncated.get() || late);
                match tx.blocking_send(Answer::Walking(*w)) {
                    Ok(()) if !late => Next::Go,
                    _ => Next::Stop,
                }
            },
            ahead: |_: &[cid::Cid]| {},
        };
        let walked = find::search(store.as_ref(), &root, &matcher, hooks);
        let truncated = truncated.get();
        let _ = tx.blocking_send(Answer::End { walked, truncated });
    });
    while let Some(a) = rx.recv().await {
        let last = matches!(a, Answer::End { .. });
        let sent = tokio::time::timeout(STALLED, wire::send_answer(&mut stream, &a))
            .await
            .map_err(timed)??;
        if !sent {
            warn!("a match of a search by {peer} has a path too long to send; left out");
        }
        if last {
            break;
        }
    }
    stream.close().await
}
