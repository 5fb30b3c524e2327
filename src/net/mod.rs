//! The libp2p node: transports, discovery, heads and blocks.
//!
//! - [`protocol`]: our request-response protocols and their wire format.
//! - [`peerbook`]: the peers I follow, persisted in the repo.
//! - [`node`]: the swarm and its event loop, on a tokio runtime of its own.
//! - [`fetch`]: the fetch scheduler: which block to ask of whom, hedging, fallback.
//! - [`serve`]: who gets served when: the serving side's bounds and "busy".
//!
//! Everything outside talks to the node through a [`NetHandle`]: commands in, answers
//! on oneshot channels, and [`NetEvent`]s (a followed peer's new head) out.

pub mod fetch;
pub mod node;
pub mod peerbook;
pub mod protocol;
pub mod serve;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::head::SignedHead;
use crate::store::handover::Handover;
use crate::store::{Blocks, HeadStore, StoreError, Unavailable};
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

/// Who may fetch blocks from me.
#[derive(Clone, Debug)]
pub enum Readers {
    Everyone,
    Only(HashSet<PeerId>),
}

impl Readers {
    pub fn allows(&self, peer: &PeerId) -> bool {
        match self {
            Readers::Everyone => true,
            Readers::Only(set) => set.contains(peer),
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
}

/// One line of `peerfs peers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
}

pub(crate) type BlockReply = oneshot::Sender<Result<Vec<u8>, Unavailable>>;

pub(crate) enum Command {
    /// Get `cid` from the network (the owner first); with no reply, it is a prefetch.
    Fetch {
        cid: Cid,
        owner: Option<PeerId>,
        reply: Option<BlockReply>,
    },
    Publish(SignedHead),
    /// Follow a peer, whose newest stored head the asker read.
    Follow(PeerEntry, Option<SignedHead>),
    Unfollow(PeerId),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
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
    pub fn fetch(&self, cid: &Cid, owner: Option<PeerId>) -> Result<Vec<u8>, Unavailable> {
        let margin = Duration::from_secs(1);
        self.ask(self.fetch_timeout + margin, |tx| Command::Fetch {
            cid: *cid,
            owner,
            reply: Some(tx),
        })
        .unwrap_or(Err(Unavailable::Stopped))
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
        let _ = self.commands.try_send(Command::Fetch {
            cid: *cid,
            owner,
            reply: None,
        });
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

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.ask(Duration::from_secs(5), Command::Peers)
            .unwrap_or_default()
    }

    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Duration::from_secs(5), Command::ListenAddrs)
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

impl Blocks for RemoteBlocks {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(b) = self.net.take_prefetched(cid) {
            return Ok(Some(b));
        }
        if let Some(b) = self.local.get(cid)? {
            return Ok(Some(b));
        }
        if !self.fetch {
            return Ok(None);
        }
        match self.net.fetch(cid, self.owner) {
            Ok(b) => Ok(Some(b)),
            Err(why) => Err(StoreError::Unavailable { cid: *cid, why }),
        }
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
}

/// Parses multiaddrs from config or flags.
pub fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, NetError> {
    addrs
        .iter()
        .map(|a| a.parse().map_err(|_| NetError::BadAddr(a.clone())))
        .collect()
}
