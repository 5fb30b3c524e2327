//! The swarm and its event loop.
//!
//! One task owns the swarm and all network state; the rest of the daemon reaches it
//! through `NetHandle` commands. Work that touches the disk (serving blocks, keeping
//! fetched ones, storing heads) runs on tokio's blocking pool and hands its answer back
//! through a bounded channel, so the loop never waits on RocksDB. What to fetch from
//! whom is decided by the `fetch` scheduler, who is served when by `serve`; this loop
//! carries out their decisions on the swarm.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol,
    Swarm,
};
use libp2p_identity::Keypair;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, info, warn};

use super::activity::{Activity, Budget};
use super::fetch::{Action, Answer, Scheduler, Sent};
use super::peerbook::PeerEntry;
use super::protocol::{
    BlockCodec, BlockRequest, BlockResponse, Codec, HeadMessages, HeadRequest, HeadResponse,
    BLOCK_PROTOCOL, BLOCK_PROTOCOL_V1, HEAD_PROTOCOL, MAX_BLOCK, MAX_HEADS, MAX_WANT,
    RESPONSE_BUDGET,
};
use super::reach::{DialReport, Reach};
use super::serve::{Offer, Serving, MAX_SERVING};
use super::{
    BlockReply, Command, NetConfig, NetError, NetEvent, NetHandle, PeerInfo, COMMANDS_QUEUED,
};
use crate::block::Block;
use crate::head::SignedHead;
use crate::head::OWN_HEAD;
use crate::store::handover::Handover;
use crate::store::{HeadStore, Holding};

mod presence;

/// One request's limit; the want's own deadline (the fetch timeout) bounds the whole.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often wants are checked for hedging and deadlines, and peers for redialling.
const TICK: Duration = Duration::from_millis(250);
const REDIAL_MIN: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(60);
/// Prefetched blocks waiting in memory for their reader, at most (a prefetch window).
const PREFETCHED_WAITING: usize = 32;
/// How often the DHT is asked again for the holders of one owner's blocks.
const HOLDER_LOOKUP_EVERY: Duration = Duration::from_secs(10);
/// My head goes into the DHT at most this often (the newest one); followers online get
/// every head by gossip, and the DHT copy is for those that were not.
const HEAD_RECORD_EVERY: Duration = Duration::from_secs(10);
/// Verified responses waiting for the event loop.
const CHECKED_QUEUED: usize = 64;
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/kad/1.0.0");
/// Lines about reads that failed (EIO) per minute, at most: a tool walking a dead
/// peer's tree fails a read per file.
const FAILED_READ_LINES: u32 = 20;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    gossipsub: gossipsub::Behaviour,
    blocks: request_response::Behaviour<BlockCodec>,
    heads: request_response::Behaviour<Codec<HeadMessages>>,
}

fn head_topic(peer: &PeerId) -> IdentTopic {
    IdentTopic::new(format!("/peerfs/head/{peer}"))
}

fn head_key(peer: &PeerId) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/peerfs/head/{peer}"))
}

/// The DHT key under which the holders of `owner`'s blocks (its followers, who cache
/// and pin them) announce themselves as providers.
fn holders_key(owner: &PeerId) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/peerfs/holders/{owner}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A block response, its blocks hashed off the event loop.
struct Checked {
    peer: PeerId,
    id: OutboundRequestId,
    sent: Sent,
    blocks: Vec<Block>,
    /// Blocks whose bytes did not match their CID, and why.
    bad: Vec<(Cid, String)>,
    missing: Vec<Cid>,
}

/// A block request that passed the access check, and where its answer goes.
struct Asked {
    request: BlockRequest,
    channel: ResponseChannel<BlockResponse>,
}

/// How a block request is answered.
enum Verdict {
    Serve,
    Refuse(String),
    /// Another's drive I do not follow: every block is "don't have".
    NotHeld,
}

/// What we know of a followed peer.
struct Followed {
    entry: PeerEntry,
    head: Option<SignedHead>,
    next_dial: Instant,
    backoff: Duration,
}

