//! The fetch scheduler: which block to ask of whom, and when to give up. A state
//! machine with no swarm inside: the event loop tells it what happened (a block is
//! wanted, a request went out, an answer came, time passed) and carries out what it
//! returns (send these requests, hand these blocks to their waiters, fail these).
//!
//! Every wanted CID is a `Want`. It is asked of the drive's owner first, then of every
//! other connected peer in turn; a peer slow past `HEDGE_AFTER` gets company (the next
//! source is asked too). Wrong bytes, "don't have", a refusal or a failed stream move
//! the want on; "busy" moves it on too, and the busy peer is asked again after
//! `BUSY_BACKOFF`. With no source left, a want waits for new connections until its
//! deadline, then fails. A failure is remembered for `FAILED_MEMORY`, so the kernel's
//! retries fail at once.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::PeerId;

use super::protocol::MAX_WANT;
use crate::block::RAW;
use crate::store::Unavailable;

/// A source that has not answered in this long gets a second one asked beside it.
pub const HEDGE_AFTER: Duration = Duration::from_secs(2);
/// Sources asked for one block at once, at most.
const MAX_IN_FLIGHT: usize = 3;
/// A block that just failed fails again at once for this long, unless a new peer
/// connects: the kernel retries a failed read, and each retry must not wait again.
pub const FAILED_MEMORY: Duration = Duration::from_secs(10);
/// A source that answered "busy" is asked again after this long (others meanwhile).
pub const BUSY_BACKOFF: Duration = Duration::from_millis(300);
/// Prefetches are dropped while this many blocks are wanted: they are hints, and a
/// listing or a reader must not make the node hold unbounded wants.
pub const MAX_WANTS: usize = 4096;
/// Leaves are large: one per request, so several stream in parallel.
const LEAVES_PER_REQUEST: usize = 1;

/// What the event loop is to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<W> {
    /// Ask `peer` for `cids` of `owner`'s drive, then report the request's id to `sent`.
    Request {
        peer: PeerId,
        owner: Option<PeerId>,
        cids: Vec<Cid>,
    },
    /// Block `cid` arrived (verified): hand it to `waiters`, or keep it for its reader
    /// if nobody waits (a prefetch).
    Deliver { cid: Cid, waiters: Vec<W> },
    /// Nobody delivered `cid` of `owner`'s drive; `asked` are the peers tried. A
    /// `repeat` is a failure remembered from a moment ago (the kernel retrying), told
    /// already.
    Fail {
        cid: Cid,
        waiters: Vec<W>,
        why: Unavailable,
        owner: Option<PeerId>,
        asked: Vec<PeerId>,
        repeat: bool,
    },
}

/// A request out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub peer: PeerId,
    /// Whose drive the blocks are of; what arrives is cached as theirs.
    pub owner: Option<PeerId>,
    pub cids: Vec<Cid>,
}

/// What a peer answered to a request, its blocks checked.
#[derive(Debug, Default)]
pub struct Answer {
    /// Blocks that matched their CIDs.
    pub delivered: Vec<Cid>,
    /// Blocks whose bytes did not match.
    pub bad: Vec<Cid>,
    /// CIDs the peer does not have.
    pub missing: Vec<Cid>,
}

struct Want<R, W> {
    owner: Option<PeerId>,
    waiters: Vec<W>,
    /// Peers asked already (or that failed us) for this block.
    tried: HashSet<PeerId>,
    /// Peers that answered "busy", and when they may be asked again.
    busy: HashMap<PeerId, Instant>,
    /// Requests out now, with when each was sent.
    in_flight: Vec<(R, Instant)>,
    refused: bool,
    deadline: Instant,
}

impl<R, W> Want<R, W> {
    /// The next peer to ask: the owner first, then any other connected peer; a peer
    /// that said "busy" not before its backoff is over.
    fn next_source(&self, connected: &[PeerId], now: Instant) -> Option<PeerId> {
        let free =
            |p: &PeerId| !self.tried.contains(p) && self.busy.get(p).is_none_or(|t| *t <= now);
        self.owner
            .filter(|o| connected.contains(o) && free(o))
            .or_else(|| connected.iter().find(|p| free(p)).copied())
    }
}

