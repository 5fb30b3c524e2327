//! Who gets served what, and when, with no swarm inside: the serving side's bounds as
//! a state machine (`Serving`), and what an admitted request is answered (`answer`:
//! which of the blocks asked for we hold and may pass on to that peer).
//!
//! A block request that passes the access check is served at once if there is room
//! (`MAX_SERVING` at a time, `MAX_SERVING_PER_PEER` of one peer's while others wait), else queued behind
//! its peer's earlier ones (`MAX_QUEUED_PER_PEER`, and `MAX_QUEUED` in all), else
//! answered "busy". Freed room goes to the peers in turn, so a peer that floods us
//! waits behind its own requests while one that asks for a block now and then is
//! served next. A slot is held until the answer has been written out, because an
//! answer waiting for a slow reader holds its megabytes as much as one being made.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use cid::Cid;
use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tracing::warn;

use super::protocol::{BlockRequest, BlockResponse, MAX_BLOCK, MAX_WANT, RESPONSE_BUDGET};
use crate::store::{HeadStore, Holding};

/// Requests served at once. An answer holds at most ~6 MiB (the response budget and
/// one block over it), so serving holds at most ~100 MiB, whoever asks.
pub const MAX_SERVING: usize = 16;
/// Requests of one peer served at once while others wait.
pub const MAX_SERVING_PER_PEER: usize = 4;
/// Requests of one peer waiting for room; more are answered "busy".
pub const MAX_QUEUED_PER_PEER: usize = 64;
/// Requests waiting in all (each a few KiB and a stream): 256 peers' worth of a few.
pub const MAX_QUEUED: usize = 1024;

/// What to do with a request just offered.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Serve it now.
    Start(T),
    /// It waits; `finished` hands it out when there is room.
    Queued,
    /// No room, not even to wait: answer "busy".
    Busy(T),
}

/// The serving side's bookkeeping: requests in service and waiting, by peer.
pub struct Serving<I, T> {
    /// Requests in service, by id: whose.
    active: HashMap<I, PeerId>,
    active_of: HashMap<PeerId, usize>,
    /// Waiting requests per peer, oldest first.
    waiting: HashMap<PeerId, VecDeque<(I, T)>>,
    /// Peers with waiting requests, in the order they get their next turn.
    turns: VecDeque<PeerId>,
    queued: usize,
}

impl<I: Copy + Eq + Hash, T> Default for Serving<I, T> {
    fn default() -> Self {
        Serving {
            active: HashMap::new(),
            active_of: HashMap::new(),
            waiting: HashMap::new(),
            turns: VecDeque::new(),
            queued: 0,
        }
    }
}

impl<I: Copy + Eq + Hash, T> Serving<I, T> {
    /// `peer` asks (request `id`, whose work is `item`).
    pub fn offer(&mut self, peer: PeerId, id: I, item: T) -> Offer<T> {
        let waiting = self.waiting.get(&peer).map_or(0, VecDeque::len);
        if waiting == 0 && self.has_room(&peer) {
            self.start(peer, id);
            return Offer::Start(item);
        }
        if waiting >= MAX_QUEUED_PER_PEER || self.queued >= MAX_QUEUED {
            return Offer::Busy(item);
        }
        let queue = self.waiting.entry(peer).or_default();
        if queue.is_empty() {
            self.turns.push_back(peer);
        }
        queue.push_back((id, item));
        self.queued += 1;
        Offer::Queued
    }