#[derive(Default)]
struct PeerStats {
    rtt: Option<Duration>,
    last_seen_ms: Option<u64>,
    bad_blocks: u64,
}

struct Node {
    swarm: Swarm<Behaviour>,
    me: PeerId,
    store: Arc<dyn HeadStore>,
    config: NetConfig,
    events: std::sync::mpsc::SyncSender<NetEvent>,
    /// Heads the daemon had no room for yet: the newest per peer, sent on the tick.
    unsent_heads: HashMap<PeerId, SignedHead>,
    /// Stores followed peers' heads off the loop.
    head_writer: HeadWriter,
    /// Block requests being served (until their answer is written) and waiting.
    serving: Serving<InboundRequestId, Asked>,
    own_head: Option<SignedHead>,
    /// When my head was last put in the DHT, and whether a newer one waits to be.
    head_record_put: Option<Instant>,
    head_record_due: bool,
    followed: HashMap<PeerId, Followed>,
    stats: HashMap<PeerId, PeerStats>,
    /// Which block to ask of whom, and when to give up.
    fetch: Scheduler<OutboundRequestId, BlockReply>,
    served: mpsc::Sender<Made>,
    checked: mpsc::Sender<Checked>,
    prefetched: Arc<Handover>,
    listen_addrs: Vec<Multiaddr>,
    /// When the DHT was last asked for the holders of each owner's blocks.
    holder_lookups: HashMap<PeerId, Instant>,
    /// Who is connected and what they read, for `status`.
    activity: Activity,
    /// Followed peers' dial failures, and `peer add`s waiting for a dial.
    reach: Reach<oneshot::Sender<DialReport>>,
    /// Log lines about failed reads.
    failed_reads_log: Budget,
}

/// An answer made off the loop, for the peer that asked.
type Made = (PeerId, ResponseChannel<BlockResponse>, BlockResponse);

/// Starts the node on its own runtime. `followed` are the peer book's entries.
pub fn start(
    keypair: Keypair,
    config: NetConfig,
    store: Arc<dyn HeadStore>,
    followed: Vec<PeerEntry>,
    events: std::sync::mpsc::SyncSender<NetEvent>,
) -> Result<(NetHandle, tokio::runtime::Runtime), NetError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("peerfs-net")
        .enable_all()
        .build()
        .map_err(|e| NetError::Start(e.to_string()))?;
    // Transports and listeners register with the runtime they are made in.
    let _guard = runtime.enter();
    let swarm = build_swarm(&keypair, &config)?;
    let me = keypair.public().to_peer_id();
    let (commands, inbox) = mpsc::channel(COMMANDS_QUEUED);
    // At most `MAX_SERVING` answers are being made, so they always find room.
    let (served, served_inbox) = mpsc::channel(MAX_SERVING);
    let (checked, checked_inbox) = mpsc::channel(CHECKED_QUEUED);
    let prefetched = Arc::new(Handover::new(PREFETCHED_WAITING));
    let own_head = load_head(store.as_ref(), OWN_HEAD);
    let mut node = Node {
        swarm,
        me,
        store: Arc::clone(&store),
        config: config.clone(),
        events,
        unsent_heads: HashMap::new(),
        head_writer: HeadWriter::start(Arc::clone(&store)),
        serving: Serving::default(),
        own_head,
        head_record_put: None,
        head_record_due: false,
        followed: HashMap::new(),
        stats: HashMap::new(),
        fetch: Scheduler::new(config.fetch_timeout),
        served,
        checked,
        prefetched: Arc::clone(&prefetched),
        listen_addrs: Vec::new(),
        holder_lookups: HashMap::new(),
        activity: Activity::new(Instant::now()),
        reach: Reach::default(),
        failed_reads_log: Budget::default(),
    };
    for addr in &config.listen {
        let listen_err = |e: &dyn std::fmt::Display| NetError::Listen {
            addr: addr.to_string(),
            message: e.to_string(),
        };
        // The transports share ports (SO_REUSEPORT): a second daemon would bind the
        // first one's port and take some of its connections. Find out first.
        let tried = match port_taken(addr) {
            Some(e) => Err(e.to_string()),
            None => node
                .swarm
                .listen_on(addr.clone())
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        let Err(e) = tried else {
            continue;
        };
        // A second repo on this machine finds the default port taken: any port will do
        // for it, and the log says which setting picks one.
        let any = any_port(addr).ok_or_else(|| listen_err(&e))?;
        warn!(
            "cannot listen on {addr} ({e}); listening on a free port instead \
             (set `listen` in config.toml, or `mount --listen`, to choose one)"
        );
        node.swarm.listen_on(any).map_err(|e| listen_err(&e))?;
    }
    node.join_dht();
    for entry in followed {
        let head = entry
            .peer_id()
            .and_then(|p| load_head(store.as_ref(), &p.to_string()));
        node.follow(entry, head);
    }
    runtime.spawn(node.run(inbox, served_inbox, checked_inbox));
    let handle = NetHandle {
        commands,
        store,
        runtime: runtime.handle().clone(),
        fetch_timeout: config.fetch_timeout,
        prefetched,
        readers: config.readers.clone(),
    };
    drop(_guard);
    Ok((handle, runtime))
}