pub struct Scheduler<R, W> {
    wants: HashMap<Cid, Want<R, W>>,
    requests: HashMap<R, Sent>,
    /// Recent failures, forgotten when a peer connects.
    failed: HashMap<Cid, (Instant, Unavailable)>,
    fetch_timeout: Duration,
}

impl<R: Copy + Eq + Hash, W> Scheduler<R, W> {
    pub fn new(fetch_timeout: Duration) -> Self {
        Scheduler {
            wants: HashMap::new(),
            requests: HashMap::new(),
            failed: HashMap::new(),
            fetch_timeout,
        }
    }

    /// `cid` of `owner`'s drive is wanted, by `waiter` (none: a prefetch). Requests go
    /// out at the next `dispatch`.
    pub fn want(
        &mut self,
        cid: Cid,
        owner: Option<PeerId>,
        waiter: Option<W>,
        now: Instant,
    ) -> Vec<Action<W>> {
        if let Some((when, why)) = self.failed.get(&cid) {
            if now.duration_since(*when) < FAILED_MEMORY {
                let why = *why;
                return waiter
                    .map(|w| Action::Fail {
                        cid,
                        waiters: vec![w],
                        why,
                        owner,
                        asked: Vec::new(),
                        repeat: true,
                    })
                    .into_iter()
                    .collect();
            }
            self.failed.remove(&cid);
        }
        if waiter.is_none() && self.wants.len() >= MAX_WANTS && !self.wants.contains_key(&cid) {
            return Vec::new();
        }
        let deadline = now + self.fetch_timeout;
        let want = self.wants.entry(cid).or_insert_with(|| Want {
            owner,
            waiters: Vec::new(),
            tried: HashSet::new(),
            busy: HashMap::new(),
            in_flight: Vec::new(),
            refused: false,
            deadline,
        });
        if waiter.is_some() {
            want.deadline = want.deadline.max(deadline);
        }
        want.waiters.extend(waiter);
        Vec::new()
    }

    /// A peer connected: what failed may be there now.
    pub fn connected(&mut self) {
        self.failed.clear();
    }

