//! What the scheduler knows of each peer as a source of blocks: how fast it sends
//! (bytes per second while it has requests out), how long a request takes at least
//! (its round trip), what it has out now, and whether it is to be left alone for a
//! while (it failed or lied: backoff; it said "busy"; it lacks a drive's blocks).
//! From these: how much a peer may have out at once (its window) and when a block
//! asked of it now should arrive (its expected completion). Kept for connected
//! peers only, and each peer's list of what it lacks is bounded.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::transfers::TransferId;

/// A peer not measured yet is assumed to send this fast, and its round trip this
/// long: fast enough that every new peer gets a block or two to show its figures.
const PRIOR_RATE: f64 = 10e6;
const PRIOR_RTT: Duration = Duration::from_millis(50);
/// A window holds this much of a peer's time: enough that a slower source's one
/// block beats the queue of a faster one (so it is used), and that the pipe stays
/// full across a round trip.
const WINDOW_TIME: Duration = Duration::from_secs(1);
/// A peer's window, in bytes: at first, at least, and at most. The most bounds what
/// one peer can be waited on for; the scheduler's prefetch cap bounds the whole.
const INITIAL_WINDOW: u64 = 8 << 20;
const MIN_WINDOW: u64 = 2 << 20;
const MAX_WINDOW: u64 = 48 << 20;
/// Requests out to one peer at most (the server queues 64 per peer, then says busy).
const MAX_REQUESTS: usize = 48;
/// A peer's rate is its bytes over its busy time, both fading with this time
/// constant: answers come in bursts (a server interleaves several answers, which then
/// end together), and an average of per-burst rates would be ruled by the bursts.
const RATE_MEMORY: f64 = 3.0;
/// A rate is known once this much busy time and this many bytes are counted (small
/// answers measure the round trip, not the rate).
const MEASURED_AFTER: f64 = 0.05;
const MEASURED_BYTES: f64 = 512.0 * 1024.0;
/// A peer that failed or lied is left alone for this long, doubled per strike.
const BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A peer that said it lacks a drive's blocks is asked for that drive's blocks only
/// when nobody else can be, for this long.
const LACKS_MEMORY: Duration = Duration::from_secs(30);
/// What is remembered as lacking, per peer.
const MAX_LACKS: usize = 64;

/// What a peer that lacked a block is taken to lack more of: a drive's blocks (who
/// lacks one of a drive lacks its others, most likely). A block of no drive belongs to
/// any DAG, and an IPFS node may hold one DAG whole and another in part: there, only
/// the blocks of the same transfer, or (outside transfers) of no drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lacking {
    Drive(PeerId),
    Transfer(TransferId),
    NoDrive,
}

impl Lacking {
    pub fn of(owner: Option<PeerId>, transfer: Option<TransferId>) -> Lacking {
        match (owner, transfer) {
            (Some(owner), _) => Lacking::Drive(owner),
            (None, Some(t)) => Lacking::Transfer(t),
            (None, None) => Lacking::NoDrive,
        }
    }
}

/// Guesses of a block's size before it arrives: a leaf is 1 MiB (our chunker's size),
/// a node a few KiB. Most nodes asked for are small files' (a cold `ls -l` asks for
/// every entry's, ~100 bytes each): at 16 KiB a window measured in real bytes held so
/// few of them that a 10,000-entry listing had two or three requests out at a time.
pub const LEAF_GUESS: u64 = 1 << 20;
pub const NODE_GUESS: u64 = 2 << 10;

/// A request as its source's figures see it.
#[derive(Clone, Copy)]
pub struct Request {
    /// Its blocks' guessed size.
    pub guess: u64,
    /// When it went.
    pub at: Instant,
    /// Whether nothing else was out to its peer then.
    pub alone: bool,
}

#[derive(Default)]
struct Source {
    /// Bytes and seconds while it had requests out, fading (`RATE_MEMORY`).
    busy_bytes: f64,
    busy_secs: f64,
    /// The shortest a request took lately.
    rtt: Option<Duration>,
    requests: usize,
    /// The guessed size of what it has out.
    bytes_out: u64,
    /// Since when its busy time is being counted (while it has requests out).
    busy_mark: Option<Instant>,
    strikes: u32,
    backoff_until: Option<Instant>,
    busy_until: Option<Instant>,
    /// What it said it lacks blocks of, and when.
    lacks: HashMap<Lacking, Instant>,
    /// Blocks it delivered, for the log and tests.
    delivered: u64,
}

