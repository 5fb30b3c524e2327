//! The node: one task owns the swarm and all network state; the rest of the daemon
//! reaches it through `NetHandle` commands. Work that touches the disk (serving blocks,
//! keeping fetched ones, storing heads) runs on tokio's blocking pool and hands its
//! answer back through a bounded channel, so the loop never waits on RocksDB. What to
//! fetch from whom is decided by the `fetch` scheduler, who is served when by `serve`;
//! this loop carries out their decisions on the swarm.
//!
//! Here: the node's state, `start`, the event loop and its tick. Below, one part of
//! the node each:
//!
//! - `swarm`: the behaviours composed, transports and listeners, swarm events routed.
//! - `serving`: block requests answered, by `readers` and each drive's openness.
//! - `fetching`: the `fetch` scheduler's decisions carried out, answers checked.
//! - `bitswap_asks`: the scheduler's requests to Bitswap peers, and their answers.
//! - `heads`: my head published; followed peers' heads received, stored, passed on.
//! - `following`: followed peers dialled, subscribed to, and held for in the DHT.
//! - `presence`: who comes and goes, dial failures and refusals, in the log.
//! - `relaying`: NAT traversal: relay reservations, AutoNAT, the relay server, hole
//!   punches, and how each peer is reached.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;
use libp2p::futures::StreamExt;
use libp2p::request_response::{InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use libp2p_identity::Keypair;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::activity::{Activity, Budget};
use super::bitswap::{self as bitswap_client, Heard};
use super::fetch::{Scheduler, Sent};
use super::peerbook::PeerEntry;
use super::protocol::BlockResponse;
use super::reach::{DialReport, Reach};
use super::serve::{Serving, MAX_SERVING};
use super::{BlockReply, Command, NetConfig, NetError, NetEvent, NetHandle, COMMANDS_QUEUED};
use crate::block::Block;
use crate::head::SignedHead;
use crate::head::OWN_HEAD;
use crate::store::handover::Handover;
use crate::store::HeadStore;
use following::Followed;
pub(super) use heads::load_head;
use heads::HeadWriter;
use relaying::Relaying;
use serving::Asked;
use swarm::{any_port, build_swarm, port_taken, Behaviour};

mod bitswap_asks;
mod fetching;
mod following;
mod heads;
mod ipfs_routing;
mod presence;
mod relaying;
mod serving;
mod swarm;

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A block request's id: of our protocol's, or of the Bitswap requests' own count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ask {
    Ours(OutboundRequestId),
    Bitswap(u64),
}

/// A block response, its blocks hashed off the event loop.
struct Checked {
    peer: PeerId,
    id: Ask,
    sent: Sent,
    blocks: Vec<Block>,
    /// Blocks whose bytes did not match their CID, and why.
    bad: Vec<(Cid, String)>,
    missing: Vec<Cid>,
}

/// An answer made off the loop, for the peer that asked.
type Made = (PeerId, ResponseChannel<BlockResponse>, BlockResponse);

#[derive(Default)]
struct PeerStats {
    rtt: Option<Duration>,
    last_seen_ms: Option<u64>,
    bad_blocks: u64,
    /// Good blocks it sent us.
    blocks_fetched: u64,
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
    /// Restricted drives this node mirrors, and whom their owners let read them: the
    /// peers their blocks may be passed on to.
    pass_on: HashMap<PeerId, HashSet<PeerId>>,
    stats: HashMap<PeerId, PeerStats>,
    /// Which block to ask of whom, and when to give up.
    fetch: Scheduler<Ask, BlockReply>,
    /// Sends want-blocks to Bitswap peers; what they send back comes on `run`'s `heard`.
    bitswap: bitswap_client::Client,
    /// The scheduler's requests out to Bitswap peers.
    asks: bitswap_asks::Asks,
    /// IPFS DHT lookups for the providers of blocks of no drive a reader waits for,
    /// while they are wanted (dropping one ends its lookup).
    provider_lookups: HashMap<Cid, mpsc::Receiver<PeerId>>,
    served: mpsc::Sender<Made>,
    checked: mpsc::Sender<Checked>,
    prefetched: Arc<Handover>,
    /// Who sent each transfer's blocks.
    transfer_sources: Arc<super::TransferSources>,
    /// Paces what is served (`upload_rate`).
    throttle: Arc<super::throttle::Throttle>,
    listen_addrs: Vec<Multiaddr>,
    /// When the DHT was last asked for the holders of each owner's blocks.
    holder_lookups: HashMap<PeerId, Instant>,
    /// Who is connected and what they read, for `status`.
    activity: Activity,
    /// Followed peers' dial failures, and `peer add`s waiting for a dial.
    reach: Reach<oneshot::Sender<DialReport>>,
    /// Log lines about failed reads.
    failed_reads_log: Budget,
    /// NAT traversal: reservations, reachability, how each peer is reached.
    relaying: Relaying,
    /// The IPFS DHTs' state, with `ipfs_dht`.
    ipfs: ipfs_routing::IpfsRouting,
}

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
    let friends = crate::net::relay::Friends::default();
    let swarm = build_swarm(&keypair, &config, friends.clone())?;
    let streams = swarm.behaviour().streams.new_control();
    let me = keypair.public().to_peer_id();
    let (commands, inbox) = mpsc::channel(COMMANDS_QUEUED);
    // At most `MAX_SERVING` answers are being made, so they always find room.
    let (served, served_inbox) = mpsc::channel(MAX_SERVING);
    let (checked, checked_inbox) = mpsc::channel(CHECKED_QUEUED);
    let (heard, heard_inbox) = mpsc::channel(bitswap_client::HEARD_QUEUED);
    let bitswap = bitswap_client::Client::new(streams.clone(), heard);
    let prefetched = Arc::new(Handover::new(PREFETCHED_WAITING));
    let transfer_sources = Arc::new(super::TransferSources::default());
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
        pass_on: HashMap::new(),
        stats: HashMap::new(),
        fetch: Scheduler::new(config.fetch_timeout),
        bitswap: bitswap.clone(),
        asks: Default::default(),
        provider_lookups: HashMap::new(),
        served,
        checked,
        prefetched: Arc::clone(&prefetched),
        transfer_sources: Arc::clone(&transfer_sources),
        throttle: Arc::new(super::throttle::Throttle::new(config.upload_rate)),
        listen_addrs: Vec::new(),
        holder_lookups: HashMap::new(),
        activity: Activity::new(Instant::now()),
        reach: Reach::default(),
        failed_reads_log: Budget::default(),
        relaying: Relaying::new(config.nat.clone(), friends, Instant::now()),
        ipfs: Default::default(),
    };
    node.apply_relay_server();
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
    runtime.spawn(node.run(inbox, served_inbox, checked_inbox, heard_inbox));
    let handle = NetHandle {
        commands,
        store,
        runtime: runtime.handle().clone(),
        fetch_timeout: config.fetch_timeout,
        prefetched,
        readers: config.readers.clone(),
        streams,
        bitswap,
        transfer_sources,
    };
    drop(_guard);
    Ok((handle, runtime))
}

