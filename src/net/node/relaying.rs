//! Reaching and being reached across NAT: reservations kept on relays (config `relays`,
//! and relays among the bootstrap nodes while AutoNAT says this node is private), the
//! relay server switched by config `relay_server` and AutoNAT's verdict, hole punches
//! (DCUtR) logged, each connection's link (direct or relayed) recorded for `peers`, and
//! followed peers that the DHT finds dialled at the addresses it gives, relayed ones
//! included.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{autonat, dcutr, identify, kad, relay, upnp, Multiaddr, PeerId};
use tracing::{debug, info, warn};

use super::swarm::BehaviourEvent;
use super::{Node, REDIAL_MAX, REDIAL_MIN};
use crate::net::nat::{is_relayed, Link, Links, NatConfig, Reachability, RelayServer};
use crate::net::relay::Friends;

/// Relays found among the bootstrap nodes that a private node reserves on, at most.
const AUTO_RELAYS: usize = 2;

/// A relay this node keeps a reservation on, so that others reach it through there.
struct Reservation {
    /// The relay's address, ending in /p2p/RELAY.
    addr: Multiaddr,
    /// The circuit listener while it is up (or being set up).
    listener: Option<ListenerId>,
    next_try: Instant,
    backoff: Duration,
    /// Accepted by the relay, and not lost since.
    accepted: bool,
}

/// What the node knows about NAT traversal.
pub(super) struct Relaying {
    config: NatConfig,
    pub(super) reachability: Reachability,
    pub(super) links: Links,
    pub(super) friends: Friends,
    reservations: HashMap<PeerId, Reservation>,
    /// Bootstrap nodes that said (by identify) they relay, with an address of theirs.
    bootstrap_relays: HashMap<PeerId, Multiaddr>,
}

impl Relaying {
    pub(super) fn new(config: NatConfig, friends: Friends, now: Instant) -> Relaying {
        let mut reservations = HashMap::new();
        for addr in &config.relays {
            match relay_peer(addr) {
                Some(peer) => {
                    reservations.insert(peer, Reservation::new(addr.clone(), now));
                }
                None => warn!("relay address {addr} has no /p2p/ part; skipped"),
            }
        }
        Relaying {
            config,
            reachability: Reachability::Unknown,
            links: Links::default(),
            friends,
            reservations,
            bootstrap_relays: HashMap::new(),
        }
    }
}

impl Reservation {
    fn new(addr: Multiaddr, now: Instant) -> Reservation {
        Reservation {
            addr,
            listener: None,
            next_try: now,
            backoff: REDIAL_MIN,
            accepted: false,
        }
    }
}

