//! Following: the peers whose drives I show, kept dialled (with backoff) and
//! subscribed to, and announced in the DHT as holders of their blocks.

use std::time::{Duration, Instant};

use libp2p::kad;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::PeerId;
use tracing::warn;

use super::heads::{head_key, head_topic};
use super::{Node, REDIAL_MAX, REDIAL_MIN};
use crate::head::SignedHead;
use crate::net::peerbook::PeerEntry;
use crate::net::PeerInfo;

/// What we know of a followed peer.
pub(super) struct Followed {
    pub(super) entry: PeerEntry,
    pub(super) head: Option<SignedHead>,
    pub(super) next_dial: Instant,
    pub(super) backoff: Duration,
}

/// The DHT key under which the holders of `owner`'s blocks (its followers, who cache
/// and pin them) announce themselves as providers.
pub(super) fn holders_key(owner: &PeerId) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/peerfs/holders/{owner}"))
}

impl Node {
    /// Follows `entry`, whose newest stored head (read by the caller, off this loop)
    /// is `stored`.
    pub(super) fn follow(&mut self, entry: PeerEntry, stored: Option<SignedHead>) {
        let Some(peer) = entry.peer_id() else { return };
        self.relaying.friends.follow(peer);
        let behaviour = self.swarm.behaviour_mut();
        let _ = behaviour.gossipsub.subscribe(&head_topic(&peer));
        // Protected: let in past the connection limit, and not counted in it.
        behaviour.limits.bypass_peer_id(&peer);
        for addr in entry.multiaddrs() {
            self.swarm.add_peer_address(peer, addr.clone());
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
        // A follower caches (and may pin) the drive's blocks: others that cannot reach
        // the owner find it through the DHT.
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(holders_key(&peer))
        {
            warn!("cannot announce myself as a holder of {peer}'s blocks: {e}");
        }
        let head = self.followed.remove(&peer).and_then(|f| f.head).or(stored);
        self.followed.insert(
            peer,
            Followed {
                entry,
                head,
                next_dial: Instant::now(),
                backoff: REDIAL_MIN,
            },
        );
        if self.swarm.is_connected(&peer) {
            self.ask_heads(peer);
        }
    }

    /// Stops following `peer`: its topic, its holder record and its protection go, and
    /// what was kept of it unless it is still connected.
    pub(super) fn unfollow(&mut self, peer: PeerId) {
        self.unsent_heads.remove(&peer);
        self.reach.forget(&peer);
        if !self.swarm.is_connected(&peer) {
            self.stats.remove(&peer);
        }
        self.relaying.friends.unfollow(&peer);
        if self.followed.remove(&peer).is_some() {
            let behaviour = self.swarm.behaviour_mut();
            let _ = behaviour.gossipsub.unsubscribe(&head_topic(&peer));
            behaviour.kad.stop_providing(&holders_key(&peer));
            behaviour.limits.remove_peer_id(&peer);
        }
    }

    /// Dials followed peers that are not connected, backing off per peer.
    pub(super) fn redial(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .followed
            .iter()
            .filter(|(p, f)| !self.swarm.is_connected(p) && f.next_dial <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.dial_followed(peer, now);
        }
    }

    /// Dials followed `peer` at its known addresses and those the behaviours know,
    /// and asks the DHT where it is now (the known addresses may be stale). The next
    /// redial waits out its backoff.
    pub(super) fn dial_followed(&mut self, peer: PeerId, now: Instant) {
        let Some(f) = self.followed.get_mut(&peer) else {
            return;
        };
        f.next_dial = now + f.backoff;
        f.backoff = (f.backoff * 2).min(REDIAL_MAX);
        let opts = DialOpts::peer_id(peer)
            .addresses(f.entry.multiaddrs())
            .extend_addresses_through_behaviour()
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            self.dial_failed(peer, &e);
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        kad.get_closest_peers(peer);
        kad.get_record(head_key(&peer));
    }

    pub(super) fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .followed
            .iter()
            .map(|(peer, f)| {
                let stats = self.stats.get(peer);
                let connected = self.swarm.is_connected(peer);
                let failure = self.reach.last_failure(peer).filter(|_| !connected);
                let link = self.relaying.links.best(peer);
                PeerInfo {
                    name: f.entry.name.clone(),
                    id: peer.to_string(),
                    connected,
                    addrs: f.entry.addrs.clone(),
                    rtt_ms: stats
                        .and_then(|s| s.rtt)
                        .filter(|_| connected)
                        .map(|d| d.as_secs_f64() * 1000.0),
                    last_dial_error: failure.map(|(e, _)| e.to_string()),
                    last_dial_error_ms: failure.map(|(_, at)| *at),
                    head_seq: f.head.as_ref().map(|h| h.head().seq),
                    head_root: f.head.as_ref().map(|h| h.head().root.to_string()),
                    last_seen_ms: stats.and_then(|s| s.last_seen_ms),
                    bad_blocks: stats.map_or(0, |s| s.bad_blocks),
                    blocks_fetched: stats.map_or(0, |s| s.blocks_fetched),
                    connection: link.map(|l| l.kind().to_string()),
                    transport: link.and_then(|l| l.transport).map(str::to_string),
                    mirrors: Vec::new(),
                    // Profiles and capabilities are the daemon's to fill in.
                    ..PeerInfo::default()
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
