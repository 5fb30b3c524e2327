//! The loop's side of serving blocks: who may read what (my drive by `readers`, another's
//! by its head's openness), room by `serve::Serving`, answers made off the loop by
//! `serve::answer`.

use std::collections::HashSet;
use std::sync::Arc;

use libp2p::request_response::{InboundRequestId, ResponseChannel};
use libp2p::PeerId;
use tracing::debug;

use super::Node;
use crate::net::protocol::{BlockRequest, BlockResponse, MAX_WANT};
use crate::net::serve::{answer, Offer};
use crate::net::Readers;

/// A block request that passed the access check, and where its answer goes.
pub(super) struct Asked {
    request: BlockRequest,
    channel: ResponseChannel<BlockResponse>,
}

/// How a block request is answered.
enum Verdict {
    Serve,
    Refuse(String),
    /// Another's drive I do not follow: every block is "don't have".
    NotHeld,
}

impl Node {
    /// Whether `peer` may read my drive now (`readers`, against whom I follow now).
    fn may_read(&self, peer: &PeerId) -> bool {
        self.config
            .readers
            .allows(peer, self.followed.contains_key(peer))
    }

    /// Request `id` is answered, or failed: its room goes to the next waiting.
    pub(super) fn served(&mut self, id: InboundRequestId) {
        for (peer, _, asked) in self.serving.finished(id) {
            self.start_answer(peer, asked);
        }
    }

    /// Answers a block request from the store, off the event loop: now, when there is
    /// room; later, when the peer's turn comes; or "busy".
    pub(super) fn serve(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: BlockRequest,
        channel: ResponseChannel<BlockResponse>,
    ) {
        let response = match self.verdict(&peer, &request) {
            Verdict::Serve => match self.serving.offer(peer, id, Asked { request, channel }) {
                Offer::Start(asked) => return self.start_answer(peer, asked),
                Offer::Queued => return,
                Offer::Busy(asked) => {
                    debug!("busy: block request from {peer} turned away");
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .blocks
                        .send_response(asked.channel, BlockResponse::Busy);
                    return;
                }
            },
            Verdict::Refuse(reason) => {
                self.refused(peer, &reason);
                BlockResponse::Refused { reason }
            }
            Verdict::NotHeld => BlockResponse::Blocks {
                blocks: Vec::new(),
                missing: request.want.into_iter().take(MAX_WANT).collect(),
            },
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .blocks
            .send_response(channel, response);
    }

    /// Looks up the blocks of a request that has its room, on the blocking pool.
    fn start_answer(&mut self, peer: PeerId, asked: Asked) {
        let Asked { request, channel } = asked;
        let store = Arc::clone(&self.store);
        let served = self.served.clone();
        let (all, one) = (
            self.config.corrupt_served_blocks,
            self.config.corrupt_served_cid,
        );
        let passable = self.passable_for(peer);
        // Checked when the answer is made, not when the request came: a request that
        // waited its turn gets nothing of mine once its peer is unfollowed.
        let mine = self.may_read(&peer);
        let throttle = Arc::clone(&self.throttle);
        tokio::task::spawn_blocking(move || {
            let corrupt = |cid: &cid::Cid| all || one == Some(*cid);
            let response = answer(store.as_ref(), request, mine, &passable, &corrupt);
            if let BlockResponse::Blocks { blocks, .. } = &response {
                let bytes = blocks.iter().map(|(_, b)| b.len() as u64).sum();
                std::thread::sleep(throttle.wait(bytes, std::time::Instant::now()));
            }
            let _ = served.blocking_send((peer, channel, response));
        });
    }

    /// Whether `peer` gets the blocks it asks for. My own drive follows my `readers`;
    /// another's drive I pass on only when its owner's head says everyone may read it,
    /// or, a drive I mirror, when its owner named `peer` a reader (and then, to a peer
    /// my `readers` leave out, only blocks cached for that drive: see `answer`), and a
    /// drive whose head I do not know I do not hold (as far as anyone may ask).
    fn verdict(&self, peer: &PeerId, request: &BlockRequest) -> Verdict {
        let Some(owner) = request
            .owner
            .as_ref()
            .and_then(|o| PeerId::from_bytes(o).ok())
            .filter(|o| *o != self.me)
        else {
            if self.may_read(peer) {
                return Verdict::Serve;
            }
            let why = match &self.config.readers {
                Readers::Some {
                    following: true, ..
                } => {
                    "this node's drive is open to the peers it follows, and it does not follow you"
                }
                _ => "this node does not list you in `readers`",
            };
            return Verdict::Refuse(why.into());
        };
        match self.followed.get(&owner).and_then(|f| f.head.as_ref()) {
            None => Verdict::NotHeld,
            Some(h) if h.head().open => Verdict::Serve,
            Some(_) if self.passes_on(&owner, peer) => Verdict::Serve,
            Some(_) => Verdict::Refuse(format!(
                "drive {owner} is not open to everyone; ask its owner"
            )),
        }
    }

    /// Whether the owner of a drive I mirror named `peer` one of its readers.
    fn passes_on(&self, owner: &PeerId, peer: &PeerId) -> bool {
        self.pass_on.get(owner).is_some_and(|r| r.contains(peer))
    }

    /// Whose cached blocks `peer` may have: the drives whose newest head says they are
    /// open to everyone, those I mirror whose owner lets `peer` read them, and its own.
    fn passable_for(&self, peer: PeerId) -> HashSet<PeerId> {
        self.followed
            .iter()
            .filter(|(o, f)| {
                f.head.as_ref().is_some_and(|h| h.head().open) || self.passes_on(o, &peer)
            })
            .map(|(p, _)| *p)
            .chain([peer])
            .collect()
    }
}