/// The peer an address ends with (/p2p/PEER).
fn relay_peer(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// The address a connection reaches its peer at, as far as the link goes: for one that
/// came in through a relay, our own circuit address names the relay.
fn link_of(endpoint: &ConnectedPoint) -> Link {
    match endpoint {
        ConnectedPoint::Dialer { address, .. } => Link::of(address),
        ConnectedPoint::Listener {
            local_addr,
            send_back_addr,
        } if is_relayed(local_addr) || is_relayed(send_back_addr) => {
            let mut link = Link::of(local_addr);
            link.relayed = true;
            link
        }
        ConnectedPoint::Listener { send_back_addr, .. } => Link::of(send_back_addr),
    }
}

impl Node {
    /// Sets the relay server as config `relay_server` says, for the reachability known.
    pub(super) fn apply_relay_server(&mut self) {
        let on = match self.relaying.config.relay_server {
            RelayServer::On => true,
            RelayServer::Off => false,
            RelayServer::Auto => self.relaying.reachability == Reachability::Public,
        };
        self.swarm.behaviour_mut().relay.set_serving(on);
    }

    /// Looks at every swarm event for what NAT traversal needs: each connection's link,
    /// and circuit listeners (reservations) that closed.
    pub(super) fn note_links(&mut self, event: &SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let link = link_of(endpoint);
                self.relaying.links.opened(*peer_id, *connection_id, link);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => self.relaying.links.closed(peer_id, *connection_id),
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.reservation_lost(*listener_id, reason.as_ref().err()),
            _ => {}
        }
    }

    /// Asks for the reservations that are due: new ones, and lost ones after their
    /// backoff.
    pub(super) fn keep_reservations(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .relaying
            .reservations
            .iter()
            .filter(|(_, r)| r.listener.is_none() && r.next_try <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let Some(r) = self.relaying.reservations.get_mut(&peer) else {
                continue;
            };
            r.next_try = now + r.backoff;
            r.backoff = (r.backoff * 2).min(REDIAL_MAX);
            let circuit = r.addr.clone().with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    debug!("asking {peer} for a reservation ({circuit})");
                    if let Some(r) = self.relaying.reservations.get_mut(&peer) {
                        r.listener = Some(id);
                    }
                }
                Err(e) => warn!("cannot listen through relay {circuit}: {e}"),
            }
        }
    }

    fn reservation_lost(&mut self, listener: ListenerId, error: Option<&std::io::Error>) {
        let now = Instant::now();
        for (peer, r) in &mut self.relaying.reservations {
            if r.listener != Some(listener) {
                continue;
            }
            r.listener = None;
            let why = error.map_or_else(|| "closed".to_string(), |e| e.to_string());
            if r.accepted {
                warn!("lost the reservation on relay {peer} ({why}); asking again");
                r.backoff = REDIAL_MIN;
                r.next_try = now;
            } else {
                debug!(
                    "relay {peer} gave no reservation ({why}); asking again in {} s",
                    r.backoff.as_secs()
                );
            }
            r.accepted = false;
        }
    }

    /// `peer` follows me (it subscribed to my head): if it may read my drive, it is a
    /// friend of the relay server's from its next connection on.
    pub(super) fn follower(&mut self, peer: PeerId) {
        let followed = self.followed.contains_key(&peer);
        if self.config.readers.allows(&peer, followed) {
            self.relaying.friends.follower(peer);
        }
    }

    /// A peer said what it is (identify): a bootstrap node that relays is kept in mind
    /// for when this node turns out to be private.
    pub(super) fn offers_relay(&mut self, peer: PeerId, info: &identify::Info) {
        if !info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            return;
        }
        let bootstrap = self
            .config
            .bootstrap
            .iter()
            .find_map(|a| (relay_peer(a) == Some(peer)).then(|| a.clone()));
        let Some(addr) = bootstrap else { return };
        if self.relaying.bootstrap_relays.len() < self.config.bootstrap.len() {
            self.relaying.bootstrap_relays.insert(peer, addr);
        }
        if self.relaying.reachability == Reachability::Private {
            self.reserve_on_bootstrap_relays();
        }
    }

    /// A private node reserves on up to `AUTO_RELAYS` relaying bootstrap nodes, beside
    /// the configured relays.
    fn reserve_on_bootstrap_relays(&mut self) {
        let now = Instant::now();
        let configured = self.relaying.config.relays.len();
        for (peer, addr) in &self.relaying.bootstrap_relays {
            if self.relaying.reservations.len() >= configured + AUTO_RELAYS {
                break;
            }
            self.relaying
                .reservations
                .entry(*peer)
                .or_insert_with(|| Reservation::new(addr.clone(), now));
        }
        self.keep_reservations(now);
    }

    /// The DHT's answer to "where is `key`" (a peer ID): followed peers it names that
    /// are not connected are dialled at the addresses it gives (a relayed one too). If
    /// it did not find the peer looked for, a `peer add` waiting for it hears so.
    pub(super) fn found_closest(&mut self, key: &[u8], peers: Vec<kad::PeerInfo>) {
        let target = PeerId::from_bytes(key).ok();
        let found_target = peers
            .iter()
            .any(|p| Some(p.peer_id) == target && !p.addrs.is_empty());
        if let (Some(target), false) = (target, found_target) {
            if !self.swarm.is_connected(&target) {
                for (reply, report) in self.reach.settle(&target) {
                    let _ = reply.send(report);
                }
            }
        }
        for found in peers {
            let peer = found.peer_id;
            if !self.followed.contains_key(&peer) || self.swarm.is_connected(&peer) {
                continue;
            }
            if found.addrs.is_empty() {
                continue;
            }
            debug!("the DHT says {peer} is at {:?}", found.addrs);
            for addr in &found.addrs {
                self.swarm.add_peer_address(peer, addr.clone());
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(found.addrs)
                .extend_addresses_through_behaviour()
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                self.dial_failed(peer, &e);
            }
        }
    }

    pub(super) fn relaying_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                let reachability = match &new {
                    autonat::NatStatus::Public(_) => Reachability::Public,
                    autonat::NatStatus::Private => Reachability::Private,
                    autonat::NatStatus::Unknown => Reachability::Unknown,
                };
                match &new {
                    autonat::NatStatus::Public(addr) => {
                        info!("reachable from outside at {addr} (AutoNAT)")
                    }
                    _ => info!("reachability: {reachability} (AutoNAT)"),
                }
                self.relaying.reachability = reachability;
                self.apply_relay_server();
                if reachability == Reachability::Private {
                    self.reserve_on_bootstrap_relays();
                }
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if let Some(r) = self.relaying.reservations.get_mut(&relay_peer_id) {
                    r.accepted = true;
                    r.backoff = REDIAL_MIN;
                }
                if !renewal {
                    info!("reachable through relay {relay_peer_id}");
                }
            }
            BehaviourEvent::RelayClient(e) => debug!("relay client: {e:?}"),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => info!("hole punched: direct connection to {remote_peer_id}"),
                Err(e) => debug!("hole punching to {remote_peer_id} failed: {e}"),
            },
            BehaviourEvent::Relay(e) => debug!("relay server: {e:?}"),
            BehaviourEvent::Upnp(upnp::Event::NewExternalAddr { external_addr, .. }) => {
                info!("the router maps {external_addr} to this node (UPnP)")
            }
            BehaviourEvent::Upnp(upnp::Event::GatewayNotFound) => {
                info!("no UPnP router found; upnp = true in config.toml has no effect here")
            }
            BehaviourEvent::Upnp(e) => debug!("upnp: {e:?}"),
            _ => {}
        }
    }
}
