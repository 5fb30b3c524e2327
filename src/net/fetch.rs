//! The fetch scheduler: which block to ask of whom, and when to give up. A state
//! machine with no swarm inside: the event loop tells it what happened (a block is
//! wanted, a request went out, an answer came, time passed) and carries out what it
//! returns (send these requests, hand these blocks to their waiters, fail these).
//!
//! Every wanted CID is a `Want`. Every connected peer is a source at once (the owner,
//! followers that cached or pinned the drive, mirrors, and for blocks of no drive the
//! peers that speak Bitswap and not our protocol, asked over Bitswap): each want goes, readers' first
//! and then in the order they came, to the source whose answer is expected first from
//! its measured rate, round trip and what it has out (`sources`); a source whose window
//! is full is waited for if it is still the fastest. A block is asked of one source at
//! a time, except when its request is slower than that source's own figures (or than
//! `HEDGE_AFTER`, unmeasured) and at the end of a read (the last few blocks, overdue):
//! then another source is asked too. Wrong bytes, "don't have", a refusal or a failed
//! stream move the want on; a peer that lies or fails backs off, one that lacks a
//! drive's blocks is asked for them only when nobody else can be; "busy" passes a
//! source over for `BUSY_BACKOFF`. With no source left, a want waits for new
//! connections until its deadline, then fails. A failure is remembered for
//! `FAILED_MEMORY`, so the kernel's retries fail at once.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::PeerId;

use crate::store::Unavailable;
use crate::transfers::{Priority, TransferId};
pub use round::Way;
use round::{guess, Round};
use sources::{Lacking, Request, Sources, Standing};

mod expiry;
mod round;
mod sources;

/// A source not measured yet that has not answered in this long gets a second one
/// asked beside it; a measured one gets company by its own figures.
pub const HEDGE_AFTER: Duration = Duration::from_secs(2);
/// A measured source's request is slow past this many times what it should take
/// (its queue included)...
const SLOW_FACTOR: u32 = 2;
/// ...and always past this (a request times out at 10 s).
const MAX_SLOW: Duration = Duration::from_secs(6);
/// ...and never before this (a fast peer's figures jitter by more than they are).
const MIN_HEDGE: Duration = Duration::from_millis(250);
/// A request is overdue no sooner than this.
const MIN_OVERDUE: Duration = Duration::from_millis(50);
/// With this many blocks wanted or fewer, and none waiting for a source, a read is in
/// its endgame: a reader's block overdue at its source is asked of another too.
const ENDGAME_BLOCKS: usize = 4;
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
/// Bytes (guessed) out to one Bitswap peer at most, one block always: a Bitswap peer
/// sends every block it has ready in one message on one stream, and a JavaScript one
/// (Helia; js-libp2p's yamux) writes it in frames as large as the stream's window,
/// which ours grows past the 1 MiB frame our yamux accepts: the connection is closed.
/// A message of at most about 1 MiB never gets there.
const BITSWAP_WINDOW: u64 = 1 << 20;

/// Which transfer (a pin, a delivery) a want is for, and how urgent that is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub transfer: TransferId,
    pub priority: Priority,
}

/// The order wants are served in, lowest first: a reader's own block, then the
/// transfers' by priority (prefetches of no transfer with the normal ones).
fn rank(reader: bool, claim: Option<Claim>) -> u8 {
    match claim {
        None if reader => 0,
        None => 2,
        Some(c) => priority_rank(c.priority),
    }
}