    /// Request `id` carries `sent`.
    pub fn sent(&mut self, id: R, sent: Sent, now: Instant) {
        for cid in &sent.cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.tried.insert(sent.peer);
                w.in_flight.push((id, now));
            }
        }
        self.requests.insert(id, sent);
    }

    /// The request `id` is answered: what it asked (to check the answer against).
    pub fn answered(&mut self, id: R) -> Option<Sent> {
        self.requests.remove(&id)
    }

    /// `peer` refused every block of request `id`.
    pub fn refused(&mut self, id: R, sent: &Sent) {
        for cid in &sent.cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.refused = true;
            }
        }
        self.give_up_on(sent.peer, id, &sent.cids);
    }

    /// `peer` is too busy for request `id`: ask others, and it again a little later.
    pub fn busy(&mut self, id: R, sent: &Sent, now: Instant) {
        for cid in &sent.cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.tried.remove(&sent.peer);
                w.busy.insert(sent.peer, now + BUSY_BACKOFF);
                w.in_flight.retain(|(r, _)| *r != id);
            }
        }
    }

    /// Request `id` failed (a stream error, a timeout).
    pub fn failed(&mut self, id: R) {
        if let Some(sent) = self.requests.remove(&id) {
            self.give_up_on(sent.peer, id, &sent.cids);
        }
    }

    /// The checked answer to request `id`: delivers what came, and asks elsewhere for
    /// what did not (the same peer too, for what did not fit in the answer).
    pub fn settle(&mut self, id: R, sent: &Sent, answer: Answer) -> Vec<Action<W>> {
        let mut out = Vec::new();
        let mut settled = HashSet::new();
        for cid in answer.delivered {
            settled.insert(cid);
            if let Some(w) = self.wants.remove(&cid) {
                out.push(Action::Deliver {
                    cid,
                    waiters: w.waiters,
                });
            }
        }
        self.give_up_on(sent.peer, id, &answer.bad);
        self.give_up_on(sent.peer, id, &answer.missing);
        settled.extend(answer.bad);
        settled.extend(answer.missing);
        for cid in sent.cids.iter().filter(|c| !settled.contains(c)) {
            if let Some(w) = self.wants.get_mut(cid) {
                w.tried.remove(&sent.peer);
                w.in_flight.retain(|(r, _)| *r != id);
            }
        }
        out
    }

    fn give_up_on(&mut self, peer: PeerId, id: R, cids: &[Cid]) {
        for cid in cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.tried.insert(peer);
                w.in_flight.retain(|(r, _)| *r != id);
            }
        }
    }

    /// Requests for every want that has none out, grouped by source and owner.
    pub fn dispatch(&self, connected: &[PeerId], now: Instant) -> Vec<Action<W>> {
        let mut batches: HashMap<(PeerId, Option<PeerId>), Vec<Cid>> = HashMap::new();
        for (cid, want) in &self.wants {
            if !want.in_flight.is_empty() {
                continue;
            }
            if let Some(source) = want.next_source(connected, now) {
                batches.entry((source, want.owner)).or_default().push(*cid);
            }
        }
        requests(batches)
    }

    /// Time passed: fails wants past their deadline or with no source left, gives slow
    /// sources company, and dispatches.
    pub fn tick(&mut self, connected: &[PeerId], now: Instant) -> Vec<Action<W>> {
        let mut out = self.expire(connected, now);
        let mut hedges: HashMap<(PeerId, Option<PeerId>), Vec<Cid>> = HashMap::new();
        for (cid, w) in &self.wants {
            let slow = w
                .in_flight
                .iter()
                .all(|(_, sent)| now.duration_since(*sent) >= HEDGE_AFTER);
            if !w.in_flight.is_empty() && slow && w.in_flight.len() < MAX_IN_FLIGHT {
                if let Some(source) = w.next_source(connected, now) {
                    hedges.entry((source, w.owner)).or_default().push(*cid);
                }
            }
        }
        out.extend(requests(hedges));
        out.extend(self.dispatch(connected, now));
        self.failed
            .retain(|_, (when, _)| now.duration_since(*when) < FAILED_MEMORY);
        out
    }

    fn expire(&mut self, connected: &[PeerId], now: Instant) -> Vec<Action<W>> {
        let expired: Vec<Cid> = self
            .wants
            .iter()
            .filter(|(_, w)| {
                let stranded = w.in_flight.is_empty()
                    && w.busy.is_empty()
                    && w.next_source(connected, now).is_none();
                // With no source left, a prefetch nobody waits for is dropped, and a
                // block every source refused fails at once.
                w.deadline <= now || (stranded && (w.waiters.is_empty() || w.refused))
            })
            .map(|(c, _)| *c)
            .collect();
        let mut out = Vec::new();
        for cid in expired {
            let Some(w) = self.wants.remove(&cid) else {
                continue;
            };
            let why = if w.refused {
                Unavailable::Refused
            } else if connected.iter().all(|p| w.tried.contains(p)) && w.in_flight.is_empty() {
                Unavailable::NoPeer
            } else {
                Unavailable::Timeout
            };
            if !w.waiters.is_empty() {
                self.failed.insert(cid, (now, why));
            }
            let mut asked: Vec<PeerId> = w.tried.into_iter().chain(w.busy.into_keys()).collect();
            asked.sort();
            asked.dedup();
            out.push(Action::Fail {
                cid,
                waiters: w.waiters,
                why,
                owner: w.owner,
                asked,
                repeat: false,
            });
        }
        out
    }

    /// Owners of wants a reader waits for that have no source left: the owner is
    /// unreachable and no connected peer has the block (the DHT may know holders).
    pub fn stranded_owners(&self, connected: &[PeerId], now: Instant) -> HashSet<PeerId> {
        self.wants
            .values()
            .filter(|w| !w.waiters.is_empty() && w.in_flight.is_empty() && w.busy.is_empty())
            .filter(|w| w.next_source(connected, now).is_none())
            .filter_map(|w| w.owner)
            .collect()
    }

    /// Blocks wanted now.
    pub fn wanted(&self) -> usize {
        self.wants.len()
    }
}

