//! The scheduler as time passes: wants past their deadline or with no source left
//! fail, slow requests get company (and a read's overdue last blocks), and the loop
//! learns which wants the DHTs might find holders for.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::PeerId;

use super::round::{Round, Way};
use super::{Action, Scheduler, Want, ENDGAME_BLOCKS, FAILED_MEMORY, MAX_IN_FLIGHT};
use crate::store::Unavailable;

impl<R: Copy + Eq + Hash, W> Scheduler<R, W> {
    /// Time passed: fails wants past their deadline or with no source left, gives slow
    /// sources company (and overdue ones, in a read's endgame), and dispatches.
    pub fn tick(&mut self, connected: &[PeerId], now: Instant) -> Vec<Action<W>> {
        let mut out = self.expire(connected, now);
        self.sources.prune(connected);
        self.ways.retain(|p, _| connected.contains(p));
        let waiting = self.wants.values().any(|w| w.in_flight.is_empty());
        let endgame = !waiting && self.wants.len() <= ENDGAME_BLOCKS;
        let mut round = Round::default();
        let mut hedges: Vec<(&Cid, &Want<R, W>)> = self
            .wants
            .iter()
            .filter(|(_, w)| !w.in_flight.is_empty() && w.in_flight.len() < MAX_IN_FLIGHT)
            .filter(|(_, w)| {
                let slow = w.in_flight.iter().all(|f| now >= f.slow_at);
                let overdue = endgame
                    && !w.waiters.is_empty()
                    && w.in_flight.iter().all(|f| f.due.is_some_and(|d| now >= d));
                slow || overdue
            })
            .collect();
        hedges.sort_by_key(|(_, w)| (w.rank, w.seq));
        for (cid, want) in hedges {
            if let Some(source) = self.source_for(want, cid, &round, connected, now, false) {
                let way = self.way_for(&source, want).unwrap_or(Way::Ours);
                round.assign(source, want.owner, way, *cid);
            }
        }
        self.plan(&mut round, connected, now);
        out.extend(round.into_requests());
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
                    && !self.has_source(w, connected, now);
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
            } else if connected
                .iter()
                .all(|p| w.tried.contains(p) || self.way_for(p, &w).is_none())
                && w.in_flight.is_empty()
            {
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
            .filter(|w| !self.has_source(w, connected, now))
            .filter_map(|w| w.owner)
            .collect()
    }

    /// Blocks of no drive a reader has waited for `after` or more, or that no
    /// connected peer is left to ask for: the IPFS DHT may know who provides them.
    pub fn unowned_waiting(&self, connected: &[PeerId], now: Instant, after: Duration) -> Vec<Cid> {
        self.wants
            .iter()
            .filter(|(_, w)| w.owner.is_none() && !w.waiters.is_empty())
            .filter(|(_, w)| {
                now.saturating_duration_since(w.since) >= after
                    || (w.in_flight.is_empty() && !self.has_source(w, connected, now))
            })
            .map(|(c, _)| *c)
            .collect()
    }
}
