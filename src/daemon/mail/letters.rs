//! Letters: posting one to a peer (offers, progress, receipts) and reading those peers
//! post to me, each answered at once.

use std::sync::{Arc, Weak};

use cid::Cid;
use libp2p::PeerId;
use tracing::{debug, info};

use super::{lock, now_ms, Mailroom, LETTERS_AT_ONCE, LETTER_TIMEOUT};
use crate::daemon::feed::What;
use crate::net::streams::{serve_streams, Serving};
use crate::share::items::{InState, Incoming, OutState, Outgoing, Receipt};
use crate::share::policy::{valid_name, Sender};
use crate::share::wire::{self, Answer, Body, Letter, OFFER_PROTOCOL};

impl Mailroom {
    /// Sends one signed letter to `peer`, and returns its answer.
    pub(super) async fn post(&self, peer: PeerId, body: Body) -> Result<Answer, String> {
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

    pub(super) async fn offer(&self, peer: PeerId, o: &Outgoing) {
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

    pub(super) async fn send_receipt(&self, peer: PeerId, id: &str, receipt: Receipt) {
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
            shown_root: None,
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
}

/// Reads letters from the streams peers open, `LETTERS_AT_ONCE` at a time.
pub(super) async fn serve_letters(room: Weak<Mailroom>, incoming: libp2p_stream::IncomingStreams) {
    let serving = Serving {
        at_once: LETTERS_AT_ONCE,
        limit: LETTER_TIMEOUT,
        what: "letter",
    };
    serve_streams(incoming, room, serving, |r, peer, mut stream| async move {
        let bytes = wire::read_letter(&mut stream).await?;
        let answer = match Letter::verify(&bytes, peer, r.me) {
            Ok(letter) => tokio::task::spawn_blocking(move || r.letter(peer, letter))
                .await
                .unwrap_or(Answer::Refused {
                    reason: "the recipient failed to read the offer".into(),
                }),
            Err(e) => Answer::Refused {
                reason: e.to_string(),
            },
        };
        wire::answer(&mut stream, &answer).await
    })
    .await
}
