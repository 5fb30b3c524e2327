//! Who is connected, and who is reading my drive now: per peer, the connection's
//! address and start, and the blocks and bytes served (and requests refused) over the
//! last minute, for `peerfs status`; and a budget that keeps comings and goings from
//! filling the log. Bounded: a peer is kept while connected and for a minute after.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// The window "now" means in `status`: counts are kept in `SLOTS` slots of `SLOT`.
const SLOT: Duration = Duration::from_secs(10);
const SLOTS: usize = 6;
/// A peer that left is still shown this long (what it read in its last minute).
const KEEP_GONE: Duration = Duration::from_secs(60);
/// Peers that left kept at most: strangers come and go, and each costs a little.
const MAX_GONE: usize = 256;
/// Lines about one peer's comings and goings per minute, at most; a peer whose
/// connection flaps gets a count of what was left out instead.
pub const LINES_PER_PEER: u32 = 4;
/// Lines about strangers' comings and goings per minute, at most, whoever they are.
pub const STRANGER_LINES: u32 = 30;

/// One peer in `peerfs status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectedPeer {
    pub id: String,
    /// The peer-book name of a followed peer.
    pub name: Option<String>,
    pub followed: bool,
    /// False: it left within the last minute.
    pub connected: bool,
    /// The connection's remote address.
    pub address: Option<String>,
    /// When it connected, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    pub blocks_served: u64,
    pub bytes_served: u64,
    /// Block requests answered (a request carries up to `MAX_WANT` blocks).
    #[serde(default)]
    pub requests_served: u64,
    pub requests_refused: u64,
    /// Its last block request, ms since the Unix epoch.
    pub last_request_ms: Option<u64>,
}

/// Counts over the last `SLOTS` × `SLOT`.
#[derive(Default, Clone, Copy)]
struct Window {
    /// Per slot: which slot it counts (slots since the start), and its counts.
    slots: [(u64, Counts); SLOTS],
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    blocks: u64,
    bytes: u64,
    requests: u64,
    refused: u64,
}

impl Window {
    fn add(&mut self, slot: u64, add: Counts) {
        let (at, counts) = &mut self.slots[(slot % SLOTS as u64) as usize];
        if *at != slot {
            *at = slot;
            *counts = Counts::default();
        }
        counts.blocks += add.blocks;
        counts.bytes += add.bytes;
        counts.requests += add.requests;
        counts.refused += add.refused;
    }

    fn total(&self, slot: u64) -> Counts {
        let mut sum = Counts::default();
        for (at, c) in &self.slots {
            if *at + SLOTS as u64 > slot && *at <= slot && *c != Counts::default() {
                sum.blocks += c.blocks;
                sum.bytes += c.bytes;
                sum.requests += c.requests;
                sum.refused += c.refused;
            }
        }
        sum
    }
}

/// A budget of log lines per minute.
#[derive(Default)]
pub struct Budget {
    started: Option<Instant>,
    used: u32,
    /// Lines left out since the last one written.
    left_out: u32,
}

impl Budget {
    /// Whether a line may be written now (of `per_minute`); if so, how many were left
    /// out before it.
    pub fn take(&mut self, per_minute: u32, now: Instant) -> Option<u32> {
        if self
            .started
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used >= per_minute {
            self.left_out += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.left_out))
    }
}

struct Seen {
    address: Option<String>,
    since_ms: u64,
    /// When it left; `None` while connected.
    gone: Option<Instant>,
    window: Window,
    last_request_ms: Option<u64>,
    log: Budget,
}

/// Connected peers (and those that left a moment ago), and what they read.
pub struct Activity {
    start: Instant,
    peers: HashMap<PeerId, Seen>,
    /// Lines about strangers, whoever they are.
    strangers_log: Budget,
}