/// How a peer stands as a source for one drive's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Holds the drive's blocks as far as we know, and is in good standing.
    Good,
    /// Lacks the drive's blocks lately, or is backing off: asked only when no good
    /// source is left.
    LastResort,
}

#[derive(Default)]
pub struct Sources {
    peers: HashMap<PeerId, Source>,
}

impl Source {
    /// Bytes per second while it had requests out; `None` until measured.
    fn measured_rate(&self) -> Option<f64> {
        (self.busy_secs >= MEASURED_AFTER && self.busy_bytes >= MEASURED_BYTES)
            .then(|| self.busy_bytes / self.busy_secs)
    }

    fn rate(&self) -> f64 {
        self.measured_rate().unwrap_or(PRIOR_RATE)
    }

    fn rtt(&self) -> Duration {
        self.rtt.unwrap_or(PRIOR_RTT)
    }

    fn window(&self) -> u64 {
        match self.measured_rate() {
            None => INITIAL_WINDOW,
            Some(r) => ((r * (self.rtt() + WINDOW_TIME).as_secs_f64()) as u64)
                .clamp(MIN_WINDOW, MAX_WINDOW),
        }
    }
}

impl Sources {
    /// A request of about `bytes` went to `peer`; whether it went alone (nothing
    /// else out to that peer: its time is a round trip and its own bytes).
    pub fn sent(&mut self, peer: PeerId, bytes: u64, now: Instant) -> bool {
        let s = self.peers.entry(peer).or_default();
        let alone = s.requests == 0;
        if alone {
            s.busy_mark = Some(now);
        }
        s.requests += 1;
        s.bytes_out += bytes;
        alone
    }

    /// A request to `peer` of about `guess` bytes, sent at `at` (`alone`: see
    /// `sent`), came back with `bytes` of blocks (none: an error, "busy", "don't
    /// have").
    pub fn answered(&mut self, peer: PeerId, request: Request, bytes: u64, now: Instant) {
        let Request { guess, at, alone } = request;
        let Some(s) = self.peers.get_mut(&peer) else {
            return;
        };
        s.requests = s.requests.saturating_sub(1);
        s.bytes_out = s.bytes_out.saturating_sub(guess);
        if let Some(mark) = s.busy_mark {
            let dt = now.saturating_duration_since(mark).as_secs_f64();
            let fade = (-dt / RATE_MEMORY).exp();
            s.busy_bytes = s.busy_bytes * fade + bytes as f64;
            s.busy_secs = s.busy_secs * fade + dt;
            s.busy_mark = (s.requests > 0).then_some(now);
        }
        // The round trip: what a request took less its own bytes' time. Only a request
        // that went alone tells it (others waited behind their peers), and only it
        // may raise it, slowly; any may lower it.
        if bytes > 0 {
            let own = secs(bytes as f64 / s.rate());
            let rtt = now.saturating_duration_since(at).saturating_sub(own);
            s.rtt = Some(match s.rtt {
                Some(r) if rtt >= r && alone => r + (rtt - r) / 8,
                Some(r) if rtt >= r => r,
                _ => rtt,
            });
        }
    }

    /// `peer` delivered `n` good blocks, of `of`: whatever it did before is forgiven.
    pub fn delivered(&mut self, peer: PeerId, of: &HashSet<Lacking>, n: u64) {
        if let Some(s) = self.peers.get_mut(&peer) {
            s.delivered += n;
            s.strikes = 0;
            s.backoff_until = None;
            s.lacks.retain(|what, _| !of.contains(what));
        }
    }

    /// What `peer` did is forgiven (it was asked the wrong way).
    pub fn forgive(&mut self, peer: PeerId) {
        if let Some(s) = self.peers.get_mut(&peer) {
            s.strikes = 0;
            s.backoff_until = None;
            s.lacks.clear();
        }
    }

    /// `peer` failed a request or sent wrong bytes: it is left alone for a while,
    /// longer each time.
    pub fn strike(&mut self, peer: PeerId, now: Instant) {
        let s = self.peers.entry(peer).or_default();
        s.strikes = s.strikes.saturating_add(1);
        let backoff = BACKOFF
            .saturating_mul(1 << s.strikes.min(6).saturating_sub(1))
            .min(MAX_BACKOFF);
        s.backoff_until = Some(now + backoff);
    }

