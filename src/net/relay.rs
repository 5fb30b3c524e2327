//! Relaying for others (circuit relay v2, the server side): friends get limits that carry
//! block transfers when hole punching fails, strangers libp2p's small defaults.
//!
//! libp2p's relay takes its circuit limits from the config it was built with, and each
//! connection's handler enforces them for the circuits that connection asks for (the
//! source's). So [`Relay`] keeps one `relay::Behaviour` with the friends' limits, which
//! holds every reservation and circuit, and a second one, built with libp2p's defaults,
//! only to make the handlers of strangers' connections. Friends are the peers I follow
//! and the peers that follow me; they are also let past the reservation and circuit
//! rate limits, which strangers meet as libp2p sets them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::relay;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Followed peers that are friends whatever happens, and followers seen, at most: a
/// stranger cannot grow the set by asking for my head, past this.
const FOLLOWERS_KEPT: usize = 1024;

/// What a friend's circuits through this node may carry (config `relay_circuit_bytes`,
/// `relay_circuit_duration`, `relay_circuits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendLimits {
    /// Bytes one circuit carries before it is closed (both directions together).
    pub circuit_bytes: u64,
    /// How long one circuit lasts.
    pub circuit_duration: Duration,
    /// Circuits through this node at once, friends' and strangers' together.
    pub circuits: usize,
}

impl Default for FriendLimits {
    /// Enough for a drive's worth of reading between two homes: a circuit is
    /// re-opened by the next dial when one ends.
    fn default() -> Self {
        FriendLimits {
            circuit_bytes: 4 << 30,
            circuit_duration: Duration::from_secs(3600),
            circuits: 64,
        }
    }
}

/// The peers that get a friend's limits. Cheap to clone; shared with the rate limiters
/// inside the relay.
#[derive(Clone, Default)]
pub struct Friends(Arc<Mutex<FriendSet>>);

#[derive(Default)]
struct FriendSet {
    followed: HashSet<PeerId>,
    followers: HashSet<PeerId>,
}

impl Friends {
    pub fn contains(&self, peer: &PeerId) -> bool {
        let set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.followed.contains(peer) || set.followers.contains(peer)
    }

    pub fn follow(&self, peer: PeerId) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.followed.insert(peer);
    }

    pub fn unfollow(&self, peer: &PeerId) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.followed.remove(peer);
    }

    /// `peer` follows me (it asked for my head and may read my drive). Its connections
    /// from now on get a friend's limits.
    pub fn follower(&self, peer: PeerId) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if set.followers.len() < FOLLOWERS_KEPT {
            set.followers.insert(peer);
        }
    }
}

/// The relay server: reservations and circuits for others, when switched on.
pub struct Relay {
    /// Every reservation, circuit and count lives here; its handlers carry friends'
    /// limits.
    state: relay::Behaviour,
    /// Only makes handlers, with libp2p's default limits, for strangers' connections;
    /// it sees no event.
    strict: relay::Behaviour,
    friends: Friends,
}

impl Relay {
    pub fn new(me: PeerId, limits: &FriendLimits, friends: Friends) -> Relay {
        let defaults = relay::Config::default();
        let exempt = |limiters: Vec<Box<dyn relay::RateLimiter>>| {
            limiters
                .into_iter()
                .map(|mut inner| {
                    let friends = friends.clone();
                    Box::new(
                        move |peer: PeerId, addr: &Multiaddr, now: std::time::Instant| {
                            friends.contains(&peer) || inner.try_next(peer, addr, now)
                        },
                    ) as Box<dyn relay::RateLimiter>
                })
                .collect()
        };
        let config = relay::Config {
            max_circuits: limits.circuits,
            max_circuit_duration: limits.circuit_duration,
            max_circuit_bytes: limits.circuit_bytes,
            reservation_rate_limiters: exempt(defaults.reservation_rate_limiters),
            circuit_src_rate_limiters: exempt(defaults.circuit_src_rate_limiters),
            ..relay::Config::default()
        };
        let mut state = relay::Behaviour::new(me, config);
        let mut strict = relay::Behaviour::new(me, relay::Config::default());
        // Off until the node decides (config `relay_server`, and AutoNAT for "auto"):
        // libp2p would switch it on for any external address, a LAN one included.
        state.set_status(Some(relay::Status::Disable));
        strict.set_status(Some(relay::Status::Disable));
        Relay {
            state,
            strict,
            friends,
        }
    }

    /// Whether others may use this node as a relay from now on. Circuits up keep going.
    pub fn set_serving(&mut self, on: bool) {
        let status = if on {
            relay::Status::Enable
        } else {
            relay::Status::Disable
        };
        self.state.set_status(Some(status));
        self.strict.set_status(Some(status));
    }

    fn maker(&mut self, peer: &PeerId) -> &mut relay::Behaviour {
        if self.friends.contains(peer) {
            &mut self.state
        } else {
            &mut self.strict
        }
    }
}

impl NetworkBehaviour for Relay {
    type ConnectionHandler = THandler<relay::Behaviour>;
    type ToSwarm = relay::Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.maker(&peer).handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.maker(&peer).handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.state.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        // Both kinds of handler are the same type: the one state hears from all.
        self.state
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.state.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_peers_and_followers_are_friends_until_unfollowed() {
        let friends = Friends::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        friends.follow(a);
        friends.follower(b);
        assert!(friends.contains(&a));
        assert!(friends.contains(&b));
        assert!(!friends.contains(&c));
        friends.unfollow(&a);
        assert!(!friends.contains(&a));
    }

    #[test]
    fn followers_kept_are_bounded() {
        let friends = Friends::default();
        for _ in 0..FOLLOWERS_KEPT + 10 {
            friends.follower(PeerId::random());
        }
        let set = friends.0.lock().unwrap();
        assert_eq!(set.followers.len(), FOLLOWERS_KEPT);
    }
}