impl Activity {
    pub fn new(now: Instant) -> Activity {
        Activity {
            start: now,
            peers: HashMap::new(),
            strangers_log: Budget::default(),
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        (now.duration_since(self.start).as_secs() / SLOT.as_secs()) + SLOTS as u64
    }

    /// `peer` connected at `address`.
    pub fn connected(&mut self, peer: PeerId, address: String, now_ms: u64) {
        let seen = self.peers.entry(peer).or_insert_with(|| Seen {
            address: None,
            since_ms: now_ms,
            gone: None,
            window: Window::default(),
            last_request_ms: None,
            log: Budget::default(),
        });
        if seen.gone.take().is_some() || seen.address.is_none() {
            seen.since_ms = now_ms;
        }
        seen.address = Some(address);
    }

    /// `peer`'s last connection closed.
    pub fn left(&mut self, peer: &PeerId, now: Instant) {
        if let Some(seen) = self.peers.get_mut(peer) {
            seen.gone = Some(now);
        }
    }

    /// Where `peer` is connected.
    pub fn address(&self, peer: &PeerId) -> Option<String> {
        self.peers
            .get(peer)
            .filter(|s| s.gone.is_none())?
            .address
            .clone()
    }

    /// A request of `peer` was answered with `blocks` blocks of `bytes` in all.
    pub fn served(&mut self, peer: &PeerId, blocks: u64, bytes: u64, now: Instant, now_ms: u64) {
        self.count(
            peer,
            Counts {
                blocks,
                bytes,
                requests: 1,
                refused: 0,
            },
            now,
            now_ms,
        );
    }

    /// A request of `peer` was refused.
    pub fn refused(&mut self, peer: &PeerId, now: Instant, now_ms: u64) {
        self.count(
            peer,
            Counts {
                refused: 1,
                ..Counts::default()
            },
            now,
            now_ms,
        );
    }

    fn count(&mut self, peer: &PeerId, counts: Counts, now: Instant, now_ms: u64) {
        let slot = self.slot(now);
        if let Some(seen) = self.peers.get_mut(peer) {
            seen.window.add(slot, counts);
            seen.last_request_ms = Some(now_ms);
        }
    }

    /// Whether a line about `peer` coming or going may be logged now; if so, how many
    /// such lines were left out before it.
    pub fn may_log(&mut self, peer: &PeerId, followed: bool, now: Instant) -> Option<u32> {
        if !followed && self.strangers_log.take(STRANGER_LINES, now).is_none() {
            return None;
        }
        match self.peers.get_mut(peer) {
            Some(seen) => seen.log.take(LINES_PER_PEER, now),
            None => Some(0),
        }
    }

    /// Forgets peers that left over a minute ago, and the oldest beyond `MAX_GONE`.
    pub fn prune(&mut self, now: Instant) {
        self.peers
            .retain(|_, s| s.gone.is_none_or(|t| now.duration_since(t) < KEEP_GONE));
        let gone = self.peers.values().filter(|s| s.gone.is_some()).count();
        if gone > MAX_GONE {
            let mut by_age: Vec<(Instant, PeerId)> = self
                .peers
                .iter()
                .filter_map(|(p, s)| s.gone.map(|t| (t, *p)))
                .collect();
            by_age.sort();
            for (_, p) in by_age.into_iter().take(gone - MAX_GONE) {
                self.peers.remove(&p);
            }
        }
    }

    /// Every peer kept, with its counts over the last minute; `name` gives followed
    /// peers' names.
    pub fn report(
        &self,
        now: Instant,
        name: impl Fn(&PeerId) -> Option<String>,
    ) -> Vec<ConnectedPeer> {
        let slot = self.slot(now);
        let mut out: Vec<ConnectedPeer> = self
            .peers
            .iter()
            .map(|(peer, s)| {
                let counts = s.window.total(slot);
                let name = name(peer);
                ConnectedPeer {
                    id: peer.to_string(),
                    followed: name.is_some(),
                    name,
                    connected: s.gone.is_none(),
                    address: s.address.clone(),
                    since_ms: Some(s.since_ms),
                    blocks_served: counts.blocks,
                    bytes_served: counts.bytes,
                    requests_served: counts.requests,
                    requests_refused: counts.refused,
                    last_request_ms: s.last_request_ms,
                }
            })
            .collect();
        // Followed peers first, then the busiest readers.
        out.sort_by(|a, b| {
            (b.followed, b.bytes_served, &a.id).cmp(&(a.followed, a.bytes_served, &b.id))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cover_the_last_minute_only() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        let p = PeerId::random();
        a.served(&p, 1, 100, t0, 0);
        assert!(a.report(t0, |_| None).is_empty(), "not connected: not kept");
        a.connected(p, "/ip4/127.0.0.1/tcp/1".into(), 5);
        a.served(&p, 2, 1000, t0, 10);
        a.refused(&p, t0 + Duration::from_secs(30), 40);
        let r = a.report(t0 + Duration::from_secs(30), |_| Some("fran".into()));
        assert_eq!(
            (r[0].blocks_served, r[0].bytes_served, r[0].requests_refused),
            (2, 1000, 1)
        );
        assert_eq!(r[0].last_request_ms, Some(40));
        assert!(r[0].followed && r[0].connected);
        let r = a.report(t0 + Duration::from_secs(65), |_| None);
        assert_eq!((r[0].blocks_served, r[0].requests_refused), (0, 1));
        let r = a.report(t0 + Duration::from_secs(200), |_| None);
        assert_eq!((r[0].blocks_served, r[0].requests_refused), (0, 0));
    }

    #[test]
    fn peers_that_left_are_kept_a_minute_and_bounded() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        for i in 0..(MAX_GONE + 10) {
            let p = PeerId::random();
            a.connected(p, "/ip4/127.0.0.1/tcp/1".into(), 0);
            a.left(&p, t0 + Duration::from_millis(i as u64));
        }
        let stays = PeerId::random();
        a.connected(stays, "/ip4/127.0.0.1/tcp/2".into(), 0);
        a.prune(t0 + Duration::from_secs(1));
        assert_eq!(a.peers.len(), MAX_GONE + 1);
        a.prune(t0 + Duration::from_secs(61));
        assert_eq!(a.peers.len(), 1);
        assert!(a.address(&stays).is_some());
    }

    #[test]
    fn a_flapping_peer_gets_a_few_lines_a_minute_then_a_count() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0);
        let p = PeerId::random();
        a.connected(p, "/ip4/127.0.0.1/tcp/1".into(), 0);
        for _ in 0..LINES_PER_PEER {
            assert_eq!(a.may_log(&p, true, t0), Some(0));
        }
        assert_eq!(a.may_log(&p, true, t0), None);
        assert_eq!(a.may_log(&p, true, t0), None);
        assert_eq!(a.may_log(&p, true, t0 + Duration::from_secs(60)), Some(2));
    }
}
