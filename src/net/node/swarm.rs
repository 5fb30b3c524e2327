//! The swarm: the behaviours composed into one, the transports and listeners, and the
//! routing of swarm events to the parts of the node that handle them.

use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, connection_limits, dcutr, identify, mdns, noise, ping, relay, tcp, upnp, yamux,
    Multiaddr, Swarm,
};
use libp2p_identity::Keypair;
use tracing::{debug, info, warn};

use super::heads::head_topic;
use super::{Node, KAD_PROTOCOL, REDIAL_MIN, REQUEST_TIMEOUT};
use crate::net::ipfs_dht::Dht;
use crate::net::protocol::{
    BlockCodec, BlockRequest, BlockResponse, Codec, HeadMessages, BLOCK_PROTOCOL,
    BLOCK_PROTOCOL_V1, HEAD_PROTOCOL,
};
use crate::net::relay::{Friends, Relay};
use crate::net::{NetConfig, NetError};

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) limits: connection_limits::Behaviour,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) kad: kad::Behaviour<MemoryStore>,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) gossipsub: gossipsub::Behaviour,
    pub(super) blocks: request_response::Behaviour<BlockCodec>,
    pub(super) heads: request_response::Behaviour<Codec<HeadMessages>>,
    // NAT traversal (`relaying`): a relay client everywhere, hole punching, AutoNAT,
    // relaying for others, UPnP when asked.
    pub(super) relay_client: relay::client::Behaviour,
    pub(super) dcutr: dcutr::Behaviour,
    pub(super) autonat: autonat::Behaviour,
    pub(super) relay: Relay,
    pub(super) upnp: Toggle<upnp::tokio::Behaviour>,
    /// Streams of protocols served off the event loop (Bitswap).
    pub(super) streams: libp2p_stream::Behaviour,
    /// The IPFS DHTs, public and LAN, with `ipfs_dht` (`ipfs_routing`).
    pub(super) ipfs_kad: Toggle<kad::Behaviour<MemoryStore>>,
    pub(super) ipfs_lan_kad: Toggle<kad::Behaviour<MemoryStore>>,
}

/// Why `addr`'s fixed TCP or UDP port cannot be ours: someone holds it (a plain bind,
/// without port sharing, fails).
pub(super) fn port_taken(addr: &Multiaddr) -> Option<std::io::Error> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) if port != 0 => {
                return std::net::TcpListener::bind((ip?, port)).err();
            }
            Protocol::Udp(port) if port != 0 => {
                return std::net::UdpSocket::bind((ip?, port)).err();
            }
            _ => {}
        }
    }
    None
}

/// `addr` with its TCP or UDP port made 0 (any free one); `None` if it names none.
pub(super) fn any_port(addr: &Multiaddr) -> Option<Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let mut changed = false;
    let any = addr
        .iter()
        .map(|p| match p {
            Protocol::Tcp(port) if port != 0 => {
                changed = true;
                Protocol::Tcp(0)
            }
            Protocol::Udp(port) if port != 0 => {
                changed = true;
                Protocol::Udp(0)
            }
            p => p,
        })
        .collect();
    changed.then_some(any)
}

pub(super) fn build_swarm(
    keypair: &Keypair,
    config: &NetConfig,
    friends: Friends,
) -> Result<Swarm<Behaviour>, NetError> {
    let mdns_on = config.mdns;
    let nat = config.nat.clone();
    let max_connections = config.max_connections;
    let (ipfs_dht, dht_server) = (config.ipfs_dht, config.dht_server);
    let kad_mode = if config.dht_server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    };
    let start_err = |e: &dyn std::fmt::Display| NetError::Start(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| start_err(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| start_err(&e))?
        .with_behaviour(|key, relay_client| {
            let me = key.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(64))
                .with_max_established(Some(max_connections))
                .with_max_established_per_peer(Some(4));
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size(64 * 1024)
                .build()?;
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_record_ttl(Some(Duration::from_secs(7 * 24 * 3600)));
            let mut kad = kad::Behaviour::with_config(me, MemoryStore::new(me), kad_config);
            kad.set_mode(Some(kad_mode));
            let rr_config = request_response::Config::default()
                .with_request_timeout(REQUEST_TIMEOUT)
                .with_max_concurrent_streams(256);
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), me)?)
            } else {
                None
            };
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                // Pushed again when my addresses change: a relayed address must reach
                // the relay's DHT before a peer looks for me there.
                identify: identify::Behaviour::new(
                    identify::Config::new("/peerfs/1.0.0".into(), key.public())
                        .with_push_listen_addr_updates(true),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                kad,
                mdns: Toggle::from(mdns),
                gossipsub: gossipsub::Behaviour::new(
                    MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?,
                blocks: request_response::Behaviour::new(
                    [
                        (BLOCK_PROTOCOL, ProtocolSupport::Full),
                        (BLOCK_PROTOCOL_V1, ProtocolSupport::Full),
                    ],
                    rr_config.clone(),
                ),
                heads: request_response::Behaviour::new(
                    [(HEAD_PROTOCOL, ProtocolSupport::Full)],
                    rr_config,
                ),
                relay_client,
                dcutr: dcutr::Behaviour::new(me),
                autonat: autonat::Behaviour::new(me, autonat_config()),
                relay: Relay::new(me, &nat.friend_limits, friends),
                upnp: Toggle::from(nat.upnp.then(upnp::tokio::Behaviour::default)),
                streams: libp2p_stream::Behaviour::new(),
                ipfs_kad: Toggle::from(
                    ipfs_dht.then(|| crate::net::ipfs_dht::behaviour(me, Dht::Wan, dht_server)),
                ),
                ipfs_lan_kad: Toggle::from(
                    ipfs_dht.then(|| crate::net::ipfs_dht::behaviour(me, Dht::Lan, dht_server)),
                ),
            })
        })
        .map_err(|e| start_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    Ok(swarm)
}

