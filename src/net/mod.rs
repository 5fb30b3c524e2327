//! The libp2p node: transports, discovery, heads and blocks.
//!
//! - [`protocol`]: our request-response protocols and their wire format.
//! - [`peerbook`]: the peers I follow, persisted in the repo.
//! - [`node`]: the swarm and its event loop, on a tokio runtime of its own: serving,
//!   fetching, heads and following, one module each below it.
//! - [`fetch`]: the fetch scheduler: which block to ask of whom, hedging, fallback.
//! - [`serve`]: who gets served what, and when: the serving side's bounds and "busy",
//!   and which held blocks a request is answered with.
//! - [`reach`]: why a dial failed, what `peer add` is told, what the log is told.
//! - [`activity`]: who is connected and reading my drive now, for `peerfs status`.
//! - [`nat`]: reaching peers behind NAT: settings, this node's reachability, how each
//!   peer is reached (direct or relayed).
//! - [`relay`]: relaying for others, friends with generous limits.
//! - [`bitswap`]: IPFS's block exchange, served to IPFS nodes by the `access` rule.
//! - [`ipfs_dht`]: the IPFS DHT, opt-in: providing what we serve, finding providers.
//!
//! Everything outside talks to the node through a [`NetHandle`]: commands in, answers
//! on oneshot channels, and [`NetEvent`]s (a followed peer's new head) out.

pub mod activity;
pub mod bitswap;
pub mod fetch;
pub mod ipfs_dht;
pub mod nat;
pub mod node;
pub mod peerbook;
pub mod protocol;
pub mod reach;
pub mod relay;
pub mod serve;
pub mod streams;
pub mod throttle;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::head::SignedHead;
use crate::store::handover::Handover;
use crate::store::{Blocks, HeadStore, StoreError, Unavailable};
use crate::transfers::{Priority, Tally, TransferId};
use peerbook::PeerEntry;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad multiaddr {0:?}")]
    BadAddr(String),
    #[error("listening on {addr}: {message}")]
    Listen { addr: String, message: String },
    #[error("starting the network: {0}")]
    Start(String),
}

/// In config `readers`: every peer I follow, when it asks.
pub const READERS_FOLLOWING: &str = "following";
/// In config `readers`: everyone (and holders of my blocks pass them on).
pub const READERS_EVERYONE: &str = "*";

/// Who may fetch blocks of my drive (config `readers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readers {
    Everyone,
    /// The `listed` peers, and with `following` every peer I follow when it asks (so
    /// one I stop following is refused from then on).
    Some {
        following: bool,
        listed: HashSet<PeerId>,
    },
}

impl Readers {
    /// Reads config `readers`: `"*"`, `"following"`, peer IDs, and peer-book names
    /// that `name` resolves. An entry that is none of these is returned as the error.
    pub fn from_config(
        entries: &[String],
        name: impl Fn(&str) -> Option<PeerId>,
    ) -> Result<Readers, String> {
        if entries.iter().any(|r| r == READERS_EVERYONE) {
            return Ok(Readers::Everyone);
        }
        let mut following = false;
        let mut listed = HashSet::new();
        for r in entries {
            if r == READERS_FOLLOWING {
                following = true;
                continue;
            }
            let id = r
                .parse()
                .ok()
                .or_else(|| name(r))
                .ok_or_else(|| r.clone())?;
            listed.insert(id);
        }
        Ok(Readers::Some { following, listed })
    }

    /// Whether `peer`, which I follow or not, may read my drive.
    pub fn allows(&self, peer: &PeerId, followed: bool) -> bool {
        match self {
            Readers::Everyone => true,
            Readers::Some { following, listed } => {
                (*following && followed) || listed.contains(peer)
            }
        }
    }

    /// Every peer that may read my drive, given the peers I follow; none when everyone
    /// may (no list names everyone).
    pub fn named(&self, followed: impl IntoIterator<Item = PeerId>) -> HashSet<PeerId> {
        match self {
            Readers::Everyone => HashSet::new(),
            Readers::Some { following, listed } => {
                let followed = followed.into_iter().filter(|_| *following);
                listed.iter().copied().chain(followed).collect()
            }
        }
    }