/// Requests for batches of CIDs: raw leaves one per request, nodes up to `MAX_WANT`.
fn requests<W>(batches: HashMap<(PeerId, Option<PeerId>), Vec<Cid>>) -> Vec<Action<W>> {
    let mut out = Vec::new();
    for ((peer, owner), cids) in batches {
        let (leaves, nodes): (Vec<Cid>, Vec<Cid>) =
            cids.into_iter().partition(|c| c.codec() == RAW);
        for group in leaves
            .chunks(LEAVES_PER_REQUEST)
            .chain(nodes.chunks(MAX_WANT))
        {
            out.push(Action::Request {
                peer,
                owner,
                cids: group.to_vec(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Block;

    type S = Scheduler<u32, &'static str>;

    fn leaf(i: u8) -> Cid {
        *Block::hash(cid::Version::V1, RAW, vec![i; 8]).cid()
    }

    fn node(i: u8) -> Cid {
        *Block::hash(cid::Version::V1, crate::block::DAG_PB, vec![i; 8]).cid()
    }

    /// Sends every request the actions ask for, with ids from `next_id`; returns them.
    fn send(
        s: &mut S,
        actions: Vec<Action<&'static str>>,
        next_id: &mut u32,
        now: Instant,
    ) -> Vec<(u32, Sent)> {
        let mut out = Vec::new();
        for a in actions {
            if let Action::Request { peer, owner, cids } = a {
                *next_id += 1;
                let sent = Sent { peer, owner, cids };
                s.sent(*next_id, sent.clone(), now);
                out.push((*next_id, sent));
            }
        }
        out
    }

    fn missing(cids: &[Cid]) -> Answer {
        Answer {
            missing: cids.to_vec(),
            ..Answer::default()
        }
    }

    #[test]
    fn the_owner_is_asked_first_then_the_others_in_turn() {
        let t0 = Instant::now();
        let (owner, other) = (PeerId::random(), PeerId::random());
        let connected = [other, owner];
        let mut s = S::new(Duration::from_secs(30));
        let mut id = 0;
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        let out = {
            let acts = s.dispatch(&connected, t0);
            send(&mut s, acts, &mut id, t0)
        };
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.peer, owner);
        assert_eq!(out[0].1.owner, Some(owner), "the request names the owner");
        // The owner lacks it: the other peer is asked.
        let sent = s.answered(out[0].0).unwrap();
        assert!(s.settle(out[0].0, &sent, missing(&[leaf(1)])).is_empty());
        let out = {
            let acts = s.dispatch(&connected, t0);
            send(&mut s, acts, &mut id, t0)
        };
        assert_eq!(out[0].1.peer, other);
        // It delivers: the reader gets it, and nothing more is asked.
        let sent = s.answered(out[0].0).unwrap();
        let done = s.settle(
            out[0].0,
            &sent,
            Answer {
                delivered: vec![leaf(1)],
                ..Answer::default()
            },
        );
        assert_eq!(
            done,
            vec![Action::Deliver {
                cid: leaf(1),
                waiters: vec!["reader"]
            }]
        );
        assert_eq!(s.wanted(), 0);
        assert!(s.dispatch(&connected, t0).is_empty());
    }

    #[test]
    fn each_want_goes_to_its_own_owner_first() {
        let t0 = Instant::now();
        let (x, y, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        // The owners come last: the order peers connected in must not decide.
        let connected = [stranger, y, x];
        let mut s = S::new(Duration::from_secs(30));
        s.want(leaf(1), Some(x), Some("of x"), t0);
        s.want(leaf(2), Some(y), Some("of y"), t0);
        s.want(node(3), Some(x), None, t0);
        let mut asked: Vec<(PeerId, Option<PeerId>, Vec<Cid>)> = s
            .dispatch(&connected, t0)
            .into_iter()
            .filter_map(|a| match a {
                Action::Request { peer, owner, cids } => Some((peer, owner, cids)),
                _ => None,
            })
            .collect();
        asked.sort_by_key(|(_, _, cids)| cids[0].to_bytes());
        let mut expected = vec![
            (x, Some(x), vec![leaf(1)]),
            (y, Some(y), vec![leaf(2)]),
            (x, Some(x), vec![node(3)]),
        ];
        expected.sort_by_key(|(_, _, cids)| cids[0].to_bytes());
        assert_eq!(asked, expected);
    }

    #[test]
    fn wrong_bytes_or_a_failed_stream_move_the_want_on_to_the_next_source() {
        let t0 = Instant::now();
        let (owner, a, b, late) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let connected = [a, owner, b];
        let mut s = S::new(Duration::from_secs(30));
        let mut id = 0;
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        let ask = |s: &mut S, id: &mut u32, connected: &[PeerId]| {
            let acts = s.dispatch(connected, t0);
            send(s, acts, id, t0)
        };
        // The owner sends bytes that do not hash to the CID: not delivered, and the
        // owner is not asked again.
        let out = ask(&mut s, &mut id, &connected);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.peer, owner);
        let sent = s.answered(out[0].0).unwrap();
        let bad = Answer {
            bad: vec![leaf(1)],
            ..Answer::default()
        };
        assert!(s.settle(out[0].0, &sent, bad).is_empty());
        // The next source's stream fails.
        let out = ask(&mut s, &mut id, &connected);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.peer, a);
        s.failed(out[0].0);
        // The last one does not have it.
        let out = ask(&mut s, &mut id, &connected);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.peer, b);
        let sent = s.answered(out[0].0).unwrap();
        assert!(s.settle(out[0].0, &sent, missing(&[leaf(1)])).is_empty());
        // Every source is spent: nothing is asked, and the reader waits for new peers
        // rather than failing before its deadline.
        assert!(ask(&mut s, &mut id, &connected).is_empty());
        assert!(s.tick(&connected, t0).is_empty());
        assert_eq!(s.wanted(), 1);
        // A peer that connects now is asked, and its block reaches the reader.
        let out = ask(&mut s, &mut id, &[a, owner, b, late]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.peer, late);
        assert_eq!(out[0].1.owner, Some(owner), "the drive is still named");
        let sent = s.answered(out[0].0).unwrap();
        let good = Answer {
            delivered: vec![leaf(1)],
            ..Answer::default()
        };
        assert_eq!(
            s.settle(out[0].0, &sent, good),
            vec![Action::Deliver {
                cid: leaf(1),
                waiters: vec!["reader"]
            }]
        );
    }

    #[test]
    fn a_want_every_source_failed_ends_at_its_deadline_naming_them() {
        let t0 = Instant::now();
        let (owner, other) = (PeerId::random(), PeerId::random());
        let connected = [owner, other];
        let mut s = S::new(Duration::from_secs(5));
        let mut id = 0;
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        for _ in 0..2 {
            let acts = s.dispatch(&connected, t0);
            let out = send(&mut s, acts, &mut id, t0);
            assert_eq!(out.len(), 1);
            s.failed(out[0].0);
        }
        assert!(s.tick(&connected, t0 + Duration::from_secs(4)).is_empty());
        let mut asked = vec![owner, other];
        asked.sort();
        assert_eq!(
            s.tick(&connected, t0 + Duration::from_secs(5)),
            vec![Action::Fail {
                cid: leaf(1),
                waiters: vec!["reader"],
                why: Unavailable::NoPeer,
                owner: Some(owner),
                asked,
                repeat: false,
            }]
        );
        assert_eq!(s.wanted(), 0);
    }

    #[test]
    fn hedges_wait_until_every_source_is_slow_and_stop_at_three() {
        let t0 = Instant::now();
        let (owner, a, b, c) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let connected = [owner, a, b, c];
        let mut s = S::new(Duration::from_secs(60));
        let mut id = 0;
        let at = |s: &mut S, id: &mut u32, t: Instant| {
            let acts = s.tick(&connected, t);
            send(s, acts, id, t)
        };
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        let first = at(&mut s, &mut id, t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1.peer, owner);
        let h1 = at(&mut s, &mut id, t0 + HEDGE_AFTER);
        assert_eq!(h1.len(), 1, "the owner is slow: a second source");
        // The second source is not slow yet: no third.
        assert!(at(&mut s, &mut id, t0 + HEDGE_AFTER * 3 / 2).is_empty());
        let h2 = at(&mut s, &mut id, t0 + HEDGE_AFTER * 2);
        assert_eq!(h2.len(), 1, "both slow: a third source");
        // Three asked at once is the most, though a fourth peer is free.
        assert!(at(&mut s, &mut id, t0 + HEDGE_AFTER * 10).is_empty());
        let mut sources = vec![first[0].1.peer, h1[0].1.peer, h2[0].1.peer];
        sources.sort();
        sources.dedup();
        assert_eq!(sources.len(), 3, "each hedge goes to another peer");
        // One of them fails: the free peer takes its place.
        s.failed(first[0].0);
        let h3 = at(&mut s, &mut id, t0 + HEDGE_AFTER * 11);
        assert_eq!(h3.len(), 1);
        assert!(!sources.contains(&h3[0].1.peer));
        assert_eq!(h3[0].1.peer, c);
    }

    #[test]
    fn a_slow_source_gets_company_and_the_first_answer_wins() {
        let t0 = Instant::now();
        let (owner, other) = (PeerId::random(), PeerId::random());
        let connected = [owner, other];
        let mut s = S::new(Duration::from_secs(30));
        let mut id = 0;
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        let first = {
            let acts = s.dispatch(&connected, t0);
            send(&mut s, acts, &mut id, t0)
        };
        // Not yet slow: no hedge.
        let early = t0 + HEDGE_AFTER / 2;
        assert!({
            let acts = s.tick(&connected, early);
            send(&mut s, acts, &mut id, early)
        }
        .is_empty());
        let late = t0 + HEDGE_AFTER;
        let hedge = {
            let acts = s.tick(&connected, late);
            send(&mut s, acts, &mut id, late)
        };
        assert_eq!(hedge.len(), 1);
        assert_eq!(hedge[0].1.peer, other);
        // The hedge answers first; the owner's late answer finds nothing to do.
        let sent = s.answered(hedge[0].0).unwrap();
        let done = s.settle(
            hedge[0].0,
            &sent,
            Answer {
                delivered: vec![leaf(1)],
                ..Answer::default()
            },
        );
        assert_eq!(done.len(), 1);
        let sent = s.answered(first[0].0).unwrap();
        let late_answer = Answer {
            delivered: vec![leaf(1)],
            ..Answer::default()
        };
        assert!(s.settle(first[0].0, &sent, late_answer).is_empty());
    }

    #[test]
    fn a_busy_source_is_passed_over_then_asked_again() {
        let t0 = Instant::now();
        let owner = PeerId::random();
        let connected = [owner];
        let mut s = S::new(Duration::from_secs(30));
        let mut id = 0;
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        let out = {
            let acts = s.dispatch(&connected, t0);
            send(&mut s, acts, &mut id, t0)
        };
        let sent = s.answered(out[0].0).unwrap();
        s.busy(out[0].0, &sent, t0);
        // Busy is not a failure: the want waits (no other source), then asks again.
        assert!(s.tick(&connected, t0).is_empty());
        assert_eq!(s.wanted(), 1);
        assert!(s.stranded_owners(&connected, t0).is_empty());
        let later = t0 + BUSY_BACKOFF;
        let again = {
            let acts = s.tick(&connected, later);
            send(&mut s, acts, &mut id, later)
        };
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.peer, owner);
    }

    #[test]
    fn what_did_not_fit_in_an_answer_is_asked_of_the_same_peer_again() {
        let t0 = Instant::now();
        let owner = PeerId::random();
        let connected = [owner];
        let mut s = S::new(Duration::from_secs(30));
        let mut id = 0;
        s.want(node(1), Some(owner), Some("a"), t0);
        s.want(node(2), Some(owner), Some("b"), t0);
        let acts = s.dispatch(&connected, t0);
        let out = send(&mut s, acts, &mut id, t0);
        assert_eq!(out.len(), 1, "nodes go in one request");
        // Only the first fitted in the answer.
        let sent = s.answered(out[0].0).unwrap();
        let answer = Answer {
            delivered: vec![node(1)],
            ..Answer::default()
        };
        assert_eq!(s.settle(out[0].0, &sent, answer).len(), 1);
        let acts = s.dispatch(&connected, t0);
        let again = send(&mut s, acts, &mut id, t0);
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].1.peer, &again[0].1.cids[..]),
            (owner, &[node(2)][..])
        );
    }

    #[test]
    fn a_busy_source_sends_the_want_to_another_at_once() {
        let t0 = Instant::now();
        let (owner, other) = (PeerId::random(), PeerId::random());
        let connected = [owner, other];
        let mut s = S::new(Duration::from_secs(30));
        let mut id = 0;
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        let out = {
            let acts = s.dispatch(&connected, t0);
            send(&mut s, acts, &mut id, t0)
        };
        let sent = s.answered(out[0].0).unwrap();
        s.busy(out[0].0, &sent, t0);
        let next = {
            let acts = s.dispatch(&connected, t0);
            send(&mut s, acts, &mut id, t0)
        };
        assert_eq!(next[0].1.peer, other);
    }

    #[test]
    fn refusals_fail_at_once_and_failures_are_remembered() {
        let t0 = Instant::now();
        let owner = PeerId::random();
        let connected = [owner];
        let mut s = S::new(Duration::from_secs(30));
        let mut id = 0;
        s.want(leaf(1), Some(owner), Some("first"), t0);
        let out = {
            let acts = s.dispatch(&connected, t0);
            send(&mut s, acts, &mut id, t0)
        };
        let sent = s.answered(out[0].0).unwrap();
        s.refused(out[0].0, &sent);
        let failed = s.tick(&connected, t0);
        assert_eq!(
            failed,
            vec![Action::Fail {
                cid: leaf(1),
                waiters: vec!["first"],
                why: Unavailable::Refused,
                owner: Some(owner),
                asked: vec![owner],
                repeat: false,
            }]
        );
        // The kernel's retry fails at once, until a peer connects.
        let retry = s.want(leaf(1), Some(owner), Some("retry"), t0);
        assert!(matches!(retry[..], [Action::Fail { repeat: true, .. }]));
        s.connected();
        assert!(s.want(leaf(1), Some(owner), Some("after"), t0).is_empty());
    }

    #[test]
    fn a_want_nobody_delivers_times_out_and_a_stranded_prefetch_is_dropped() {
        let t0 = Instant::now();
        let owner = PeerId::random();
        let mut s = S::new(Duration::from_secs(3));
        s.want(leaf(1), Some(owner), Some("reader"), t0);
        s.want(leaf(2), Some(owner), None, t0);
        // Nobody is connected: the prefetch goes, the reader waits for a source.
        let out = s.tick(&[], t0);
        assert_eq!(
            out,
            vec![Action::Fail {
                cid: leaf(2),
                waiters: vec![],
                why: Unavailable::NoPeer,
                owner: Some(owner),
                asked: vec![],
                repeat: false,
            }]
        );
        assert_eq!(s.stranded_owners(&[], t0), HashSet::from([owner]));
        let out = s.tick(&[], t0 + Duration::from_secs(3));
        assert!(matches!(
            out[..],
            [Action::Fail {
                why: Unavailable::NoPeer,
                ..
            }]
        ));
    }

    #[test]
    fn leaves_go_one_per_request_and_nodes_in_batches() {
        let t0 = Instant::now();
        let owner = PeerId::random();
        let mut s = S::new(Duration::from_secs(30));
        for i in 0..3 {
            s.want(leaf(i), Some(owner), None, t0);
            s.want(node(i), Some(owner), None, t0);
        }
        let out = s.dispatch(&[owner], t0);
        let sizes: Vec<usize> = out
            .iter()
            .map(|a| match a {
                Action::Request { cids, .. } => cids.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes.iter().filter(|n| **n == 1).count(), 3);
        assert_eq!(sizes.iter().filter(|n| **n == 3).count(), 1);
    }

    #[test]
    fn prefetches_stop_at_the_cap_and_readers_do_not() {
        let t0 = Instant::now();
        let mut s = S::new(Duration::from_secs(30));
        for i in 0..MAX_WANTS as u32 + 10 {
            let cid = *Block::hash(cid::Version::V1, RAW, i.to_le_bytes().to_vec()).cid();
            s.want(cid, None, None, t0);
        }
        assert_eq!(s.wanted(), MAX_WANTS);
        s.want(leaf(1), None, Some("reader"), t0);
        assert_eq!(s.wanted(), MAX_WANTS + 1);
    }
}
