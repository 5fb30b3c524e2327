//! Bitswap peers as sources of the fetch scheduler: what the scheduler asks of a peer
//! that speaks Bitswap and not our protocol goes out as want-blocks (with
//! send-DONT_HAVE), one message per peer and dispatch. The blocks and DONT_HAVEs that
//! come back, on streams the peer opens (read by the Bitswap server, kept to what was
//! asked by the client), are gathered per request until each of its CIDs is answered,
//! then checked and settled as our own protocol's answers are: the same rates, round
//! trips, strikes and per-source counts. A request not answered within
//! `REQUEST_TIMEOUT`, whose message could not be sent, or whose peer left, fails as one
//! of ours does; a block another source delivered first is cancelled.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::{PeerId, StreamProtocol};
use tracing::debug;

use super::{Ask, Node, REQUEST_TIMEOUT};
use crate::net::bitswap::{Heard, Version};
use crate::net::fetch::{Sent, Way};
use crate::net::protocol::{BLOCK_PROTOCOL, BLOCK_PROTOCOL_V1};

/// How a peer is asked for blocks, by the protocols its identify lists: ours if it
/// speaks it (a peer that speaks both is asked over ours), else Bitswap; `None`: it
/// speaks neither, and is no source.
pub(super) fn way_of(protocols: &[StreamProtocol]) -> Option<Way> {
    if protocols.contains(&BLOCK_PROTOCOL) || protocols.contains(&BLOCK_PROTOCOL_V1) {
        Some(Way::Ours)
    } else if protocols.contains(&Version::V120.protocol()) {
        Some(Way::Bitswap)
    } else {
        None
    }
}

/// Bitswap requests out, and what has come back for them.
#[derive(Default)]
pub(super) struct Asks {
    next: u64,
    out: HashMap<u64, Out>,
    /// The request each CID asked of each peer belongs to.
    by_cid: HashMap<(PeerId, Cid), u64>,
}

struct Out {
    peer: PeerId,
    at: Instant,
    /// Its CIDs not answered yet.
    left: HashSet<Cid>,
    blocks: Vec<(Cid, Vec<u8>)>,
    missing: Vec<Cid>,
}

/// A request taken out of `Asks`: what came, and what did not.
pub(super) struct Done {
    pub peer: PeerId,
    pub blocks: Vec<(Cid, Vec<u8>)>,
    pub missing: Vec<Cid>,
    /// Never answered (it timed out, failed, or was cancelled).
    pub unanswered: Vec<Cid>,
}

impl Asks {
    /// A request for `cids` goes to `peer`: its id, and the older requests it leaves
    /// with nothing to wait for (answered in full now).
    pub fn start(&mut self, peer: PeerId, cids: &[Cid], now: Instant) -> (u64, Vec<u64>) {
        self.next += 1;
        let id = self.next;
        let mut emptied = Vec::new();
        for cid in cids {
            // The same CID asked of the same peer again belongs to the newest request.
            if let Some(old) = self.by_cid.insert((peer, *cid), id) {
                if let Some(o) = self.out.get_mut(&old) {
                    o.left.remove(cid);
                    if o.left.is_empty() {
                        emptied.push(old);
                    }
                }
            }
        }
        let out = Out {
            peer,
            at: now,
            left: cids.iter().copied().collect(),
            blocks: Vec::new(),
            missing: Vec::new(),
        };
        self.out.insert(id, out);
        emptied.sort_unstable();
        emptied.dedup();
        (id, emptied)
    }

    /// `peer` sent `blocks` and said DONT_HAVE to `dont_have`: the requests that are
    /// answered in full now.
    pub fn heard(
        &mut self,
        peer: PeerId,
        blocks: Vec<(Cid, Vec<u8>)>,
        dont_have: Vec<Cid>,
    ) -> Vec<u64> {
        let mut answered = Vec::new();
        let note = |asks: &mut Asks, cid: &Cid| -> Option<u64> {
            let id = asks.by_cid.remove(&(peer, *cid))?;
            let o = asks.out.get_mut(&id)?;
            o.left.remove(cid).then_some(id)
        };
        for (cid, data) in blocks {
            if let Some(id) = note(self, &cid) {
                if let Some(o) = self.out.get_mut(&id) {
                    o.blocks.push((cid, data));
                    answered.push(id);
                }
            }
        }
        for cid in dont_have {
            if let Some(id) = note(self, &cid) {
                if let Some(o) = self.out.get_mut(&id) {
                    o.missing.push(cid);
                    answered.push(id);
                }
            }
        }
        answered.sort_unstable();
        answered.dedup();
        answered.retain(|id| self.out.get(id).is_some_and(|o| o.left.is_empty()));
        answered
    }

    /// Takes request `id` out, answered or not.
    pub fn take(&mut self, id: u64) -> Option<Done> {
        let o = self.out.remove(&id)?;
        let unanswered: Vec<Cid> = o.left.into_iter().collect();
        for cid in &unanswered {
            if self.by_cid.get(&(o.peer, *cid)) == Some(&id) {
                self.by_cid.remove(&(o.peer, *cid));
            }
        }
        Some(Done {
            peer: o.peer,
            blocks: o.blocks,
            missing: o.missing,
            unanswered,
        })
    }