    /// For `status`: "everyone", "following", "following+listed" or "listed".
    pub fn summary(&self) -> &'static str {
        match self {
            Readers::Everyone => "everyone",
            Readers::Some {
                following: true,
                listed,
            } if listed.is_empty() => "following",
            Readers::Some {
                following: true, ..
            } => "following+listed",
            Readers::Some { .. } => "listed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    pub mdns: bool,
    pub readers: Readers,
    pub fetch_timeout: Duration,
    pub bootstrap: Vec<Multiaddr>,
    pub dht_server: bool,
    /// Most established connections, not counting followed peers'.
    pub max_connections: u32,
    /// Test-only fault: serve every block with one byte flipped.
    pub corrupt_served_blocks: bool,
    /// Bytes a second blocks are served at, all peers together (0: no limit).
    pub upload_rate: u64,
    /// Test-only fault: serve this one block with one byte flipped.
    pub corrupt_served_cid: Option<Cid>,
    /// Relays, hole punching, AutoNAT, UPnP.
    pub nat: nat::NatConfig,
    /// Take part in the IPFS DHTs (public and LAN): provide, find providers.
    pub ipfs_dht: bool,
}

/// Commands queued for the node at most; a full queue makes askers wait, and drops
/// prefetches (hints).
pub(crate) const COMMANDS_QUEUED: usize = 1024;
/// Events queued for the daemon at most (`start`'s `events` channel should be this
/// size); beyond it the node keeps only each peer's newest head until there is room.
pub const EVENTS_QUEUED: usize = 64;

/// Something the rest of the daemon must react to.
#[derive(Debug)]
pub enum NetEvent {
    /// A followed peer has a new, verified head (seq above the last one).
    Head(SignedHead),
    /// A followed peer's first connection opened.
    Connected(PeerId),
    /// A followed peer's last connection closed.
    Disconnected(PeerId),
}

/// One line of `peerfs peers`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub id: String,
    pub connected: bool,
    pub addrs: Vec<String>,
    pub rtt_ms: Option<f64>,
    pub head_seq: Option<u64>,
    pub head_root: Option<String>,
    /// When we last heard from the peer, ms since the Unix epoch.
    pub last_seen_ms: Option<u64>,
    /// Blocks from this peer that did not match their CID.
    pub bad_blocks: u64,
    /// Blocks this peer sent that matched their CID (of any drive: it is one source of
    /// a swarm).
    #[serde(default)]
    pub blocks_fetched: u64,
    /// Why the last dial of it failed, and when (ms since the Unix epoch); cleared
    /// when it connects.
    #[serde(default)]
    pub last_dial_error: Option<String>,
    #[serde(default)]
    pub last_dial_error_ms: Option<u64>,
    /// "direct" or "relayed" while connected.
    #[serde(default)]
    pub connection: Option<String>,
    /// "tcp" or "quic" while connected (for a relayed connection, the relay's).
    #[serde(default)]
    pub transport: Option<String>,
    /// Peers that hold its newest head in full (its mirrors), as it told us.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// What its signed profile says (from its HELLO or its head), filled in by the daemon.
    #[serde(default)]
    pub profile_name: Option<String>,
    #[serde(default)]
    pub about: Option<String>,
    /// Its avatar image's CID.
    #[serde(default)]
    pub avatar: Option<String>,
    /// What it offers others, as its last HELLO said.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

pub(crate) type BlockReply = oneshot::Sender<Result<Vec<u8>, Unavailable>>;

pub(crate) enum Command {
    /// Get `cid` from the network (the owner first); with no reply, it is a prefetch.
    /// `claim`: the transfer it is for.
    Fetch {
        cid: Cid,
        owner: Option<PeerId>,
        reply: Option<BlockReply>,
        claim: Option<fetch::Claim>,
    },
    /// Prefetch these of `owner`'s drive, wanted together: they go out in one dispatch,
    /// `MAX_WANT` nodes to a request, however the loop is woken.
    Prefetch(Vec<Cid>, Option<PeerId>),
    /// A transfer paused or cancelled: its wants not asked yet are dropped.
    Forget(TransferId),
    /// A transfer's wants are served by this priority from now on.
    Reprioritize(TransferId, Priority),
    Publish(SignedHead),
    /// Follow a peer, whose newest stored head the asker read.
    Follow(PeerEntry, Option<SignedHead>),
    Unfollow(PeerId),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// Dial a followed peer now, and say how it went.
    Reach(PeerId, oneshot::Sender<reach::DialReport>),
    /// Who is connected, and what they read.
    Activity(oneshot::Sender<Vec<activity::ConnectedPeer>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Reachability(oneshot::Sender<nat::Reachability>),
    /// Dial a peer that holds a drive's blocks (a mirror), at these addresses too.
    DialHolder(PeerId, Vec<Multiaddr>),
    /// The owner of a drive this node mirrors named who may read it.
    PassOn(PeerId, HashSet<PeerId>),
    /// Provide these roots in the IPFS DHTs (all of them: what is not here stops).
    Provide(Vec<Cid>),
    IpfsDht(oneshot::Sender<ipfs_dht::IpfsDhtStatus>),
}

/// The way in to a running node. Cheap to clone.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    /// Read by callers, on their threads, so the node's loop never waits on the disk.
    store: Arc<dyn HeadStore>,
    runtime: tokio::runtime::Handle,
    fetch_timeout: Duration,
    /// Blocks prefetched for a reader, waiting for it in memory.
    prefetched: Arc<Handover>,
    readers: Readers,
    /// Opens and accepts streams of the protocols served off the event loop.
    streams: libp2p_stream::Control,
    /// Sends the node's want-blocks to Bitswap peers, and hears back for it.
    bitswap: bitswap::Client,
    /// Who sent the blocks of each transfer.
    transfer_sources: Arc<TransferSources>,
}

/// Blocks and bytes each peer sent for each transfer, until the transfer takes them.
#[derive(Default)]
pub(crate) struct TransferSources(std::sync::Mutex<SentBy>);

type SentBy = HashMap<TransferId, HashMap<PeerId, Tally>>;

impl TransferSources {
    fn lock(&self) -> std::sync::MutexGuard<'_, SentBy> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `peer` sent a block of `bytes` for `transfer` (over Bitswap or not).
    pub(crate) fn add(&self, transfer: TransferId, peer: PeerId, bytes: u64, bitswap: bool) {
        let mut all = self.lock();
        let n = all.entry(transfer).or_default().entry(peer).or_default();
        n.blocks += 1;
        n.bytes += bytes;
        n.bitswap |= bitswap;
    }
}

impl NetHandle {
    /// Queues a command, waiting while the queue is full. Never call it on the node's
    /// runtime's worker threads (the FUSE offload and control threads are fine).
    fn send(&self, c: Command) -> bool {
        self.commands.blocking_send(c).is_ok()
    }