impl Node {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut served: mpsc::Receiver<Made>,
        mut checked: mpsc::Receiver<Checked>,
        mut heard: mpsc::Receiver<Heard>,
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
                Some(h) = heard.recv() => self.bitswap_heard(h),
                event = self.swarm.select_next_some() => self.swarm_event(event),
                _ = tick.tick() => self.tick(),
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Fetch {
                cid,
                owner,
                reply,
                claim,
            } => {
                // A prefetched block may have arrived since the asker looked (the store
                // it looked in itself: no disk reads on this loop).
                match reply {
                    Some(r) => match self.prefetched.take(&cid) {
                        Some(bytes) => drop(r.send(Ok(bytes))),
                        None => self.want(cid, owner, Some(r), claim),
                    },
                    None => self.want(cid, owner, None, claim),
                }
            }
            Command::Prefetch(cids, owner) => {
                for cid in cids {
                    self.want(cid, owner, None, None);
                }
            }
            Command::Forget(transfer) => self.fetch.forget(transfer),
            Command::Reprioritize(transfer, priority) => {
                self.fetch.reprioritize(transfer, priority)
            }
            Command::Publish(head) => self.publish(head),
            Command::Follow(entry, head) => self.follow(entry, head),
            Command::Unfollow(peer) => self.unfollow(peer),
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
                // What I listen on (relayed addresses included), then addresses others
                // confirmed (AutoNAT, UPnP).
                let mut addrs: Vec<Multiaddr> = Vec::new();
                let confirmed = self.swarm.external_addresses();
                for a in self.listen_addrs.iter().chain(confirmed) {
                    let a = a.clone().with_p2p(me).unwrap_or_else(|a| a);
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                let _ = reply.send(addrs);
            }
            Command::Reachability(reply) => {
                let _ = reply.send(self.relaying.reachability);
            }
            Command::DialHolder(peer, addrs) => self.dial_holder(peer, addrs),
            Command::PassOn(owner, readers) if readers.is_empty() => {
                self.pass_on.remove(&owner);
            }
            Command::PassOn(owner, readers) => {
                self.pass_on.insert(owner, readers);
            }
            Command::Provide(roots) => self.provide(roots),
            Command::IpfsDht(reply) => {
                let _ = reply.send(self.ipfs_status());
            }
        }
    }

    fn seen(&mut self, peer: PeerId) {
        if let Some(s) = self.stats_of(peer) {
            s.last_seen_ms = Some(now_ms());
        }
    }

    /// What we know of `peer`: kept for followed peers and connected ones, pruned when
    /// a stranger disconnects.
    fn stats_of(&mut self, peer: PeerId) -> Option<&mut PeerStats> {
        let known = self.followed.contains_key(&peer) || self.swarm.is_connected(&peer);
        known.then(|| self.stats.entry(peer).or_default())
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        self.bitswap_tick(now);
        let actions = self.fetch.tick(&connected, now);
        self.act(actions, HashMap::new());
        self.find_holders(now, &connected);
        self.find_providers_of_waiting(now, &connected);
        self.put_head_record(now);
        self.redial(now);
        self.keep_reservations(now);
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
        self.ipfs_prune(now);
    }
}