    /// Request `id` is over (answered, or its stream failed): its room goes to the
    /// next waiting requests, returned to be started. A waiting request that failed
    /// is dropped from its queue.
    pub fn finished(&mut self, id: I) -> Vec<(PeerId, I, T)> {
        match self.active.remove(&id) {
            Some(peer) => {
                if let Some(n) = self.active_of.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.active_of.remove(&peer);
                    }
                }
            }
            None => self.drop_waiting(id),
        }
        self.next()
    }

    /// Requests in service.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Room for one more of `peer`'s requests. Past its share only while no other peer
    /// waits: one peer reading alone keeps every slot busy (a sequential reader asks
    /// for many leaves at once), and the next request of anyone else waiting is
    /// started as soon as a slot frees.
    fn has_room(&self, peer: &PeerId) -> bool {
        self.active.len() < MAX_SERVING
            && (self.active_of.get(peer).copied().unwrap_or(0) < MAX_SERVING_PER_PEER
                || self.turns.iter().all(|p| p == peer))
    }

    fn start(&mut self, peer: PeerId, id: I) {
        self.active.insert(id, peer);
        *self.active_of.entry(peer).or_default() += 1;
    }

    /// Hands room out to waiting peers in turn, one request per turn.
    fn next(&mut self) -> Vec<(PeerId, I, T)> {
        let mut out = Vec::new();
        let mut passed = 0;
        while self.active.len() < MAX_SERVING && passed < self.turns.len() {
            let Some(peer) = self.turns.pop_front() else {
                break;
            };
            if !self.has_room(&peer) {
                // Its own requests fill its share: it keeps its place for later.
                self.turns.push_back(peer);
                passed += 1;
                continue;
            }
            passed = 0;
            let Some(queue) = self.waiting.get_mut(&peer) else {
                continue;
            };
            let Some((id, item)) = queue.pop_front() else {
                continue;
            };
            self.queued -= 1;
            if queue.is_empty() {
                self.waiting.remove(&peer);
            } else {
                self.turns.push_back(peer);
            }
            self.start(peer, id);
            out.push((peer, id, item));
        }
        out
    }

    fn drop_waiting(&mut self, id: I) {
        let Some((peer, queue)) = self
            .waiting
            .iter_mut()
            .find(|(_, q)| q.iter().any(|(i, _)| *i == id))
        else {
            return;
        };
        let peer = *peer;
        queue.retain(|(i, _)| *i != id);
        self.queued -= 1;
        if queue.is_empty() {
            self.waiting.remove(&peer);
            self.turns.retain(|p| *p != peer);
        }
    }
}

