//! Reaching peers behind NAT: the settings (relay server mode, relays to keep a
//! reservation on, UPnP), whether this node is reachable from outside (AutoNAT's
//! verdict), and how each connected peer is reached (direct or relayed, over which
//! transport). State only, no swarm: `node::relaying` carries it out.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::relay::FriendLimits;

/// Whether this node relays for others (config `relay_server`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RelayServer {
    /// When AutoNAT finds this node publicly reachable.
    #[default]
    Auto,
    On,
    Off,
}

impl FromStr for RelayServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RelayServer::Auto),
            "on" => Ok(RelayServer::On),
            "off" => Ok(RelayServer::Off),
            other => Err(format!(
                "relay_server = {other:?}: say \"auto\", \"on\" or \"off\""
            )),
        }
    }
}

/// The NAT-traversal part of the node's settings.
#[derive(Clone, Debug, Default)]
pub struct NatConfig {
    pub relay_server: RelayServer,
    /// Relays to keep a reservation on (multiaddrs ending in /p2p/PEERID).
    pub relays: Vec<Multiaddr>,
    /// What circuits of friends (peers I follow, peers that follow me) may carry.
    pub friend_limits: FriendLimits,
    /// Ask the home router for a port mapping (UPnP IGD).
    pub upnp: bool,
}

/// Whether other nodes can reach this one from outside its network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// AutoNAT has not asked anyone yet, or nobody answered.
    #[default]
    Unknown,
    /// A peer dialled this node back at an address of it.
    Public,
    /// Peers could not dial this node back: it is reached through relays.
    Private,
}

impl Reachability {
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        }
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one connection reaches its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub relayed: bool,
    /// "tcp" or "quic" (for a relayed connection, the one to the relay); `None` for
    /// anything else (a memory transport in tests).
    pub transport: Option<&'static str>,
}

impl Link {
    /// What the connection's remote (or, listening, local) address says: the first
    /// transport named is the first hop's, so a relayed address names the relay's.
    pub fn of(addr: &Multiaddr) -> Link {
        let mut relayed = false;
        let mut transport = None;
        for p in addr.iter() {
            match p {
                Protocol::P2pCircuit => relayed = true,
                Protocol::QuicV1 | Protocol::Quic if transport.is_none() => {
                    transport = Some("quic")
                }
                Protocol::Tcp(_) if transport.is_none() => transport = Some("tcp"),
                _ => {}
            }
        }
        Link { relayed, transport }
    }

    pub fn kind(self) -> &'static str {
        if self.relayed {
            "relayed"
        } else {
            "direct"
        }
    }
}

/// Every open connection's link, per peer (bounded by the connection limits).
#[derive(Default)]
pub struct Links {
    by_peer: HashMap<PeerId, HashMap<ConnectionId, Link>>,
}

impl Links {
    pub fn opened(&mut self, peer: PeerId, id: ConnectionId, link: Link) {
        self.by_peer.entry(peer).or_default().insert(id, link);
    }

    pub fn closed(&mut self, peer: &PeerId, id: ConnectionId) {
        if let Some(links) = self.by_peer.get_mut(peer) {
            links.remove(&id);
            if links.is_empty() {
                self.by_peer.remove(peer);
            }
        }
    }

    /// The best way `peer` is reached now: a direct connection over one that goes
    /// through a relay.
    pub fn best(&self, peer: &PeerId) -> Option<Link> {
        let links = self.by_peer.get(peer)?;
        links
            .values()
            .min_by_key(|l| (l.relayed, l.transport.is_none()))
            .copied()
    }
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_link_says_whether_it_is_relayed_and_its_transport() {
        let tcp = Link::of(&addr("/ip4/10.0.0.2/tcp/4011"));
        assert_eq!((tcp.kind(), tcp.transport), ("direct", Some("tcp")));
        let quic = Link::of(&addr("/ip4/10.0.0.2/udp/4011/quic-v1"));
        assert_eq!((quic.kind(), quic.transport), ("direct", Some("quic")));
        let relay = PeerId::random();
        let relayed = Link::of(&addr(&format!(
            "/ip4/10.0.0.9/udp/4011/quic-v1/p2p/{relay}/p2p-circuit"
        )));
        assert_eq!(
            (relayed.kind(), relayed.transport),
            ("relayed", Some("quic"))
        );
    }

    #[test]
    fn a_direct_connection_wins_over_a_relayed_one_and_closing_it_falls_back() {
        let mut links = Links::default();
        let peer = PeerId::random();
        let relay = PeerId::random();
        let relayed = addr(&format!("/ip4/10.0.0.9/tcp/4011/p2p/{relay}/p2p-circuit"));
        let (one, two) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        links.opened(peer, one, Link::of(&relayed));
        assert_eq!(links.best(&peer).map(Link::kind), Some("relayed"));
        links.opened(peer, two, Link::of(&addr("/ip4/10.0.0.2/udp/1/quic-v1")));
        assert_eq!(links.best(&peer).map(Link::kind), Some("direct"));
        links.closed(&peer, two);
        assert_eq!(links.best(&peer).map(Link::kind), Some("relayed"));
        links.closed(&peer, one);
        assert_eq!(links.best(&peer), None);
        assert!(links.by_peer.is_empty());
    }

    #[test]
    fn relay_server_modes_parse_and_others_are_refused() {
        assert_eq!("auto".parse(), Ok(RelayServer::Auto));
        assert_eq!("on".parse(), Ok(RelayServer::On));
        assert_eq!("off".parse(), Ok(RelayServer::Off));
        assert!("yes".parse::<RelayServer>().is_err());
    }
}
