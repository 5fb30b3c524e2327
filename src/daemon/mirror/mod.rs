//! Mirrors at work. As a mirror: every new head of a mirrored drive is fetched whole
//! (what the head held before does not hold; blocks kept as the owner's and out of the
//! cache), pinned under
//! `mirror/PEERID` in place of the head held before (so the next gc drops what only
//! the older head reached), and the owner is told, signed, which head is held. As an
//! owner: statements of peers in my peer book are kept, and `status` counts who holds
//! my newest head.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cid::Cid;
use libp2p::PeerId;
use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::control::Response;
use super::follow::stored_head;
use super::handlers::Context;
use crate::block::DAG_PB;
use crate::mirror::replicas::Replicas;
use crate::mirror::statement::{
    self, Answer, MirrorList, Statement, MAX_LISTED, MIRRORS_PROTOCOL, REPLICA_PROTOCOL,
};
use crate::mirror::{pin_label, walk, Held, Mirror, Mirrors};
use crate::net::peerbook::PeerBook;
use crate::net::streams::{serve_streams, Serving};
use crate::net::PeerInfo;
use crate::net::{NetHandle, RemoteBlocks};
use crate::pin::PinError;
use crate::store::rocks::RocksStore;
use crate::store::{Blocks, StoreError};
use crate::unixfs::dagpb::PbNode;

mod holders;
mod statements;
use holders::{find_holders, serve_lists};
use statements::serve_statements;

/// How often mirrored drives are looked at for a newer head.
const POLL: Duration = Duration::from_secs(1);
/// A fetch that failed (the owner and other holders away) is tried again after this.
const RETRY: Duration = Duration::from_secs(5);
/// An owner that did not take a statement is told again after this.
const TELL_AGAIN: Duration = Duration::from_secs(5);
/// An owner that took one is told again after this all the same, so that a mirror
/// learns when the owner's readers change.
const ASK_READERS_AGAIN: Duration = Duration::from_secs(60);
/// A statement's exchange, at most.
const TELL_TIMEOUT: Duration = Duration::from_secs(10);
/// Statements read at once; streams past it are dropped, and their mirrors retry.
const STATEMENTS_AT_ONCE: usize = 8;
/// How often followed peers' mirrors are looked at: asked of an owner online, dialled
/// while it is away.
const HOLDERS_EVERY: Duration = Duration::from_secs(2);
/// An owner online is asked for its mirrors again after this.
const ASK_AGAIN: Duration = Duration::from_secs(30);
/// A mirror of an owner away is dialled again after this.
const DIAL_AGAIN: Duration = Duration::from_secs(10);

/// One mirror as `peerfs mirrors` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MirrorInfo {
    pub name: String,
    pub peer_id: String,
    /// The newest head held in full: its seq, root and bytes.
    pub held_seq: Option<u64>,
    pub held_root: Option<String>,
    pub bytes: u64,
    pub quota: Option<u64>,
    /// The newest head known of the drive.
    pub newest_seq: Option<u64>,
    /// "synced", "fetching N%", "over quota" or "behind".
    pub state: String,
    /// Whether the owner took the statement that the held head is held.
    pub owner_told: bool,
}

/// A peer that holds my newest head in full, by its signed word.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub peer_id: String,
    /// Its name in my peer book.
    pub name: Option<String>,
    pub seq: u64,
    /// When it said so, milliseconds since the Unix epoch (its clock).
    pub at_ms: u64,
}

/// What is known of a mirror beside what is saved.
#[derive(Default)]
struct Live {
    fetching: Option<u8>,
    retry_at: Option<Instant>,
    /// The seq the owner took a statement of, and when.
    told: Option<(u64, Instant)>,
    tell_at: Option<Instant>,
}

pub(super) struct Mirroring {
    me: PeerId,
    key: Keypair,
    store: Arc<RocksStore>,
    net: NetHandle,
    book: Arc<Mutex<PeerBook>>,
    mirrors: Mutex<Mirrors>,
    live: Mutex<HashMap<String, Live>>,
    replicas: Mutex<Replicas>,
    pub(super) min_replicas: usize,
    /// Followed peers' mirrors, as each owner listed them, and when it was asked.
    known: Mutex<HashMap<PeerId, (Instant, Vec<Statement>)>>,
    /// When each mirror was last dialled.
    dialled: Mutex<HashMap<PeerId, Instant>>,
}