/// AutoNAT (v1): asks connected peers to dial this node back. Any address may be dialled
/// back, a private one too: a server only dials the IP it sees the asker at, and a
/// home network or a lab is private addresses throughout.
fn autonat_config() -> autonat::Config {
    autonat::Config {
        only_global_ips: false,
        // The first verdict soon after start; the default (15 s) leaves `peerfs id`
        // saying "unknown" for long.
        boot_delay: Duration::from_secs(3),
        retry_interval: Duration::from_secs(30),
        ..autonat::Config::default()
    }
}

type BlockEvent = request_response::Event<BlockRequest, BlockResponse>;

impl Node {
    pub(super) fn join_dht(&mut self) {
        for addr in self.config.bootstrap.clone() {
            let mut a = addr.clone();
            match a.pop() {
                Some(libp2p::multiaddr::Protocol::P2p(peer)) => {
                    self.swarm.behaviour_mut().kad.add_address(&peer, a);
                }
                _ => warn!("bootstrap address {addr} has no /p2p/ part; skipped"),
            }
        }
        if !self.config.bootstrap.is_empty() {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        self.ipfs_join();
    }

    pub(super) fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.note_links(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!("listening on {address}/p2p/{}", self.me);
                // What the DHT hands out with my provider records. Without NAT traversal
                // a listen address is the best guess, and right on a LAN or a server.
                self.swarm.add_external_address(address.clone());
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                self.seen(peer_id);
                self.provider_connected(peer_id);
                if num_established.get() == 1 {
                    let address = endpoint.get_remote_address().to_string();
                    self.came(peer_id, address);
                    if let Some(f) = self.followed.get_mut(&peer_id) {
                        f.backoff = REDIAL_MIN;
                    }
                    self.fetch.connected();
                    self.ask_heads(peer_id);
                    // Wants waiting for a source get one.
                    self.dispatch();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                self.went(peer_id, cause.as_ref());
                self.bitswap_gone(peer_id);
                // What we know of a stranger goes with it; a gone peer has no RTT.
                if !self.followed.contains_key(&peer_id) {
                    self.stats.remove(&peer_id);
                } else if let Some(s) = self.stats.get_mut(&peer_id) {
                    s.rtt = None;
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                self.provider_unreachable(peer);
                self.dial_failed(peer, &error)
            }
            SwarmEvent::Behaviour(b) => self.behaviour_event(b),
            _ => {}
        }
    }

    fn behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Blocks(e) => self.block_event(e),
            BehaviourEvent::IpfsKad(e) => self.ipfs_event(Dht::Wan, e),
            BehaviourEvent::IpfsLanKad(e) => self.ipfs_event(Dht::Lan, e),
            BehaviourEvent::Heads(e) => self.head_event(e),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                let from = message.source.unwrap_or(self.me);
                self.receive_head(&message.data, from);
            }
            // A head published just before gossip knew of this follower missed it, and
            // it asked for my head before that commit: send the newest again.
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { topic, peer_id, .. })
                if topic == head_topic(&self.me).hash() =>
            {
                self.follower(peer_id);
                self.gossip_head()
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.seen(peer);
                if let Some(s) = self.stats_of(peer) {
                    s.rtt = Some(rtt);
                }
                for (reply, report) in self.reach.rtt(peer, rtt) {
                    let _ = reply.send(report);
                }
            }
            // Only DHT servers belong in the routing table: a client would be handed to
            // others as a node to query, and cannot answer.
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.offers_relay(peer_id, &info);
                let way = super::bitswap_asks::way_of(&info.protocols);
                self.fetch.speaks(peer_id, way);
                self.dispatch();
                self.ipfs_identified(peer_id, &info);
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.add_peer_address(peer, addr.clone());
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if self.followed.contains_key(&peer) && !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(r))),
                ..
            }) => {
                let from = r.peer.unwrap_or(self.me);
                self.receive_head(&r.record.value, from);
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result:
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers,
                        ..
                    })),
                ..
            }) => self.dial_holders(providers),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(found),
                ..
            }) => match found {
                Ok(kad::GetClosestPeersOk { key, peers })
                | Err(kad::GetClosestPeersError::Timeout { key, peers }) => {
                    self.found_closest(&key, peers)
                }
            },
            e @ (BehaviourEvent::Autonat(_)
            | BehaviourEvent::RelayClient(_)
            | BehaviourEvent::Dcutr(_)
            | BehaviourEvent::Relay(_)
            | BehaviourEvent::Upnp(_)) => self.relaying_event(e),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(result),
                ..
            }) => match result {
                Ok(ok) => debug!("announced as a holder under {:?}", ok.key),
                Err(e) => debug!("announcing as a holder: {e}"),
            },
            _ => {}
        }
    }

    fn block_event(&mut self, event: BlockEvent) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.serve(peer, request_id, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.received(peer, request_id, response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!("block request to {peer} failed: {error}");
                let id = super::Ask::Ours(request_id);
                self.fetch.failed(id, std::time::Instant::now());
                self.dispatch();
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                debug!("block request from {peer} failed: {error}");
                self.served(request_id);
            }
            request_response::Event::ResponseSent { request_id, .. } => self.served(request_id),
        }
    }
}
