//! Heads: publishing mine (gossip to followers online, the DHT for the others),
//! taking followed peers' newer ones from gossip, the DHT and `/peerfs/head/1`, storing
//! them off the loop, and telling the daemon.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use libp2p::gossipsub::IdentTopic;
use libp2p::kad;
use libp2p::request_response;
use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::{Node, HEAD_RECORD_EVERY};
use crate::head::SignedHead;
use crate::net::protocol::{HeadRequest, HeadResponse, MAX_HEADS};
use crate::net::NetEvent;
use crate::store::HeadStore;

pub(super) fn head_topic(peer: &PeerId) -> IdentTopic {
    IdentTopic::new(format!("/peerfs/head/{peer}"))
}

pub(super) fn head_key(peer: &PeerId) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/peerfs/head/{peer}"))
}

pub(in crate::net) fn load_head(store: &dyn HeadStore, name: &str) -> Option<SignedHead> {
    let bytes = store.head(name).ok()??;
    match SignedHead::verify(&bytes) {
        Ok(h) => Some(h),
        Err(e) => {
            warn!("stored head {name} is unreadable: {e}");
            None
        }
    }
}

/// Stores followed peers' heads off the event loop: the newest per peer waits here
/// until one blocking task writes it, so heads are stored in order and a peer that
/// sends many makes us hold one.
pub(super) struct HeadWriter {
    pending: Arc<std::sync::Mutex<HashMap<PeerId, SignedHead>>>,
    wake: Arc<Notify>,
}

impl HeadWriter {
    pub(super) fn start(store: Arc<dyn HeadStore>) -> HeadWriter {
        let pending: Arc<std::sync::Mutex<HashMap<PeerId, SignedHead>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let (queue, woken) = (Arc::clone(&pending), Arc::clone(&wake));
        tokio::spawn(async move {
            loop {
                woken.notified().await;
                let heads = std::mem::take(&mut *lock(&queue));
                let store = Arc::clone(&store);
                let written = tokio::task::spawn_blocking(move || {
                    for (owner, head) in heads {
                        if let Err(e) = store.commit(&[], &owner.to_string(), head.encoded()) {
                            warn!("cannot store head {} of {owner}: {e}", head.head().seq);
                        }
                    }
                });
                if written.await.is_err() {
                    return;
                }
            }
        });
        HeadWriter { pending, wake }
    }

    pub(super) fn write(&self, head: SignedHead) {
        lock(&self.pending).insert(head.head().peer, head);
        self.wake.notify_one();
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every change under these locks is one insert or take.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type HeadEvent = request_response::Event<HeadRequest, HeadResponse>;

impl Node {
    pub(super) fn publish(&mut self, head: SignedHead) {
        self.own_head = Some(head);
        self.gossip_head();
        self.head_record_due = true;
        self.put_head_record(Instant::now());
    }

    /// Gossips my newest head to its followers.
    pub(super) fn gossip_head(&mut self) {
        let Some(head) = &self.own_head else { return };
        let (seq, encoded) = (head.head().seq, head.encoded().to_vec());
        let topic = head_topic(&self.me);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, encoded) {
            // No follower online: they ask for the head when they connect.
            debug!("head {seq} not gossiped: {e}");
        }
    }

    /// Puts my newest head in the DHT, unless it was put there a moment ago (then the
    /// tick puts it later).
    pub(super) fn put_head_record(&mut self, now: Instant) {
        let recent = self
            .head_record_put
            .is_some_and(|t| now.duration_since(t) < HEAD_RECORD_EVERY);
        let Some(head) = self
            .own_head
            .as_ref()
            .filter(|_| self.head_record_due && !recent)
        else {
            return;
        };
        let record = kad::Record::new(head_key(&self.me), head.encoded().to_vec());
        let _ = self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One);
        self.head_record_put = Some(now);
        self.head_record_due = false;
    }

    /// Asks `peer` for the newest heads it knows of everyone I follow.
    pub(super) fn ask_heads(&mut self, peer: PeerId) {
        let peers = self
            .followed
            .keys()
            .take(MAX_HEADS)
            .map(|p| ByteBuf::from(p.to_bytes()))
            .collect::<Vec<_>>();
        if !peers.is_empty() {
            self.swarm
                .behaviour_mut()
                .heads
                .send_request(&peer, HeadRequest { peers });
        }
    }

    /// Takes a head from the network if it is signed, followed and newer.
    pub(super) fn receive_head(&mut self, bytes: &[u8], from: PeerId) {
        let head = match SignedHead::verify(bytes) {
            Ok(h) => h,
            Err(e) => return warn!("head from {from} rejected: {e}"),
        };
        let owner = head.head().peer;
        let Some(f) = self.followed.get_mut(&owner) else {
            return debug!("head of {owner} (not followed) from {from} ignored");
        };
        let seq = head.head().seq;
        if f.head.as_ref().is_some_and(|h| h.head().seq >= seq) {
            return debug!("head {seq} of {owner} from {from} is not newer; ignored");
        }
        self.head_writer.write(head.clone());
        info!(
            "peer {} is at seq {seq}, root {}",
            f.entry.name,
            head.head().root
        );
        f.head = Some(head.clone());
        self.unsent_heads.insert(owner, head);
        self.send_heads();
    }

    /// Tells the daemon of new heads, as far as its queue has room; the rest (the
    /// newest per peer) wait for the next tick.
    pub(super) fn send_heads(&mut self) {
        let peers: Vec<PeerId> = self.unsent_heads.keys().copied().collect();
        for peer in peers {
            let Some(head) = self.unsent_heads.remove(&peer) else {
                continue;
            };
            match self.events.try_send(NetEvent::Head(head)) {
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full(NetEvent::Head(head))) => {
                    self.unsent_heads.insert(peer, head);
                    return;
                }
                // The daemon is stopping.
                Err(_) => return,
            }
        }
    }

    pub(super) fn head_event(&mut self, event: HeadEvent) {
        let request_response::Event::Message { peer, message, .. } = event else {
            return;
        };
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                let heads = request
                    .peers
                    .iter()
                    .filter_map(|p| PeerId::from_bytes(p).ok())
                    .filter_map(|p| {
                        if p == self.me {
                            self.own_head.clone()
                        } else {
                            self.followed.get(&p).and_then(|f| f.head.clone())
                        }
                    })
                    .map(|h| ByteBuf::from(h.encoded().to_vec()))
                    .collect();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .heads
                    .send_response(channel, HeadResponse { heads });
            }
            request_response::Message::Response { response, .. } => {
                self.seen(peer);
                for h in response.heads.iter().take(MAX_HEADS) {
                    self.receive_head(h, peer);
                }
            }
        }
    }
}