/// Why `addr`'s fixed TCP or UDP port cannot be ours: someone holds it (a plain bind,
/// without port sharing, fails).
fn port_taken(addr: &Multiaddr) -> Option<std::io::Error> {
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
fn any_port(addr: &Multiaddr) -> Option<Multiaddr> {
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

fn build_swarm(keypair: &Keypair, config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let mdns_on = config.mdns;
    let max_connections = config.max_connections;
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
        .with_behaviour(|key| {
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
                identify: identify::Behaviour::new(identify::Config::new(
                    "/peerfs/1.0.0".into(),
                    key.public(),
                )),
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
            })
        })
        .map_err(|e| start_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    Ok(swarm)
}

pub(super) fn load_head(store: &dyn HeadStore, name: &str) -> Option<SignedHead> {
    let bytes = store.head(name).ok()??;
    match SignedHead::verify(&bytes) {
        Ok(h) => Some(h),
        Err(e) => {
            warn!("stored head {name} is unreadable: {e}");
            None
        }
    }
}

/// Stores followed peers' heads off the event loop: the newest per peer waits here
/// until one blocking task writes it, so heads are stored in order and a peer that
/// sends many makes us hold one.
struct HeadWriter {
    pending: Arc<std::sync::Mutex<HashMap<PeerId, SignedHead>>>,
    wake: Arc<Notify>,
}

impl HeadWriter {
    fn start(store: Arc<dyn HeadStore>) -> HeadWriter {
        let pending: Arc<std::sync::Mutex<HashMap<PeerId, SignedHead>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let (queue, woken) = (Arc::clone(&pending), Arc::clone(&wake));
        tokio::spawn(async move {
            loop {
                woken.notified().await;
                let heads = std::mem::take(&mut *lock(&queue));
                let store = Arc::clone(&store);
                let written = tokio::task::spawn_blocking(move || {
                    for (owner, head) in heads {
                        if let Err(e) = store.commit(&[], &owner.to_string(), head.encoded()) {
                            warn!("cannot store head {} of {owner}: {e}", head.head().seq);
                        }
                    }
                });
                if written.await.is_err() {
                    return;
                }
            }
        });
        HeadWriter { pending, wake }
    }

    fn write(&self, head: SignedHead) {
        lock(&self.pending).insert(head.head().peer, head);
        self.wake.notify_one();
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every change under these locks is one insert or take.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type BlockEvent = request_response::Event<BlockRequest, BlockResponse>;
type HeadEvent = request_response::Event<HeadRequest, HeadResponse>;

impl Node {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut served: mpsc::Receiver<Made>,
        mut checked: mpsc::Receiver<Checked>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(c) => {
                        self.command(c);
                        // Take whatever else is queued, so wants batch into requests.
                        while let Ok(c) = inbox.try_recv() {
                            self.command(c);
                        }
                        self.dispatch();
                    }
                    None => return,
                },
                Some((peer, channel, response)) = served.recv() => {
                    if let BlockResponse::Blocks { blocks, .. } = &response {
                        let bytes = blocks.iter().map(|(_, b)| b.len() as u64).sum();
                        self.activity.served(&peer, blocks.len() as u64, bytes, Instant::now(), now_ms());
                    }
                    let _ = self.swarm.behaviour_mut().blocks.send_response(channel, response);
                }
                Some(c) = checked.recv() => self.settle(c),
                event = self.swarm.select_next_some() => self.swarm_event(event),
                _ = tick.tick() => self.tick(),
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Fetch { cid, owner, reply } => {
                // A prefetched block may have arrived since the asker looked (the store
                // it looked in itself: no disk reads on this loop).
                match reply {
                    Some(r) => match self.prefetched.take(&cid) {
                        Some(bytes) => drop(r.send(Ok(bytes))),
                        None => self.want(cid, owner, Some(r)),
                    },
                    None => self.want(cid, owner, None),
                }
            }
            Command::Publish(head) => self.publish(head),
            Command::Follow(entry, head) => self.follow(entry, head),
            Command::Unfollow(peer) => {
                self.unsent_heads.remove(&peer);
                self.reach.forget(&peer);
                if !self.swarm.is_connected(&peer) {
                    self.stats.remove(&peer);
                }
                if self.followed.remove(&peer).is_some() {
                    let behaviour = self.swarm.behaviour_mut();
                    let _ = behaviour.gossipsub.unsubscribe(&head_topic(&peer));
                    behaviour.kad.stop_providing(&holders_key(&peer));
                    behaviour.limits.remove_peer_id(&peer);
                }
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_infos());
            }
            Command::Reach(peer, reply) => self.reach_now(peer, reply),
            Command::Activity(reply) => {
                let report = self.activity.report(Instant::now(), |p| {
                    self.followed.get(p).map(|f| f.entry.name.clone())
                });
                let _ = reply.send(report);
            }
            Command::ListenAddrs(reply) => {
                let me = self.me;
                let addrs = self
                    .listen_addrs
                    .iter()
                    .map(|a| a.clone().with_p2p(me).unwrap_or_else(|a| a))
                    .collect();
                let _ = reply.send(addrs);
            }
        }
    }

    fn want(&mut self, cid: Cid, owner: Option<PeerId>, reply: Option<BlockReply>) {
        let actions = self.fetch.want(cid, owner, reply, Instant::now());
        self.act(actions, HashMap::new());
    }

    /// Carries out what the fetch scheduler decided; `arrived` holds the blocks it
    /// may deliver.
    fn act(&mut self, actions: Vec<Action<BlockReply>>, mut arrived: HashMap<Cid, Block>) {
        let now = Instant::now();
        for action in actions {
            match action {
                Action::Request { peer, owner, cids } => {
                    let request = BlockRequest {
                        want: cids.iter().map(|c| ByteBuf::from(c.to_bytes())).collect(),
                        owner: owner.map(|o| ByteBuf::from(o.to_bytes())),
                    };
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .blocks
                        .send_request(&peer, request);
                    self.fetch.sent(id, Sent { peer, owner, cids }, now);
                }
                Action::Deliver { cid, mut waiters } => {
                    let Some(block) = arrived.remove(&cid) else {
                        continue;
                    };
                    let Some(last) = waiters.pop() else {
                        // A prefetch: its reader takes it from memory, not the store.
                        self.prefetched.insert(cid, block.into_data());
                        continue;
                    };
                    for w in waiters {
                        let _ = w.send(Ok(block.data().to_vec()));
                    }
                    let _ = last.send(Ok(block.into_data()));
                }
                Action::Fail {
                    cid,
                    waiters,
                    why,
                    owner,
                    asked,
                    repeat,
                } => {
                    debug!("giving up on {cid}: {why}");
                    if !waiters.is_empty() && !repeat {
                        self.log_failed_read(cid, why, owner, &asked);
                    }
                    for w in waiters {
                        let _ = w.send(Err(why));
                    }
                }
            }
        }
    }

    fn join_dht(&mut self) {
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
    }

    /// Follows `entry`, whose newest stored head (read by the caller, off this loop)
    /// is `stored`.
    fn follow(&mut self, entry: PeerEntry, stored: Option<SignedHead>) {
        let Some(peer) = entry.peer_id() else { return };
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

    fn publish(&mut self, head: SignedHead) {
        self.own_head = Some(head);
        self.gossip_head();
        self.head_record_due = true;
        self.put_head_record(Instant::now());
    }

    /// Gossips my newest head to its followers.
    fn gossip_head(&mut self) {
        let Some(head) = &self.own_head else { return };
        let (seq, encoded) = (head.head().seq, head.encoded().to_vec());
        let topic = head_topic(&self.me);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, encoded) {
            // No follower online: they ask for the head when they connect.
            debug!("head {seq} not gossiped: {e}");
        }
    }

    /// Puts my newest head in the DHT, unless it was put there a moment ago (then the
    /// tick puts it later).
    fn put_head_record(&mut self, now: Instant) {
        let recent = self
            .head_record_put
            .is_some_and(|t| now.duration_since(t) < HEAD_RECORD_EVERY);
        let Some(head) = self
            .own_head
            .as_ref()
            .filter(|_| self.head_record_due && !recent)
        else {
            return;
        };
        let record = kad::Record::new(head_key(&self.me), head.encoded().to_vec());
        let _ = self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One);
        self.head_record_put = Some(now);
        self.head_record_due = false;
    }

    /// Asks `peer` for the newest heads it knows of everyone I follow.
    fn ask_heads(&mut self, peer: PeerId) {
        let peers = self
            .followed
            .keys()
            .take(MAX_HEADS)
            .map(|p| ByteBuf::from(p.to_bytes()))
            .collect::<Vec<_>>();
        if !peers.is_empty() {
            self.swarm
                .behaviour_mut()
                .heads
                .send_request(&peer, HeadRequest { peers });
        }
    }

    /// Takes a head from the network if it is signed, followed and newer.
    fn receive_head(&mut self, bytes: &[u8], from: PeerId) {
        let head = match SignedHead::verify(bytes) {
            Ok(h) => h,
            Err(e) => return warn!("head from {from} rejected: {e}"),
        };
        let owner = head.head().peer;
        let Some(f) = self.followed.get_mut(&owner) else {
            return debug!("head of {owner} (not followed) from {from} ignored");
        };
        let seq = head.head().seq;
        if f.head.as_ref().is_some_and(|h| h.head().seq >= seq) {
            return debug!("head {seq} of {owner} from {from} is not newer; ignored");
        }
        self.head_writer.write(head.clone());
        info!(
            "peer {} is at seq {seq}, root {}",
            f.entry.name,
            head.head().root
        );
        f.head = Some(head.clone());
        self.unsent_heads.insert(owner, head);
        self.send_heads();
    }

    /// Tells the daemon of new heads, as far as its queue has room; the rest (the
    /// newest per peer) wait for the next tick.
    fn send_heads(&mut self) {
        let peers: Vec<PeerId> = self.unsent_heads.keys().copied().collect();
        for peer in peers {
            let Some(head) = self.unsent_heads.remove(&peer) else {
                continue;
            };
            match self.events.try_send(NetEvent::Head(head)) {
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full(NetEvent::Head(head))) => {
                    self.unsent_heads.insert(peer, head);
                    return;
                }
                // The daemon is stopping.
                Err(_) => return,
            }
        }
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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
            } => self.dial_failed(peer, &error),
            SwarmEvent::Behaviour(b) => self.behaviour_event(b),
            _ => {}
        }
    }

    fn behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Blocks(e) => self.block_event(e),
            BehaviourEvent::Heads(e) => self.head_event(e),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                let from = message.source.unwrap_or(self.me);
                self.receive_head(&message.data, from);
            }
            // A head published just before gossip knew of this follower missed it, and
            // it asked for my head before that commit: send the newest again.
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { topic, .. })
                if topic == head_topic(&self.me).hash() =>
            {
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
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
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
                result: kad::QueryResult::StartProviding(result),
                ..
            }) => match result {
                Ok(ok) => debug!("announced as a holder under {:?}", ok.key),
                Err(e) => debug!("announcing as a holder: {e}"),
            },
            _ => {}
        }
    }

    fn seen(&mut self, peer: PeerId) {
        if let Some(s) = self.stats_of(peer) {
            s.last_seen_ms = Some(now_ms());
        }
    }

    fn head_event(&mut self, event: HeadEvent) {
        let request_response::Event::Message { peer, message, .. } = event else {
            return;
        };
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                let heads = request
                    .peers
                    .iter()
                    .filter_map(|p| PeerId::from_bytes(p).ok())
                    .filter_map(|p| {
                        if p == self.me {
                            self.own_head.clone()
                        } else {
                            self.followed.get(&p).and_then(|f| f.head.clone())
                        }
                    })
                    .map(|h| ByteBuf::from(h.encoded().to_vec()))
                    .collect();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .heads
                    .send_response(channel, HeadResponse { heads });
            }
            request_response::Message::Response { response, .. } => {
                self.seen(peer);
                for h in response.heads.iter().take(MAX_HEADS) {
                    self.receive_head(h, peer);
                }
            }
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
                self.fetch.failed(request_id);
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

    /// Request `id` is answered, or failed: its room goes to the next waiting.
    fn served(&mut self, id: InboundRequestId) {
        for (peer, _, asked) in self.serving.finished(id) {
            self.start_answer(peer, asked);
        }
    }

    /// Answers a block request from the store, off the event loop: now, when there is
    /// room; later, when the peer's turn comes; or "busy".
    fn serve(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: BlockRequest,
        channel: ResponseChannel<BlockResponse>,
    ) {
        let response = match self.verdict(&peer, &request) {
            Verdict::Serve => match self.serving.offer(peer, id, Asked { request, channel }) {
                Offer::Start(asked) => return self.start_answer(peer, asked),
                Offer::Queued => return,
                Offer::Busy(asked) => {
                    debug!("busy: block request from {peer} turned away");
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .blocks
                        .send_response(asked.channel, BlockResponse::Busy);
                    return;
                }
            },
            Verdict::Refuse(reason) => {
                self.refused(peer, &reason);
                BlockResponse::Refused { reason }
            }
            Verdict::NotHeld => BlockResponse::Blocks {
                blocks: Vec::new(),
                missing: request.want.into_iter().take(MAX_WANT).collect(),
            },
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .blocks
            .send_response(channel, response);
    }

    /// Looks up the blocks of a request that has its room, on the blocking pool.
    fn start_answer(&mut self, peer: PeerId, asked: Asked) {
        let Asked { request, channel } = asked;
        let store = Arc::clone(&self.store);
        let served = self.served.clone();
        let corrupt = self.config.corrupt_served_blocks;
        let passable = self.passable_for(peer);
        // Checked when the answer is made, not when the request came: a request that
        // waited its turn gets nothing of mine once its peer is unfollowed.
        let mine = self.may_read(&peer);
        tokio::task::spawn_blocking(move || {
            let response = answer(store.as_ref(), request, mine, &passable, corrupt);
            let _ = served.blocking_send((peer, channel, response));
        });
    }

    /// Whether `peer` gets the blocks it asks for. My own drive follows my `readers`;
    /// another's drive I pass on only when its owner's head says everyone may read it
    /// (and then, to a peer my `readers` leave out, only blocks cached for that drive:
    /// see `answer`), and a drive whose head I do not know I do not hold (as far as
    /// anyone may ask).
    fn verdict(&self, peer: &PeerId, request: &BlockRequest) -> Verdict {
        let Some(owner) = request
            .owner
            .as_ref()
            .and_then(|o| PeerId::from_bytes(o).ok())
            .filter(|o| *o != self.me)
        else {
            if self.may_read(peer) {
                return Verdict::Serve;
            }
            let why = match &self.config.readers {
                super::Readers::Some {
                    following: true, ..
                } => {
                    "this node's drive is open to the peers it follows, and it does not follow you"
                }
                _ => "this node does not list you in `readers`",
            };
            return Verdict::Refuse(why.into());
        };
        match self.followed.get(&owner).and_then(|f| f.head.as_ref()) {
            None => Verdict::NotHeld,
            Some(h) if h.head().open => Verdict::Serve,
            Some(_) => Verdict::Refuse(format!(
                "drive {owner} is not open to everyone; ask its owner"
            )),
        }
    }

    /// Whose cached blocks `peer` may have: the drives whose newest head says they are
    /// open to everyone, and its own.
    fn passable_for(&self, peer: PeerId) -> HashSet<PeerId> {
        self.followed
            .iter()
            .filter(|(_, f)| f.head.as_ref().is_some_and(|h| h.head().open))
            .map(|(p, _)| *p)
            .chain([peer])
            .collect()
    }

    /// Takes the blocks in a response that match what we asked for. Hashing a
    /// megabyte takes a while: the blocks are checked off the event loop, then settled.
    fn received(&mut self, peer: PeerId, id: OutboundRequestId, response: BlockResponse) {
        let Some(sent) = self.fetch.answered(id) else {
            return;
        };
        self.seen(peer);
        let (blocks, missing) = match response {
            BlockResponse::Refused { reason } => {
                info!("{peer} refused blocks: {reason}");
                self.fetch.refused(id, &sent);
                self.dispatch();
                return;
            }
            BlockResponse::Busy => {
                debug!("{peer} is busy; asking elsewhere");
                self.fetch.busy(id, &sent, Instant::now());
                self.dispatch();
                return;
            }
            BlockResponse::Blocks { blocks, missing } => (blocks, missing),
        };
        let asked_set: HashSet<Cid> = sent.cids.iter().copied().collect();
        let mut arrived = Vec::with_capacity(blocks.len());
        for (cid, data) in blocks {
            match Cid::try_from(cid.as_slice())
                .ok()
                .filter(|c| asked_set.contains(c))
            {
                Some(cid) => arrived.push((cid, data.into_vec())),
                None => self.bad_block(peer, "a block we did not ask for"),
            }
        }
        let missing = missing
            .iter()
            .filter_map(|c| Cid::try_from(c.as_slice()).ok())
            .filter(|c| asked_set.contains(c))
            .collect();
        let checked = self.checked.clone();
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut blocks = Vec::with_capacity(arrived.len());
            let mut bad = Vec::new();
            for (cid, data) in arrived {
                match Block::verified(cid, data) {
                    Ok(b) => blocks.push(b),
                    Err(e) => bad.push((cid, e.to_string())),
                }
            }
            // Kept (as evictable cache) before anyone is answered, so an asker that
            // looks in the store after this finds it there.
            if let Err(e) = store.put_cached(&blocks, sent.owner) {
                warn!("cannot keep {} fetched blocks: {e}", blocks.len());
            }
            let _ = checked.blocking_send(Checked {
                peer,
                id,
                sent,
                blocks,
                bad,
                missing,
            });
        });
    }

    /// Delivers the verified blocks of a response, and asks elsewhere for the rest.
    fn settle(&mut self, c: Checked) {
        let Checked {
            peer,
            id,
            sent,
            blocks,
            bad,
            missing,
        } = c;
        for (_, e) in &bad {
            self.bad_block(peer, e);
        }
        let answer = Answer {
            delivered: blocks.iter().map(|b| *b.cid()).collect(),
            bad: bad.into_iter().map(|(c, _)| c).collect(),
            missing,
        };
        let arrived = blocks.into_iter().map(|b| (*b.cid(), b)).collect();
        let actions = self.fetch.settle(id, &sent, answer);
        self.act(actions, arrived);
        self.dispatch();
    }

    fn bad_block(&mut self, peer: PeerId, what: &str) {
        warn!("{peer} sent a bad block ({what}); asking elsewhere");
        if let Some(s) = self.stats_of(peer) {
            s.bad_blocks += 1;
        }
    }

    /// What we know of `peer`: kept for followed peers and connected ones, pruned when
    /// a stranger disconnects.
    fn stats_of(&mut self, peer: PeerId) -> Option<&mut PeerStats> {
        let known = self.followed.contains_key(&peer) || self.swarm.is_connected(&peer);
        known.then(|| self.stats.entry(peer).or_default())
    }

    /// Sends requests for every want that has no request out.
    fn dispatch(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let actions = self.fetch.dispatch(&connected, Instant::now());
        self.act(actions, HashMap::new());
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let actions = self.fetch.tick(&connected, now);
        self.act(actions, HashMap::new());
        self.find_holders(now, &connected);
        self.put_head_record(now);
        self.redial(now);
        self.send_heads();
        for (reply, report) in self.reach.tick(now) {
            let _ = reply.send(report);
        }
        self.prune(now);
    }

    /// Forgets what is past use, so nothing here grows with time.
    fn prune(&mut self, now: Instant) {
        self.holder_lookups
            .retain(|_, when| now.duration_since(*when) < HOLDER_LOOKUP_EVERY);
        self.activity.prune(now);
    }

    /// Asks the DHT who holds the blocks of owners whose wants have no source left: a
    /// waiting reader's owner is offline and no connected peer has the block.
    fn find_holders(&mut self, now: Instant, connected: &[PeerId]) {
        let owners = self.fetch.stranded_owners(connected, now);
        for owner in owners {
            let recent = self
                .holder_lookups
                .get(&owner)
                .is_some_and(|t| now.duration_since(*t) < HOLDER_LOOKUP_EVERY);
            if !recent {
                debug!("asking the DHT who holds {owner}'s blocks");
                self.holder_lookups.insert(owner, now);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(holders_key(&owner));
            }
        }
    }

    /// Connects to holders the DHT named; wants go to them once connected. Dialled at
    /// once, while the lookup still knows their addresses.
    fn dial_holders(&mut self, holders: HashSet<PeerId>) {
        for peer in holders {
            if peer == self.me || self.swarm.is_connected(&peer) {
                continue;
            }
            debug!("dialling {peer}, a holder found in the DHT");
            // With no addresses given, the swarm takes them from the behaviours.
            if let Err(e) = self.swarm.dial(DialOpts::peer_id(peer).build()) {
                debug!("dialling holder {peer}: {e}");
            }
        }
    }

    /// Dials followed peers that are not connected, backing off per peer.
    fn redial(&mut self, now: Instant) {
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
    fn dial_followed(&mut self, peer: PeerId, now: Instant) {
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

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .followed
            .iter()
            .map(|(peer, f)| {
                let stats = self.stats.get(peer);
                let connected = self.swarm.is_connected(peer);
                let failure = self.reach.last_failure(peer).filter(|_| !connected);
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
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The blocks of `request` we have and may pass on, up to the response budget. Our own
/// blocks (the drive's, pins, imports) only when `mine` (the asker is in `readers`); a
/// block cached for a peer's drive only when that drive is in `passable`, whatever the
/// request says it is asking for.
fn answer(
    store: &dyn HeadStore,
    request: BlockRequest,
    mine: bool,
    passable: &HashSet<PeerId>,
    corrupt: bool,
) -> BlockResponse {
    let mut blocks = Vec::new();
    let mut missing = Vec::new();
    let mut bytes = 0usize;
    for raw in request.want.into_iter().take(MAX_WANT) {
        let Ok(cid) = Cid::try_from(raw.as_slice()) else {
            missing.push(raw);
            continue;
        };
        if bytes >= RESPONSE_BUDGET {
            break;
        }
        let may_pass = |held: &Holding| match held {
            Holding::Own => mine,
            Holding::Cached(owner) => owner.is_some_and(|o| passable.contains(&o)),
        };
        match store.get_held(&cid) {
            Ok(Some((data, held))) if data.len() <= MAX_BLOCK && may_pass(&held) => {
                bytes += data.len();
                let mut data = data;
                if corrupt {
                    if let Some(b) = data.first_mut() {
                        *b ^= 0xff;
                    }
                }
                blocks.push((raw, ByteBuf::from(data)));
            }
            Ok(_) => missing.push(raw),
            Err(e) => {
                warn!("serving {cid}: {e}");
                missing.push(raw);
            }
        }
    }
    BlockResponse::Blocks { blocks, missing }
}
