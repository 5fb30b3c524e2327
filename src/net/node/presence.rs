//! The event loop's side of who comes and goes: connections and refusals logged within
//! a budget, dial failures recorded (for `peers`) and logged when they change, the dial
//! `peer add` waits for, and reads that failed.

use std::time::Instant;

use cid::Cid;
use libp2p::swarm::{ConnectionError, DialError};
use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{now_ms, Node, FAILED_READ_LINES, REDIAL_MAX};
use crate::net::reach::{DialFailure, DialReport};
use crate::net::NetEvent;
use crate::store::Unavailable;

impl Node {
    /// How the log names `peer`: by its peer-book name, else its ID.
    fn who(&self, peer: &PeerId) -> String {
        match self.followed.get(peer) {
            Some(f) => format!("peer {}", f.entry.name),
            None => format!("peer {peer} (not followed)"),
        }
    }

    /// `peer`'s first connection is up, at `address`.
    pub(super) fn came(&mut self, peer: PeerId, address: String) {
        let now = Instant::now();
        self.activity.connected(peer, address.clone(), now_ms());
        let again = self.reach.connected(peer, Some(address.clone()), now);
        let followed = self.followed.contains_key(&peer);
        if let Some(left_out) = self.activity.may_log(&peer, followed, now) {
            let again = if again { ", reachable again" } else { "" };
            info!(
                "{} connected ({address}){again}{}",
                self.who(&peer),
                left_out_text(left_out)
            );
        }
        if followed {
            // For `peerfs watch`; dropped if the daemon is behind.
            let _ = self.events.try_send(NetEvent::Connected(peer));
        }
    }

    /// `peer`'s last connection closed.
    pub(super) fn went(&mut self, peer: PeerId, cause: Option<&ConnectionError>) {
        let now = Instant::now();
        let address = self.activity.address(&peer);
        self.activity.left(&peer, now);
        let followed = self.followed.contains_key(&peer);
        if let Some(left_out) = self.activity.may_log(&peer, followed, now) {
            let why = match cause {
                None => "closed".to_string(),
                Some(ConnectionError::KeepAliveTimeout) => "idle".to_string(),
                Some(ConnectionError::IO(e)) => e.to_string(),
            };
            let at = address.map_or_else(String::new, |a| format!("{a}: "));
            info!(
                "{} left ({at}{why}){}",
                self.who(&peer),
                left_out_text(left_out)
            );
        }
        if followed {
            let _ = self.events.try_send(NetEvent::Disconnected(peer));
        }
    }

    /// A dial of `peer` failed: recorded for `peers` and a waiting `peer add`, and
    /// logged if the reason is news.
    pub(super) fn dial_failed(&mut self, peer: PeerId, error: &DialError) {
        let Some(failure) = DialFailure::of(error) else {
            return;
        };
        if !self.followed.contains_key(&peer) {
            return debug!("dialling {peer}: {failure}");
        }
        // No address yet while the DHT has nodes to ask: the lookup under way may find
        // one (a relayed one, behind NAT), so a waiting `peer add` waits for it.
        let settled = failure != DialFailure::NoAddress || !self.dht_has_nodes();
        let (answers, line) =
            self.reach
                .failed(peer, failure.clone(), settled, Instant::now(), now_ms());
        for (reply, report) in answers {
            let _ = reply.send(report);
        }
        match line {
            Some(line) => {
                let before = match line.unlogged {
                    0 => String::new(),
                    n => format!(" ({n} failed dials since the last line)"),
                };
                warn!(
                    "cannot reach {}: {failure}{before}; dialling again with backoff (up to \
                     every {} s)",
                    self.who(&peer),
                    REDIAL_MAX.as_secs()
                );
            }
            None => debug!("cannot reach {}: {failure}", self.who(&peer)),
        }
    }

    fn dht_has_nodes(&mut self) -> bool {
        let kad = &mut self.swarm.behaviour_mut().kad;
        kad.kbuckets().any(|b| b.num_entries() > 0)
    }

    /// `peer add` of followed `peer`: dial it now, and tell `reply` how it went.
    pub(super) fn reach_now(&mut self, peer: PeerId, reply: oneshot::Sender<DialReport>) {
        let now = Instant::now();
        if self.swarm.is_connected(&peer) {
            let addr = self.activity.address(&peer);
            match self.stats.get(&peer).and_then(|s| s.rtt) {
                Some(rtt) => {
                    let _ = reply.send(DialReport::Connected {
                        addr,
                        rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
                    });
                }
                // Connected a moment ago: the first ping gives the RTT.
                None => {
                    self.reach.wait(peer, reply, now);
                    self.reach.connected(peer, addr, now);
                }
            }
            return;
        }
        if !self.followed.contains_key(&peer) {
            let message = "not followed".to_string();
            let _ = reply.send(DialReport::Failed(DialFailure::Other { message }));
            return;
        }
        self.reach.wait(peer, reply, now);
        self.dial_followed(peer, now);
    }

    /// A block request of `peer` was refused.
    pub(super) fn refused(&mut self, peer: PeerId, reason: &str) {
        let now = Instant::now();
        self.activity.refused(&peer, now, now_ms());
        let followed = self.followed.contains_key(&peer);
        if let Some(left_out) = self.activity.may_log(&peer, followed, now) {
            info!(
                "refused blocks to {}: {reason}{}",
                self.who(&peer),
                left_out_text(left_out)
            );
        }
    }

    /// A reader waited for `cid` of `owner`'s drive in vain: it gets EIO. The log
    /// names the block, the drive and whom it was asked of.
    pub(super) fn log_failed_read(
        &mut self,
        cid: Cid,
        why: Unavailable,
        owner: Option<PeerId>,
        asked: &[PeerId],
    ) {
        let Some(left_out) = self
            .failed_reads_log
            .take(FAILED_READ_LINES, Instant::now())
        else {
            return;
        };
        let name = |p: &PeerId| {
            self.followed
                .get(p)
                .map_or_else(|| p.to_string(), |f| f.entry.name.clone())
        };
        let drive = owner.map_or_else(|| "a drive not named".to_string(), |o| name(&o));
        let asked = if asked.is_empty() {
            "no one (no peer was connected)".to_string()
        } else {
            asked.iter().map(name).collect::<Vec<_>>().join(", ")
        };
        warn!(
            "a read of {cid} in {drive}'s drive failed (EIO): {why}; asked {asked}{}",
            left_out_text(left_out)
        );
    }
}

fn left_out_text(n: u32) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} similar lines left out)"),
    }
}