fn priority_rank(p: Priority) -> u8 {
    match p {
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

/// What the event loop is to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<W> {
    /// Ask `peer` for `cids` of `owner`'s drive, `way`, then report the request's id
    /// to `sent`.
    Request {
        peer: PeerId,
        owner: Option<PeerId>,
        cids: Vec<Cid>,
        way: Way,
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

/// One request out for a want.
struct Flight<R> {
    id: R,
    /// When it is slow, and another source is asked beside it.
    slow_at: Instant,
    /// When it is overdue by its source's figures (`None`: not measured).
    due: Option<Instant>,
}

struct Want<R, W> {
    owner: Option<PeerId>,
    waiters: Vec<W>,
    /// Peers asked already (or that failed us) for this block.
    tried: HashSet<PeerId>,
    /// Peers that answered "busy", and when they may be asked again.
    busy: HashMap<PeerId, Instant>,
    in_flight: Vec<Flight<R>>,
    refused: bool,
    deadline: Instant,
    /// When it came, among wants: earlier wants are asked first.
    seq: u64,
    since: Instant,
    /// Wants of a lower rank are asked first (see `rank`).
    rank: u8,
    /// The transfer it is for, if any.
    transfer: Option<TransferId>,
}

/// A request out, as the scheduler keeps it.
struct Out {
    sent: Sent,
    request: Request,
    /// Sent before its peer said what it speaks (over ours, as a guess).
    unidentified: bool,
}

impl<R, W> Want<R, W> {
    /// Whether `peer` may be asked for this block now (by this want's own history).
    fn may_ask(&self, peer: &PeerId, now: Instant) -> bool {
        !self.tried.contains(peer) && self.busy.get(peer).is_none_or(|t| *t <= now)
    }
}

pub struct Scheduler<R, W> {
    wants: HashMap<Cid, Want<R, W>>,
    requests: HashMap<R, Out>,
    /// Recent failures, forgotten when a peer connects.
    failed: HashMap<Cid, (Instant, Unavailable)>,
    /// Each connected peer's figures as a source.
    sources: Sources,
    /// How each identified peer is asked (`None`: it speaks neither protocol, and is
    /// no source); one not identified yet is asked over ours.
    ways: HashMap<PeerId, Option<Way>>,
    fetch_timeout: Duration,
    next_seq: u64,
}

impl<R: Copy + Eq + Hash, W> Scheduler<R, W> {
    pub fn new(fetch_timeout: Duration) -> Self {
        Scheduler {
            wants: HashMap::new(),
            requests: HashMap::new(),
            failed: HashMap::new(),
            sources: Sources::default(),
            ways: HashMap::new(),
            fetch_timeout,
            next_seq: 0,
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
        self.want_for(cid, owner, waiter, None, now)
    }

    /// `want`, for a transfer: its wants are served by its priority.
    pub fn want_for(
        &mut self,
        cid: Cid,
        owner: Option<PeerId>,
        waiter: Option<W>,
        claim: Option<Claim>,
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
        let seq = self.next_seq;
        let rank = rank(waiter.is_some(), claim);
        let want = self.wants.entry(cid).or_insert_with(|| Want {
            owner,
            waiters: Vec::new(),
            tried: HashSet::new(),
            busy: HashMap::new(),
            in_flight: Vec::new(),
            refused: false,
            deadline,
            seq,
            since: now,
            rank,
            transfer: None,
        });
        if want.seq == seq {
            self.next_seq += 1;
        }
        want.rank = want.rank.min(rank);
        if let Some(c) = claim {
            want.transfer.get_or_insert(c.transfer);
        }
        if waiter.is_some() {
            want.deadline = want.deadline.max(deadline);
        }
        want.waiters.extend(waiter);
        Vec::new()
    }

    /// Transfer `transfer` is paused or cancelled: its wants not asked yet, that no
    /// reader waits for, are dropped (what is out may land).
    pub fn forget(&mut self, transfer: TransferId) {
        self.wants.retain(|_, w| {
            w.transfer != Some(transfer) || !w.waiters.is_empty() || !w.in_flight.is_empty()
        });
    }

    /// Transfer `transfer`'s wants are served by `priority` from now on (those a
    /// reader waits for stay first).
    pub fn reprioritize(&mut self, transfer: TransferId, priority: Priority) {
        for w in self.wants.values_mut() {
            if w.transfer == Some(transfer) && w.rank != 0 {
                w.rank = priority_rank(priority);
            }
        }
    }

    /// The transfer `cid` is wanted for, if any.
    pub fn transfer_of(&self, cid: &Cid) -> Option<TransferId> {
        self.wants.get(cid)?.transfer
    }

    /// A peer connected: what failed may be there now.
    pub fn connected(&mut self) {
        self.failed.clear();
    }

    /// `peer` (connected, identified) is asked `way` from now on; `None`: it speaks
    /// neither protocol, and is asked nothing.
    pub fn speaks(&mut self, peer: PeerId, way: Option<Way>) {
        let first = self.ways.insert(peer, way).is_none();
        if !first || way == Some(Way::Ours) {
            return;
        }
        // It was asked over ours before it said what it speaks, and failed: that is
        // forgiven, and what it failed is asked again its own way.
        let out: HashSet<R> = self
            .requests
            .iter()
            .filter(|(_, o)| o.sent.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for w in self.wants.values_mut() {
            if !w.in_flight.iter().any(|f| out.contains(&f.id)) {
                w.tried.remove(&peer);
            }
        }
        self.sources.forgive(peer);
        self.failed.clear();
    }

    /// How `peer` is asked for `want`'s block, if it may be at all: over ours, or over
    /// Bitswap for a block of no drive.
    fn way_for(&self, peer: &PeerId, want: &Want<R, W>) -> Option<Way> {
        match self.ways.get(peer).copied().unwrap_or(Some(Way::Ours))? {
            Way::Bitswap if want.owner.is_some() => None,
            way => Some(way),
        }
    }

    /// Whether `peer` may be asked for `want`'s block now.
    fn may_ask(&self, want: &Want<R, W>, peer: &PeerId, now: Instant) -> bool {
        want.may_ask(peer, now) && self.way_for(peer, want).is_some()
    }

    /// Whether any connected peer is left to ask for `want`'s block, now or after a
    /// "busy".
    fn has_source(&self, want: &Want<R, W>, connected: &[PeerId], now: Instant) -> bool {
        connected.iter().any(|p| self.may_ask(want, p, now))
    }

    /// Request `id` carries `sent`.
    pub fn sent(&mut self, id: R, sent: Sent, now: Instant) {
        let guess = sent.cids.iter().map(guess).sum();
        let measured = self.sources.measured(&sent.peer);
        let takes = self.sources.expected(&sent.peer, 0, guess);
        // Judged by its own figures: a deep queue at a peer is no reason to ask
        // another, a request far slower than its queue is.
        let slow_after = if measured {
            takes.saturating_mul(SLOW_FACTOR).clamp(MIN_HEDGE, MAX_SLOW)
        } else {
            HEDGE_AFTER
        };
        let alone = self.sources.sent(sent.peer, guess, now);
        // Overdue (in the endgame) a little after it was due: answers jitter.
        let due = now + (takes.saturating_mul(3) / 2).clamp(MIN_OVERDUE, MAX_SLOW);
        for cid in &sent.cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.tried.insert(sent.peer);
                w.in_flight.push(Flight {
                    id,
                    slow_at: now + slow_after,
                    due: measured.then_some(due),
                });
            }
        }
        let request = Request {
            guess,
            at: now,
            alone,
        };
        let unidentified = !self.ways.contains_key(&sent.peer);
        let out = Out {
            sent,
            request,
            unidentified,
        };
        self.requests.insert(id, out);
    }

    /// The request `id` is answered, with `bytes` of blocks: what it asked (to check
    /// the answer against).
    pub fn answered(&mut self, id: R, bytes: u64, now: Instant) -> Option<Sent> {
        let out = self.requests.remove(&id)?;
        self.sources
            .answered(out.sent.peer, out.request, bytes, now);
        Some(out.sent)
    }

    /// `peer` refused every block of request `id`.
    pub fn refused(&mut self, id: R, sent: &Sent, now: Instant) {
        for cid in &sent.cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.refused = true;
            }
        }
        for what in self.lacking(sent, &sent.cids) {
            self.sources.lacks(sent.peer, what, now);
        }
        self.give_up_on(sent.peer, id, &sent.cids);
    }

    /// What the blocks `cids` asked of `sent.peer` are of (see `Lacking`).
    fn lacking(&self, sent: &Sent, cids: &[Cid]) -> HashSet<Lacking> {
        cids.iter()
            .map(|cid| {
                let transfer = self.wants.get(cid).and_then(|w| w.transfer);
                Lacking::of(sent.owner, transfer)
            })
            .collect()
    }

    /// `peer` is too busy for request `id`: ask others, and it again a little later.
    pub fn busy(&mut self, id: R, sent: &Sent, now: Instant) {
        self.sources.busy(sent.peer, now + BUSY_BACKOFF);
        for cid in &sent.cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.tried.remove(&sent.peer);
                w.busy.insert(sent.peer, now + BUSY_BACKOFF);
                w.in_flight.retain(|f| f.id != id);
            }
        }
    }

    /// Request `id` failed (a stream error, a timeout): its peer backs off.
    pub fn failed(&mut self, id: R, now: Instant) {
        if let Some(out) = self.requests.remove(&id) {
            let peer = out.sent.peer;
            self.sources.answered(peer, out.request, 0, now);
            // Asked over ours before it said it does not speak it: no fault of its; it
            // is asked again its own way.
            let misasked = self.ways.get(&peer).is_some_and(|w| *w != Some(Way::Ours));
            if out.unidentified && misasked {
                for cid in &out.sent.cids {
                    if let Some(w) = self.wants.get_mut(cid) {
                        w.tried.remove(&peer);
                        w.in_flight.retain(|f| f.id != id);
                    }
                }
                return;
            }
            self.sources.strike(peer, now);
            self.give_up_on(peer, id, &out.sent.cids);
        }
    }

    /// The checked answer to request `id`: delivers what came, and asks elsewhere for
    /// what did not (the same peer too, for what did not fit in the answer). A peer
    /// that sent wrong bytes backs off; one that lacks blocks is asked last for more of
    /// what they are of (`Lacking`).
    pub fn settle(&mut self, id: R, sent: &Sent, answer: Answer, now: Instant) -> Vec<Action<W>> {
        let mut out = Vec::new();
        let mut settled = HashSet::new();
        if !answer.delivered.is_empty() {
            let of = self.lacking(sent, &answer.delivered);
            self.sources
                .delivered(sent.peer, &of, answer.delivered.len() as u64);
        }
        if !answer.bad.is_empty() {
            self.sources.strike(sent.peer, now);
        } else {
            for what in self.lacking(sent, &answer.missing) {
                self.sources.lacks(sent.peer, what, now);
            }
        }
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
                w.in_flight.retain(|f| f.id != id);
            }
        }
        out
    }

    fn give_up_on(&mut self, peer: PeerId, id: R, cids: &[Cid]) {
        for cid in cids {
            if let Some(w) = self.wants.get_mut(cid) {
                w.tried.insert(peer);
                w.in_flight.retain(|f| f.id != id);
            }
        }
    }

    /// The source for `want`'s block: of the peers it may ask, those in good standing
    /// if any, the one whose answer is expected first (the owner on a tie). With
    /// `wait_for_best`, none if that one has no room (it is waited for); without, the
    /// first with room.
    fn source_for(
        &self,
        want: &Want<R, W>,
        cid: &Cid,
        round: &Round,
        connected: &[PeerId],
        now: Instant,
        wait_for_best: bool,
    ) -> Option<PeerId> {
        let guess = guess(cid);
        let mut candidates: Vec<(Standing, Duration, bool, PeerId)> = connected
            .iter()
            .filter(|p| self.may_ask(want, p, now))
            .filter_map(|p| {
                let lacking = Lacking::of(want.owner, want.transfer);
                let standing = self.sources.standing(p, lacking, now)?;
                let (extra, _) = round.added(p);
                let takes = self.sources.expected(p, extra, guess);
                Some((standing, takes, want.owner != Some(*p), *p))
            })
            .collect();
        candidates.sort();
        let best = candidates.first()?.0;
        let room = |p: &PeerId| {
            let (extra, requests) = round.added(p);
            let cap = match self.way_for(p, want) {
                Some(Way::Bitswap) => Some(BITSWAP_WINDOW),
                _ => None,
            };
            self.sources.has_room(p, extra, requests, guess, cap)
        };
        let mut good = candidates.iter().filter(|c| c.0 == best);
        if wait_for_best {
            good.next().map(|c| c.3).filter(room)
        } else {
            good.map(|c| c.3).find(room)
        }
    }

    /// Requests for every want that has none out, as sources have room.
    pub fn dispatch(&self, connected: &[PeerId], now: Instant) -> Vec<Action<W>> {
        let mut round = Round::default();
        self.plan(&mut round, connected, now);
        round.into_requests()
    }

    fn plan(&self, round: &mut Round, connected: &[PeerId], now: Instant) {
        let mut waiting: Vec<(&Cid, &Want<R, W>)> = self
            .wants
            .iter()
            .filter(|(_, w)| w.in_flight.is_empty())
            .collect();
        // Readers' blocks first, then transfers' by priority, each in the order they
        // were wanted (a sequential reader's next block before the one after).
        waiting.sort_by_key(|(_, w)| (w.rank, w.seq));
        for (cid, want) in waiting {
            if let Some(source) = self.source_for(want, cid, round, connected, now, true) {
                let way = self.way_for(&source, want).unwrap_or(Way::Ours);
                round.assign(source, want.owner, way, *cid);
            }
        }
    }

    /// Whether `cid` is wanted now.
    pub fn is_wanted(&self, cid: &Cid) -> bool {
        self.wants.contains_key(cid)
    }

    /// Blocks wanted now.
    pub fn wanted(&self) -> usize {
        self.wants.len()
    }

    /// Blocks `peer` delivered while connected.
    pub fn delivered_by(&self, peer: &PeerId) -> u64 {
        self.sources.delivered_by(peer)
    }
}

#[cfg(test)]
mod tests;