    /// Waits for an answer from the node, at most `limit`.
    fn ask<T>(
        &self,
        limit: Duration,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return None;
        }
        self.runtime
            .block_on(async { tokio::time::timeout(limit, rx).await })
            .ok()?
            .ok()
    }

    /// Fetches one block, verified, from `owner` or any peer that has it. Blocks the
    /// calling thread (never a FUSE session thread) for at most the fetch timeout.
    /// A CID of no drive (`owner` none: `cat`, `get`, `pin` of a CID) is also asked of
    /// the connected peers that speak only Bitswap, as sources of the same scheduler.
    pub fn fetch(&self, cid: &Cid, owner: Option<PeerId>) -> Result<Vec<u8>, Unavailable> {
        self.fetch_for(cid, owner, None)
    }

    /// `fetch`, for a transfer (`claim`): served by its priority, and counted as its.
    pub fn fetch_for(
        &self,
        cid: &Cid,
        owner: Option<PeerId>,
        claim: Option<fetch::Claim>,
    ) -> Result<Vec<u8>, Unavailable> {
        let limit = self.fetch_timeout + Duration::from_secs(1);
        let (tx, rx) = oneshot::channel();
        if !self.send(Command::Fetch {
            cid: *cid,
            owner,
            reply: Some(tx),
            claim,
        }) {
            return Err(Unavailable::Stopped);
        }
        self.runtime.block_on(async move {
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(answer)) => answer,
                _ => Err(Unavailable::Stopped),
            }
        })
    }

    /// A block prefetched for a reader, if it is waiting in memory (handed over once).
    pub fn take_prefetched(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.prefetched.take(cid)
    }

    /// Where prefetched blocks wait for their reader: local read-ahead for the same
    /// readers puts its blocks there too.
    pub fn handover(&self) -> Arc<Handover> {
        Arc::clone(&self.prefetched)
    }

    /// Asks for `cid` in the background; it lands in the store, and waits for its
    /// reader in memory for a while. The caller has checked that the store lacks it.
    /// Dropped when the node's queue is full: a prefetch is a hint.
    pub fn prefetch(&self, cid: &Cid, owner: Option<PeerId>) {
        self.prefetch_for(cid, owner, None);
    }

    /// `prefetch` of several blocks at once, which are then asked for together (a
    /// listing's next entries, a shard's sub-shards).
    pub fn prefetch_many(&self, cids: Vec<Cid>, owner: Option<PeerId>) {
        if !cids.is_empty() {
            let _ = self.commands.try_send(Command::Prefetch(cids, owner));
        }
    }

    /// `prefetch`, for a transfer (`claim`).
    pub fn prefetch_for(&self, cid: &Cid, owner: Option<PeerId>, claim: Option<fetch::Claim>) {
        let _ = self.commands.try_send(Command::Fetch {
            cid: *cid,
            owner,
            reply: None,
            claim,
        });
    }

    /// `transfer` is paused or cancelled: what it asked for and was not sent yet is
    /// not asked for (what is out may still land).
    pub fn forget_transfer(&self, transfer: TransferId) {
        self.send(Command::Forget(transfer));
    }

    /// `transfer`'s wants are served by `priority` from now on.
    pub fn reprioritize(&self, transfer: TransferId, priority: Priority) {
        self.send(Command::Reprioritize(transfer, priority));
    }

    /// Blocks and bytes each peer sent for `transfer` since the last call.
    pub fn take_transfer_sources(&self, transfer: TransferId) -> HashMap<String, Tally> {
        let sent = self.transfer_sources.lock().remove(&transfer);
        sent.into_iter()
            .flatten()
            .map(|(p, n)| (p.to_string(), n))
            .collect()
    }

    pub fn publish(&self, head: SignedHead) {
        self.send(Command::Publish(head));
    }

    pub fn follow(&self, peer: PeerEntry) {
        let stored = peer
            .peer_id()
            .and_then(|p| node::load_head(self.store.as_ref(), &p.to_string()));
        self.send(Command::Follow(peer, stored));
    }

    pub fn unfollow(&self, peer: PeerId) {
        self.send(Command::Unfollow(peer));
    }

    /// Connects to `peer`, a holder of some drive's blocks (a mirror), unless it is
    /// connected: once it is, the fetcher asks it like any connected peer.
    pub fn dial_holder(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        self.send(Command::DialHolder(peer, addrs));
    }

    /// A restricted drive this node mirrors may be passed on to `readers`, as its owner
    /// `owner` said (none: to nobody but the owner, as any restricted drive).
    pub fn pass_on(&self, owner: PeerId, readers: HashSet<PeerId>) {
        self.send(Command::PassOn(owner, readers));
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.ask(Duration::from_secs(5), Command::Peers)
            .unwrap_or_default()
    }

    /// Dials followed `peer` now (a `peer add`), and says how it went: connected with
    /// its RTT, or why not, within `reach::REPORT_WAIT`.
    pub fn reach(&self, peer: PeerId) -> reach::DialReport {
        let timed_out = reach::DialReport::Failed(reach::DialFailure::TimedOut { addr: None });
        self.ask(reach::REPORT_WAIT + Duration::from_secs(1), |tx| {
            Command::Reach(peer, tx)
        })
        .unwrap_or(timed_out)
    }

    /// Who is connected now (and left in the last minute), with what each read.
    pub fn connected_peers(&self) -> Vec<activity::ConnectedPeer> {
        self.ask(Duration::from_secs(5), Command::Activity)
            .unwrap_or_default()
    }

    /// Who may read my drive.
    pub fn readers(&self) -> &Readers {
        &self.readers
    }

    /// Starts Bitswap on the node's runtime: serving by `access` (with none, nothing is
    /// served), and reading what Bitswap peers send for the node's wants. `corrupt`:
    /// tests only, every block sent is wrong, as a lying peer's.
    pub fn start_bitswap(&self, access: Option<Arc<dyn crate::access::Access>>, corrupt: bool) {
        let _in_runtime = self.runtime.enter();
        bitswap::start(self.streams.clone(), access, corrupt, self.bitswap.clone());
    }

    /// Opens and accepts streams of protocols served off the event loop (the inbox's).
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    /// The node's runtime, where work beside it (the inbox's) runs.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Duration::from_secs(5), Command::ListenAddrs)
            .unwrap_or_default()
    }

    /// Provides `roots` in the IPFS DHTs from now on (the whole list; with `ipfs_dht`).
    pub fn provide(&self, roots: Vec<Cid>) {
        self.send(Command::Provide(roots));
    }

    /// The IPFS DHTs: on or not, their routing tables, what we provide.
    pub fn ipfs_dht_status(&self) -> ipfs_dht::IpfsDhtStatus {
        self.ask(Duration::from_secs(5), Command::IpfsDht)
            .unwrap_or_default()
    }

    /// Whether others can reach this node from outside (AutoNAT's verdict).
    pub fn reachability(&self) -> nat::Reachability {
        self.ask(Duration::from_secs(5), Command::Reachability)
            .unwrap_or_default()
    }
}