    /// `peer` does not have (or will not give) blocks of `what`.
    pub fn lacks(&mut self, peer: PeerId, what: Lacking, now: Instant) {
        let s = self.peers.entry(peer).or_default();
        if s.lacks.len() >= MAX_LACKS && !s.lacks.contains_key(&what) {
            if let Some(oldest) = s.lacks.iter().min_by_key(|(_, t)| **t).map(|(o, _)| *o) {
                s.lacks.remove(&oldest);
            }
        }
        s.lacks.insert(what, now);
    }

    /// `peer` said "busy": it is asked nothing until `until`.
    pub fn busy(&mut self, peer: PeerId, until: Instant) {
        self.peers.entry(peer).or_default().busy_until = Some(until);
    }

    /// How `peer` stands for a block of `what`; `None`: not to be asked now.
    pub fn standing(&self, peer: &PeerId, what: Lacking, now: Instant) -> Option<Standing> {
        let Some(s) = self.peers.get(peer) else {
            return Some(Standing::Good);
        };
        if s.busy_until.is_some_and(|t| t > now) {
            return None;
        }
        let backing_off = s.backoff_until.is_some_and(|t| t > now);
        let lacking = s
            .lacks
            .get(&what)
            .is_some_and(|t| now.saturating_duration_since(*t) < LACKS_MEMORY);
        Some(if backing_off || lacking {
            Standing::LastResort
        } else {
            Standing::Good
        })
    }

    /// How long a request of `bytes` asked of `peer` now should take, with `extra`
    /// bytes more put ahead of it in this round.
    pub fn expected(&self, peer: &PeerId, extra: u64, bytes: u64) -> Duration {
        let (rtt, rate, out) = self
            .peers
            .get(peer)
            .map_or((PRIOR_RTT, PRIOR_RATE, 0), |s| {
                (s.rtt(), s.rate(), s.bytes_out)
            });
        rtt.saturating_add(secs((out + extra + bytes) as f64 / rate))
    }

    /// Whether `peer` has room for a request of `bytes`, with `extra` bytes in
    /// `extra_requests` more put to it in this round, its window at most `cap`. A peer
    /// with nothing out always has room for one.
    pub fn has_room(
        &self,
        peer: &PeerId,
        extra: u64,
        extra_requests: usize,
        bytes: u64,
        cap: Option<u64>,
    ) -> bool {
        let cap = cap.unwrap_or(u64::MAX);
        let Some(s) = self.peers.get(peer) else {
            return extra == 0 || extra + bytes <= INITIAL_WINDOW.min(cap);
        };
        let (out, requests) = (s.bytes_out + extra, s.requests + extra_requests);
        requests == 0 || (requests < MAX_REQUESTS && out + bytes <= s.window().min(cap))
    }

    /// Whether `peer` has been measured: then its requests are judged by its own
    /// figures.
    pub fn measured(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|s| s.measured_rate().is_some())
    }

    /// Blocks `peer` delivered (while connected).
    pub fn delivered_by(&self, peer: &PeerId) -> u64 {
        self.peers.get(peer).map_or(0, |s| s.delivered)
    }

    /// Forgets peers that left and have nothing out.
    pub fn prune(&mut self, connected: &[PeerId]) {
        self.peers
            .retain(|p, s| s.requests > 0 || connected.contains(p));
    }
}

/// `x` seconds, saturating: rates come from what peers send, and a `Duration` from a
/// float panics out of range.
fn secs(x: f64) -> Duration {
    Duration::try_from_secs_f64(x).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that interleaves 16 answers at 5 MB/s: they end together every 3.4 s.
    #[test]
    fn a_rate_from_bursts_of_answers_is_the_link_rate() {
        let t0 = Instant::now();
        let peer = PeerId::random();
        let mut s = Sources::default();
        let mut now = t0;
        for _ in 0..6 {
            let at = now;
            let requests: Vec<bool> = (0..16).map(|_| s.sent(peer, LEAF_GUESS, at)).collect();
            now = at + Duration::from_secs_f64(16.0 * LEAF_GUESS as f64 / 5e6);
            for (i, alone) in requests.into_iter().enumerate() {
                let request = Request {
                    guess: LEAF_GUESS,
                    at,
                    alone,
                };
                // They end within a few milliseconds of each other.
                let t = now + Duration::from_millis(i as u64);
                s.answered(peer, request, LEAF_GUESS, t);
            }
            now += Duration::from_millis(20);
        }
        let rate = s.peers[&peer].rate();
        assert!((4e6..6e6).contains(&rate), "{rate:.0} B/s, not 5 MB/s");
    }
}