/// What `Mirroring::start` needs.
pub(super) struct Parts {
    pub repo: PathBuf,
    pub key: Keypair,
    pub store: Arc<RocksStore>,
    pub net: NetHandle,
    pub book: Arc<Mutex<PeerBook>>,
    pub min_replicas: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a field set or a list edit, then a save.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Mirroring {
    /// Loads the mirrors and statements, serves statements, and starts the worker.
    pub(super) fn start(parts: Parts) -> Result<Arc<Mirroring>, String> {
        let Parts {
            repo,
            key,
            store,
            net,
            book,
            min_replicas,
        } = parts;
        let mirrors = Mirrors::load(&repo).map_err(|e| e.to_string())?;
        for m in mirrors.list() {
            if let Ok(owner) = m.peer_id.parse() {
                net.pass_on(
                    owner,
                    m.readers.iter().filter_map(|r| r.parse().ok()).collect(),
                );
            }
        }
        let replicas = Replicas::load(&repo).map_err(|e| e.to_string())?;
        let m = Arc::new(Mirroring {
            me: key.public().to_peer_id(),
            key,
            store,
            net,
            book,
            mirrors: Mutex::new(mirrors),
            live: Mutex::default(),
            replicas: Mutex::new(replicas),
            min_replicas,
            known: Mutex::default(),
            dialled: Mutex::default(),
        });
        let incoming = m
            .net
            .streams()
            .accept(REPLICA_PROTOCOL)
            .map_err(|e| format!("cannot serve {REPLICA_PROTOCOL}: {e}"))?;
        m.net
            .runtime()
            .spawn(serve_statements(Arc::downgrade(&m), incoming));
        let lists = m
            .net
            .streams()
            .accept(MIRRORS_PROTOCOL)
            .map_err(|e| format!("cannot serve {MIRRORS_PROTOCOL}: {e}"))?;
        m.net
            .runtime()
            .spawn(serve_lists(Arc::downgrade(&m), lists));
        let weak = Arc::downgrade(&m);
        std::thread::spawn(move || work(weak));
        let weak = Arc::downgrade(&m);
        std::thread::spawn(move || find_holders(weak));
        Ok(m)
    }

    fn live<R>(&self, peer_id: &str, f: impl FnOnce(&mut Live) -> R) -> R {
        f(lock(&self.live).entry(peer_id.to_string()).or_default())
    }

    fn info(&self, m: &Mirror) -> MirrorInfo {
        let newest = stored_head(self.store.as_ref(), &m.peer_id).map(|h| h.seq);
        let (fetching, told) = self.live(&m.peer_id, |l| (l.fetching, l.told));
        let held = m.held.as_ref();
        MirrorInfo {
            name: m.name.clone(),
            peer_id: m.peer_id.clone(),
            held_seq: held.map(|h| h.seq),
            held_root: held.map(|h| h.root.clone()),
            bytes: held.map_or(0, |h| h.bytes),
            quota: m.quota,
            newest_seq: newest,
            state: m.state(newest, fetching).to_string(),
            owner_told: held.is_some_and(|h| told.is_some_and(|(seq, _)| seq == h.seq)),
        }
    }

    pub(super) fn list(&self) -> Vec<MirrorInfo> {
        let mirrors: Vec<Mirror> = lock(&self.mirrors).list().to_vec();
        mirrors.iter().map(|m| self.info(m)).collect()
    }

    pub(super) fn add(&self, name: &str, peer_id: &str, quota: Option<u64>) -> Response {
        let mut mirrors = lock(&self.mirrors);
        let m = mirrors.add(name, peer_id, quota);
        if let Err(e) = mirrors.save() {
            return Response::Error {
                message: e.to_string(),
            };
        }
        drop(mirrors);
        self.live(peer_id, |l| l.retry_at = None);
        info!("mirroring {name} ({peer_id})");
        Response::MirrorAdded(self.info(&m))
    }

    /// Stops mirroring; the head held is unpinned, and goes at the next gc unless a
    /// pin or the cache holds it.
    pub(super) fn remove(&self, name: &str) -> Response {
        let mut mirrors = lock(&self.mirrors);
        let removed = match mirrors.remove(name) {
            Ok(m) => m,
            Err(e) => {
                return Response::Error {
                    message: e.to_string(),
                }
            }
        };
        let saved = mirrors.save();
        drop(mirrors);
        let unpinned = match removed.held.as_ref().map(|h| h.root.parse::<Cid>()) {
            Some(Ok(root)) => self
                .store
                .unpin_label(&root, &pin_label(&removed.peer_id))
                .map(drop),
            _ => Ok(()),
        };
        if let Err(e) = saved
            .map_err(|e| e.to_string())
            .and(unpinned.map_err(|e| e.to_string()))
        {
            return Response::Error { message: e };
        }
        lock(&self.live).remove(&removed.peer_id);
        if let Ok(owner) = removed.peer_id.parse() {
            self.net.pass_on(owner, HashSet::new());
        }
        info!("no longer mirroring {} ({})", removed.name, removed.peer_id);
        let info = self.info(&removed);
        Response::MirrorRemoved(info)
    }

    /// The peers that hold head `seq` (root `root`) of my drive in full.
    pub(super) fn replicas_of(&self, seq: u64, root: Option<&Cid>) -> Vec<ReplicaInfo> {
        let Some(root) = root else { return Vec::new() };
        let book = lock(&self.book);
        lock(&self.replicas)
            .holding(seq, root)
            .into_iter()
            .map(|s| ReplicaInfo {
                peer_id: s.mirror.to_string(),
                name: book.by_id(&s.mirror).map(|e| e.name.clone()),
                seq: s.seq,
                at_ms: s.time_ms,
            })
            .collect()
    }

    /// One look at every mirror: fetch what is newer, tell owners what is held.
    fn round(&self) {
        let mirrors: Vec<Mirror> = lock(&self.mirrors).list().to_vec();
        if mirrors.is_empty() {
            return;
        }
        let now = Instant::now();
        // Owners are told only while connected: a dial of one away would hold up the
        // other mirrors' fetches for as long as it takes to fail.
        let online: std::collections::HashSet<String> = self
            .net
            .peers()
            .into_iter()
            .filter(|p| p.connected)
            .map(|p| p.id)
            .collect();
        for m in mirrors {
            let Ok(peer) = m.peer_id.parse::<PeerId>() else {
                continue;
            };
            let newest = stored_head(self.store.as_ref(), &m.peer_id);
            let due = self.live(&m.peer_id, |l| l.retry_at.is_none_or(|t| t <= now));
            if let Some(head) = newest.filter(|h| {
                m.held.as_ref().is_none_or(|held| held.seq < h.seq)
                    && m.over_quota != Some(h.seq)
                    && due
            }) {
                self.fetch(&m, peer, head.seq, head.root);
            }
            if online.contains(&m.peer_id) {
                self.tell(&m.peer_id, peer);
            }
        }
    }

    /// Fetches head `seq` of `peer`'s drive whole and holds it in place of the one
    /// held before.
    fn fetch(&self, m: &Mirror, peer: PeerId, seq: u64, root: Cid) {
        let id = m.peer_id.as_str();
        self.live(id, |l| l.fetching = Some(0));
        let fetched = self.walk(m, peer, root, |pct| {
            self.live(id, |l| l.fetching = Some(pct))
        });
        self.live(id, |l| l.fetching = None);
        match fetched {
            Ok(Outcome::Done { bytes, read }) => {
                if let Err(e) = self.hold(id, seq, root, bytes, read) {
                    warn!("mirror of {}: keeping head {seq}: {e}", m.name);
                    self.live(id, |l| l.retry_at = Some(Instant::now() + RETRY));
                }
            }
            Ok(Outcome::OverQuota(size)) => {
                warn!(
                    "mirror of {}: head {seq} is {size} bytes, over the quota of {} bytes; \
                     not fetched (head {} stays held)",
                    m.name,
                    m.quota.unwrap_or(0),
                    m.held.as_ref().map_or("none".into(), |h| h.seq.to_string())
                );
                let mut mirrors = lock(&self.mirrors);
                if let Some(saved) = mirrors.get_mut(id) {
                    saved.over_quota = Some(seq);
                }
                if let Err(e) = mirrors.save() {
                    warn!("mirror of {}: {e}", m.name);
                }
            }
            Err(e) => {
                info!("mirror of {}: head {seq} not fetched yet: {e}", m.name);
                self.live(id, |l| l.retry_at = Some(Instant::now() + RETRY));
            }
        }
    }

    /// Reads the DAG of `root`, but for what the head held links to already, keeping
    /// its blocks as `peer`'s, within the
    /// mirror's quota.
    fn walk(
        &self,
        m: &Mirror,
        peer: PeerId,
        root: Cid,
        mut percent: impl FnMut(u8),
    ) -> Result<Outcome, PinError> {
        // What it claims is reachable from nothing until its pin is written.
        let _no_sweep = self.store.hold_off_sweeps();
        let remote = RemoteBlocks {
            local: self.store.clone(),
            net: self.net.clone(),
            owner: Some(peer),
            fetch: true,
        };
        // The root says how big the tree is: one over the quota is not fetched.
        let declared = declared_size(&remote, &root)?;
        if m.quota.is_some_and(|q| declared > q) {
            return Ok(Outcome::OverQuota(declared));
        }
        // What the head held links to is here already.
        let held = match m.held.as_ref().and_then(|h| h.root.parse::<Cid>().ok()) {
            Some(old) => walk::linked(self.store.as_ref(), &old)?,
            None => Default::default(),
        };
        let quota = m.quota.unwrap_or(u64::MAX);
        let mut bytes = 0u64;
        let keep = |cid: &Cid, data: &[u8]| {
            bytes += data.len() as u64;
            // A root that understated its size: stopped all the same.
            if bytes > quota {
                return Err(StoreError::DiskFull(format!(
                    "mirror quota of {quota} bytes reached"
                )));
            }
            self.store.keep_block(cid, data, Some(peer)).map(drop)
        };
        let ahead = |cids: &[Cid]| {
            for c in cids {
                if !self.store.has(c).unwrap_or(true) {
                    self.net.prefetch(c, Some(peer));
                }
            }
        };
        let progress = |w: walk::Walked| {
            let here = w.bytes.saturating_add(w.skipped).saturating_mul(100);
            if let Some(p) = here.checked_div(declared) {
                percent(p.min(99) as u8);
            }
        };
        match walk::walk_new(&remote, &root, &held, ahead, keep, progress) {
            Ok(done) => {
                self.store.finish_bulk()?;
                Ok(Outcome::Done {
                    bytes: declared,
                    read: done,
                })
            }
            Err(PinError::Store(StoreError::DiskFull(_))) if bytes > quota => {
                Ok(Outcome::OverQuota(bytes))
            }
            Err(e) => Err(e),
        }
    }

    /// Pins `root` as the head held of mirror `id`, unpins the one held before.
    fn hold(
        &self,
        id: &str,
        seq: u64,
        root: Cid,
        bytes: u64,
        read: walk::Walked,
    ) -> Result<(), String> {
        let label = pin_label(id);
        let mut mirrors = lock(&self.mirrors);
        // Removed while it was fetched: nothing to hold.
        let Some(m) = mirrors.get_mut(id) else {
            return Ok(());
        };
        self.store.pin(&root, &label).map_err(|e| e.to_string())?;
        let old = m.held.as_ref().and_then(|h| h.root.parse::<Cid>().ok());
        if let Some(old) = old.filter(|o| *o != root) {
            self.store
                .unpin_label(&old, &label)
                .map_err(|e| e.to_string())?;
        }
        m.held = Some(Held {
            seq,
            root: root.to_string(),
            bytes,
            blocks: read.blocks,
        });
        m.over_quota = None;
        let name = m.name.clone();
        mirrors.save().map_err(|e| e.to_string())?;
        info!(
            "mirror of {name}: head {seq} held in full ({bytes} bytes; {} blocks, {} bytes read, \
             {} bytes held already)",
            read.blocks, read.bytes, read.skipped
        );
        Ok(())
    }
}

enum Outcome {
    /// Held: the tree's bytes (as its root declares them), and what was read for it.
    Done { bytes: u64, read: walk::Walked },
    /// The tree's bytes (declared, or counted when the root understated them).
    OverQuota(u64),
}

/// The size of the tree under `root`, as its root declares it.
fn declared_size(blocks: &dyn Blocks, root: &Cid) -> Result<u64, PinError> {
    let data = blocks.get(root)?.ok_or(PinError::Missing(*root))?;
    if root.codec() != DAG_PB {
        return Ok(data.len() as u64);
    }
    let node = PbNode::decode(&data).map_err(|e| PinError::Malformed {
        cid: *root,
        why: e.to_string(),
    })?;
    let below: u64 = node.links.iter().map(|l| l.tsize.unwrap_or(0)).sum();
    Ok((data.len() as u64).saturating_add(below))
}

/// The worker: a round every `POLL`, until the daemon lets go of the mirrors.
fn work(m: Weak<Mirroring>) {
    loop {
        std::thread::sleep(POLL);
        let Some(m) = m.upgrade() else { return };
        m.round();
    }
}

impl Context {
    /// `mirror add NAME`: NAME is followed already (by name or peer ID), or is
    /// followed now (a peer ID or multiaddr).
    pub(super) fn mirror_add(&self, name: &str, quota: Option<u64>) -> Response {
        let known = {
            let book = lock(&self.book);
            book.by_name(name)
                .or_else(|| name.parse().ok().and_then(|p| book.by_id(&p)))
                .cloned()
        };
        let entry = match known {
            Some(e) => e,
            None => match self.peer_add(name, None) {
                Response::PeerAdded { entry, .. } => entry,
                other => return other,
            },
        };
        self.mirroring.add(&entry.name, &entry.id, quota)
    }
}
