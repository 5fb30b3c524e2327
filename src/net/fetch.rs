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
mod tests;