/// A block store that fetches what it lacks from the network: the local store first,
/// then `owner`, then any peer that has the block. What arrives is verified (by the
/// node) and kept in the local store.
pub struct RemoteBlocks {
    pub local: Arc<dyn Blocks>,
    pub net: NetHandle,
    pub owner: Option<PeerId>,
    /// False: a block that is not here is missing, rather than waited for.
    pub fetch: bool,
}

impl RemoteBlocks {
    /// `get`, for a transfer (`claim`).
    pub fn get_for(
        &self,
        cid: &Cid,
        claim: Option<fetch::Claim>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(b) = self.net.take_prefetched(cid) {
            return Ok(Some(b));
        }
        if let Some(b) = self.local.get(cid)? {
            return Ok(Some(b));
        }
        if !self.fetch {
            return Ok(None);
        }
        match self.net.fetch_for(cid, self.owner, claim) {
            Ok(b) => Ok(Some(b)),
            Err(why) => Err(StoreError::Unavailable { cid: *cid, why }),
        }
    }
}

impl Blocks for RemoteBlocks {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_for(cid, None)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.local.has(cid)
    }

    fn put_many(&self, blocks: &[crate::block::Block], durable: bool) -> Result<(), StoreError> {
        self.local.put_many(blocks, durable)
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        self.local.delete_many(cids)
    }

    fn ahead(&self, cids: &[Cid]) {
        if !self.fetch {
            return;
        }
        let missing = cids
            .iter()
            .filter(|c| !self.local.has(c).unwrap_or(true))
            .copied()
            .collect();
        self.net.prefetch_many(missing, self.owner);
    }
}

/// Parses multiaddrs from config or flags.
pub fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, NetError> {
    addrs
        .iter()
        .map(|a| a.parse().map_err(|_| NetError::BadAddr(a.clone())))
        .collect()
}