/// The blocks of `request` we have and may pass on, up to the response budget. Our own
/// blocks (the drive's, pins, imports) only when `mine` (the asker is in `readers`); a
/// block cached for a peer's drive only when that drive is in `passable`, whatever the
/// request says it is asking for.
pub fn answer(
    store: &dyn HeadStore,
    request: BlockRequest,
    mine: bool,
    passable: &HashSet<PeerId>,
    corrupt: &dyn Fn(&Cid) -> bool,
) -> BlockResponse {
    let mut blocks = Vec::new();
    let mut missing = Vec::new();
    let mut bytes = 0usize;
    for raw in request.want.into_iter().take(MAX_WANT) {
        let Ok(cid) = Cid::try_from(raw.as_slice()) else {
            missing.push(raw);
            continue;
        };
        if bytes >= RESPONSE_BUDGET {
            break;
        }
        // A private folder's plaintext goes to nobody: its readers read the sealed form.
        let may_pass = |held: &Holding| match held {
            Holding::Own => mine && !store.private(&cid).unwrap_or(true),
            Holding::Fetched(owner) => owner.is_some_and(|o| passable.contains(&o)),
        };
        match store.get_held(&cid) {
            Ok(Some((data, held))) if data.len() <= MAX_BLOCK && may_pass(&held) => {
                bytes += data.len();
                let mut data = data;
                if corrupt(&cid) {
                    if let Some(b) = data.first_mut() {
                        *b ^= 0xff;
                    }
                }
                blocks.push((raw, ByteBuf::from(data)));
            }
            Ok(_) => missing.push(raw),
            Err(e) => {
                warn!("serving {cid}: {e}");
                missing.push(raw);
            }
        }
    }
    BlockResponse::Blocks { blocks, missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    type S = Serving<u32, u32>;

    fn started(o: Offer<u32>) -> bool {
        matches!(o, Offer::Start(_))
    }

    #[test]
    fn a_peer_alone_gets_every_slot_and_the_next_one_asking_is_served_next() {
        let mut s = S::default();
        let (flood, honest) = (PeerId::random(), PeerId::random());
        let mut id = 0;
        let mut ask = |s: &mut S, p| {
            id += 1;
            (id, s.offer(p, id, id))
        };
        // Alone, a peer keeps every slot busy (a sequential reader asks for many
        // leaves at once); then its requests wait, then are busy.
        let mut flood_ids = Vec::new();
        for _ in 0..MAX_SERVING {
            let (i, o) = ask(&mut s, flood);
            assert!(started(o));
            flood_ids.push(i);
        }
        for _ in 0..MAX_QUEUED_PER_PEER {
            assert_eq!(ask(&mut s, flood).1, Offer::Queued);
        }
        assert!(matches!(ask(&mut s, flood).1, Offer::Busy(_)));
        let (h, o) = ask(&mut s, honest);
        assert_eq!(o, Offer::Queued, "no room: the honest peer waits");
        // The first slot that frees is the honest peer's, though the flooder asked
        // first; after that the flooder, over its share, gets only what nobody else
        // waits for.
        let next = s.finished(flood_ids[0]);
        assert_eq!(
            next.iter().map(|(p, i, _)| (*p, *i)).collect::<Vec<_>>(),
            [(honest, h)]
        );
        let (h2, o) = ask(&mut s, honest);
        assert_eq!(o, Offer::Queued);
        let next = s.finished(flood_ids[1]);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1, h2, "the honest peer's next request goes first");
    }

    #[test]
    fn a_peer_with_others_waiting_gets_its_share_only() {
        let mut s = S::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        for i in 0..MAX_SERVING as u32 {
            assert!(started(s.offer(a, i, i)));
        }
        assert_eq!(s.offer(b, 100, 100), Offer::Queued);
        assert_eq!(s.offer(b, 101, 101), Offer::Queued);
        assert_eq!(s.offer(a, 200, 200), Offer::Queued);
        // b's two start as a's requests end; a gets room again once b waits no more.
        let mut started_ids = Vec::new();
        for i in 0..4 {
            started_ids.extend(s.finished(i).into_iter().map(|(_, id, _)| id));
        }
        assert_eq!(started_ids, [100, 101, 200]);
    }

    #[test]
    fn a_waiting_request_that_fails_leaves_the_queue() {
        let mut s = S::default();
        let p = PeerId::random();
        for i in 0..MAX_SERVING as u32 {
            assert!(started(s.offer(p, i, i)));
        }
        assert_eq!(s.offer(p, 100, 100), Offer::Queued);
        assert_eq!(s.offer(p, 101, 101), Offer::Queued);
        assert!(s.finished(100).is_empty(), "a failed waiter frees no room");
        assert_eq!(s.queued(), 1);
        let next = s.finished(0);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1, 101);
        assert_eq!((s.active(), s.queued()), (MAX_SERVING, 0));
        // Nothing is held for a peer once its requests are over.
        for i in (1..MAX_SERVING as u32).chain([101]) {
            s.finished(i);
        }
        assert_eq!((s.active(), s.queued()), (0, 0));
        assert!(s.active_of.is_empty() && s.waiting.is_empty() && s.turns.is_empty());
    }

    #[test]
    fn the_total_queue_is_bounded() {
        let mut s = S::default();
        let mut id = 0;
        let mut busy = 0;
        for _ in 0..(MAX_QUEUED / MAX_QUEUED_PER_PEER + MAX_SERVING + 8) {
            let p = PeerId::random();
            for _ in 0..(MAX_SERVING_PER_PEER + MAX_QUEUED_PER_PEER) {
                id += 1;
                if matches!(s.offer(p, id, id), Offer::Busy(_)) {
                    busy += 1;
                }
            }
        }
        assert_eq!(s.queued(), MAX_QUEUED);
        assert_eq!(s.active(), MAX_SERVING);
        assert!(busy > 0);
    }
}