    /// Requests of `peer`.
    pub fn of_peer(&self, peer: &PeerId) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .out
            .iter()
            .filter(|(_, o)| o.peer == *peer)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The requests of `peer` that asked for `cids`.
    pub fn asking(&self, peer: PeerId, cids: &[Cid]) -> Vec<u64> {
        let mut ids: Vec<u64> = cids
            .iter()
            .filter_map(|c| self.by_cid.get(&(peer, *c)).copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Requests out longer than `limit`.
    pub fn overdue(&self, now: Instant, limit: Duration) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .out
            .iter()
            .filter(|(_, o)| now.saturating_duration_since(o.at) >= limit)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// `cid` arrived from `from`: the other peers asked for it are told to stop, and
    /// it no longer holds up their requests. Returns those peers, and the requests
    /// that are answered in full now.
    pub fn arrived(&mut self, cid: &Cid, from: PeerId) -> (Vec<PeerId>, Vec<u64>) {
        let others: Vec<(PeerId, u64)> = self
            .by_cid
            .iter()
            .filter(|((p, c), _)| c == cid && *p != from)
            .map(|((p, _), id)| (*p, *id))
            .collect();
        let mut peers = Vec::new();
        let mut answered = Vec::new();
        for (peer, id) in others {
            self.by_cid.remove(&(peer, *cid));
            peers.push(peer);
            if let Some(o) = self.out.get_mut(&id) {
                o.left.remove(cid);
                if o.left.is_empty() {
                    answered.push(id);
                }
            }
        }
        (peers, answered)
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }
}

impl Node {
    /// Sends each peer its share of a dispatch's Bitswap requests, `(peer, cids)` each,
    /// in one message; the scheduler is told of each request.
    pub(super) fn ask_bitswap(&mut self, requests: Vec<(PeerId, Vec<Cid>)>, now: Instant) {
        let mut per_peer: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        let mut emptied = Vec::new();
        for (peer, cids) in requests {
            let (id, older) = self.asks.start(peer, &cids, now);
            emptied.extend(older);
            per_peer.entry(peer).or_default().extend(&cids);
            let sent = Sent {
                peer,
                owner: None,
                cids,
            };
            self.fetch.sent(Ask::Bitswap(id), sent, now);
        }
        for (peer, cids) in per_peer {
            self.bitswap.want(peer, cids);
        }
        for id in emptied {
            self.bitswap_answered(id);
        }
    }

    /// What the Bitswap client heard: answers, or a message that could not be sent.
    pub(super) fn bitswap_heard(&mut self, heard: Heard) {
        match heard {
            Heard::Answer {
                peer,
                blocks,
                dont_have,
            } => {
                for id in self.asks.heard(peer, blocks, dont_have) {
                    self.bitswap_answered(id);
                }
            }
            Heard::Unsent { peer, cids } => {
                debug!("bitswap: wants to {peer} not sent");
                for id in self.asks.asking(peer, &cids) {
                    self.bitswap_failed(id);
                }
                self.dispatch();
            }
        }
    }

    /// Request `id` is over: what came is checked and settled; what never came is
    /// cancelled and counted as not there.
    fn bitswap_answered(&mut self, id: u64) {
        let Some(done) = self.asks.take(id) else {
            return;
        };
        let Done {
            peer,
            blocks,
            mut missing,
            unanswered,
        } = done;
        self.bitswap.forget(peer, &unanswered);
        if !unanswered.is_empty() {
            self.bitswap.cancel(peer, unanswered.clone());
        }
        let bytes = blocks.iter().map(|(_, b)| b.len() as u64).sum();
        let Some(sent) = self.fetch.answered(Ask::Bitswap(id), bytes, Instant::now()) else {
            return;
        };
        self.seen(peer);
        // A cancelled CID (another source sent it) is not "missing" here.
        missing.extend(unanswered.into_iter().filter(|c| self.fetch.is_wanted(c)));
        self.check(peer, Ask::Bitswap(id), sent, blocks, missing);
    }

    /// Request `id` failed: its peer backs off, its CIDs are asked elsewhere.
    fn bitswap_failed(&mut self, id: u64) {
        let Some(done) = self.asks.take(id) else {
            return;
        };
        let cids: Vec<Cid> = done.unanswered;
        self.bitswap.forget(done.peer, &cids);
        self.fetch.failed(Ask::Bitswap(id), Instant::now());
    }

    /// Blocks `cids` came from `from`: the Bitswap peers also asked for them are told
    /// to stop sending them.
    pub(super) fn bitswap_arrived(&mut self, cids: &[Cid], from: PeerId) {
        let mut cancels: HashMap<PeerId, Vec<Cid>> = HashMap::new();
        let mut answered = Vec::new();
        for cid in cids {
            let (peers, done) = self.asks.arrived(cid, from);
            for p in peers {
                cancels.entry(p).or_default().push(*cid);
            }
            answered.extend(done);
        }
        for (peer, cids) in cancels {
            self.bitswap.forget(peer, &cids);
            self.bitswap.cancel(peer, cids);
        }
        for id in answered {
            self.bitswap_answered(id);
        }
    }

    /// Time passed: Bitswap requests out past `REQUEST_TIMEOUT` end, with what came
    /// (the rest counted as not there: a peer need not say DONT_HAVE), or fail.
    pub(super) fn bitswap_tick(&mut self, now: Instant) {
        for id in self.asks.overdue(now, REQUEST_TIMEOUT) {
            let partial = self
                .asks
                .out
                .get(&id)
                .is_some_and(|o| !o.blocks.is_empty() || !o.missing.is_empty());
            if partial {
                self.bitswap_answered(id);
            } else {
                if let Some(o) = self.asks.out.get(&id) {
                    debug!("bitswap: {} did not answer in time", o.peer);
                    let (peer, left) = (o.peer, o.left.iter().copied().collect::<Vec<_>>());
                    self.bitswap.cancel(peer, left);
                }
                self.bitswap_failed(id);
            }
        }
    }

    /// `peer` left: its Bitswap requests fail at once (as ours do).
    pub(super) fn bitswap_gone(&mut self, peer: PeerId) {
        let ids = self.asks.of_peer(&peer);
        if ids.is_empty() {
            return;
        }
        for id in ids {
            self.bitswap_failed(id);
        }
        self.bitswap.forget_peer(peer);
        self.dispatch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, RAW};

    fn cid(i: u8) -> Cid {
        *Block::hash(cid::Version::V1, RAW, vec![i; 8]).cid()
    }

    #[test]
    fn a_request_is_answered_once_each_of_its_cids_is() {
        let t0 = Instant::now();
        let (p, q) = (PeerId::random(), PeerId::random());
        let mut a = Asks::default();
        let (id, _) = a.start(p, &[cid(1), cid(2)], t0);
        // From another peer, or not asked: nothing.
        assert!(a.heard(q, vec![(cid(1), vec![1])], vec![]).is_empty());
        assert!(a.heard(p, vec![(cid(3), vec![3])], vec![]).is_empty());
        assert!(a.heard(p, vec![(cid(1), vec![1])], vec![]).is_empty());
        // A block twice counts once.
        assert!(a.heard(p, vec![(cid(1), vec![1])], vec![]).is_empty());
        assert_eq!(a.heard(p, vec![], vec![cid(2)]), vec![id]);
        let done = a.take(id).unwrap();
        assert_eq!(done.blocks.len(), 1);
        assert_eq!(done.missing, vec![cid(2)]);
        assert!(done.unanswered.is_empty());
        assert_eq!(a.len(), 0);
        assert!(a.by_cid.is_empty());
    }

    #[test]
    fn a_block_from_elsewhere_frees_the_other_requests_and_old_ones_time_out() {
        let t0 = Instant::now();
        let (p, q) = (PeerId::random(), PeerId::random());
        let mut a = Asks::default();
        let (first, _) = a.start(p, &[cid(1)], t0);
        let (second, _) = a.start(q, &[cid(1), cid(2)], t0 + Duration::from_secs(5));
        let (peers, answered) = a.arrived(&cid(1), p);
        assert_eq!(peers, vec![q]);
        assert!(answered.is_empty(), "cid(2) is still out");
        assert_eq!(
            a.overdue(t0 + REQUEST_TIMEOUT, REQUEST_TIMEOUT),
            vec![first]
        );
        assert_eq!(a.of_peer(&q), vec![second]);
        let done = a.take(second).unwrap();
        assert_eq!(done.unanswered, vec![cid(2)]);
        assert_eq!(a.asking(p, &[cid(1)]), vec![first]);
    }

    #[test]
    fn the_way_follows_what_a_peer_speaks() {
        let bitswap = Version::V120.protocol();
        assert_eq!(way_of(std::slice::from_ref(&bitswap)), Some(Way::Bitswap));
        assert_eq!(
            way_of(&[bitswap, BLOCK_PROTOCOL]),
            Some(Way::Ours),
            "both: ours"
        );
        assert_eq!(way_of(&[StreamProtocol::new("/ipfs/ping/1.0.0")]), None);
    }

    #[test]
    fn a_cid_asked_again_of_the_same_peer_ends_the_request_it_left_empty() {
        let t0 = Instant::now();
        let p = PeerId::random();
        let mut a = Asks::default();
        let (old, _) = a.start(p, &[cid(1)], t0);
        let (new, emptied) = a.start(p, &[cid(1)], t0);
        assert_eq!(emptied, vec![old], "the old one waits for nothing");
        assert_eq!(a.heard(p, vec![(cid(1), vec![1])], vec![]), vec![new]);
    }
}
