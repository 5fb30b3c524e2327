//! Followed peers' drives as read-only inode trees, for `DIR/peers/<name>/`.
//!
//! Nodes load lazily through `RemoteBlocks` (local store, else the owner, else any peer
//! that has them), so every call here may wait on the network: the FUSE layer runs them
//! off its session threads. Inode numbers live above `PEER_INO_BASE`, apart from the
//! drive's, and stay stable across a peer's new heads: `switch_head` walks only what
//! the kernel has seen, swaps CIDs in place, and returns the exact entries and inodes
//! the kernel must forget.
//!
//! The table follows what the kernel holds: a directory's entries get inodes when it is
//! listed, and go when the kernel forgets the directory (it forgets a directory only
//! after everything below it). A forgotten entry keeps only its small node in its
//! parent's listing, so an `ls -R` of a huge drive costs what the kernel keeps, not
//! what it has seen.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::{Deref, Range};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

use cid::Cid;
use libp2p::PeerId;

use crate::block::{Block, RAW};
use crate::head::Head;
use crate::net::{NetHandle, RemoteBlocks};
use crate::store::readahead::ReadAhead;
use crate::store::{copy_part, Blocks, StoreError};
use crate::unixfs::{list, load_node, FileNode, FileReader, Node};
use crate::vfs::ino::PEER_INO_BASE;
use crate::vfs::{node_attr, Attr, FsError, Kind};

/// How far ahead of a sequential reader leaves are fetched.
const PREFETCH_WINDOW: u64 = 32 << 20;
/// A listing asks for the child nodes it lacks this many entries ahead of the one it
/// loads: the round trips overlap, and a huge directory does not become a want per
/// entry at once.
const LISTING_AHEAD: usize = 256;
/// Failed reads and listings logged per minute at most (a failing `cp -r` fails many).
const FAILURES_LOGGED: u32 = 20;
/// How far up `path_of` names an inode's parents.
const MAX_PATH_DEPTH: usize = 256;

/// What the kernel must drop after a head change.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// The name `name` in directory `parent` changed (added, removed or replaced).
    Entry { parent: u64, name: Vec<u8> },
    /// The inode's content or attributes changed.
    Inode(u64),
}

struct PeerNode {
    owner: PeerId,
    parent: u64,
    /// `None` for a followed peer whose head we have not seen yet.
    cid: Option<Cid>,
    attr: Attr,
    /// Loaded on first lookup or listing.
    children: Option<BTreeMap<Vec<u8>, u64>>,
    /// A file's root node, kept after the first read.
    file: Option<Arc<FileNode>>,
    /// How far ahead of the reader blocks have been asked for.
    prefetched_to: u64,
    /// Lookups answered since the kernel last forgot the inode. Entries of a
    /// `readdirplus` reach the kernel without one, so this may count low, never high:
    /// the kernel's forget (sent when it evicts the inode) brings it to zero.
    lookups: u64,
    /// No listing names it any more (a peer removed, an entry gone in a new head): it
    /// goes once the kernel forgets it.
    orphan: bool,
}

#[derive(Default)]
struct State {
    /// Peer name → the inode of its drive's root.
    tops: BTreeMap<Vec<u8>, u64>,
    nodes: HashMap<u64, PeerNode>,
    next_ino: u64,
    /// When each peer made the head shown: the time of its entries that record none.
    head_times: HashMap<PeerId, SystemTime>,
}

impl State {
    /// A new inode under `parent`; returns its number.
    fn add_node(&mut self, owner: PeerId, parent: u64, cid: Option<Cid>, attr: Attr) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            PeerNode {
                owner,
                parent,
                cid,
                attr: Attr { ino, ..attr },
                // A peer whose head is unknown shows as an empty directory.
                children: cid.is_none().then(BTreeMap::new),
                file: None,
                prefetched_to: 0,
                lookups: 0,
                orphan: false,
            },
        );
        ino
    }

    /// Removes the nodes below `ino` (the kernel holds none of them).
    fn drop_below(&mut self, ino: u64) {
        let Some(children) = self.nodes.get_mut(&ino).and_then(|n| n.children.take()) else {
            return;
        };
        for child in children.into_values() {
            self.drop_below(child);
            self.nodes.remove(&child);
        }
    }

    /// Marks inodes no listing names any more. What the kernel may still hold of them
    /// (an open file, a directory below) keeps working until it forgets them.
    fn orphan(&mut self, inos: impl IntoIterator<Item = u64>) {
        for ino in inos {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.orphan = true;
            }
        }
    }
}

/// How many recently read blocks a view keeps: the kernel reads 128 KiB at a time, and
/// each leaf is 1 MiB, so without this every leaf would be loaded eight times.
const RECENT_BLOCKS: usize = 8;

pub struct PeerView {
    local: Arc<dyn Blocks>,
    /// Reads cached leaves ahead of a sequential reader, as the drive does its own, into
    /// the handover the network's prefetches use.
    read_ahead: ReadAhead,
    recent: Mutex<VecDeque<(Cid, Arc<Vec<u8>>)>>,
    net: NetHandle,
    /// The inode of `peers/` itself, the parent of every top.
    peers_ino: u64,
    state: Mutex<State>,
    /// Since when failures are counted, and how many were logged since.
    failures_logged: Mutex<(Instant, u32)>,
}

/// A followed peer whose head is not known yet: an empty directory, as of now.
fn empty_dir_attr() -> Attr {
    let now = SystemTime::now();
    Attr {
        ino: 0,
        kind: Kind::Directory,
        size: 0,
        allocated: 0,
        perm: 0o555,
        mtime: now,
        ctime: now,
        atime: now,
        nlink: 1,
    }
}

/// What `stat` shows of a node in a peer's drive: read-only (nobody here can write
/// it, so no write bits), and dated by the peer's head where the node records no time.
fn shown_attr(node: &Node, head_time: SystemTime) -> Attr {
    let mut attr = node_attr(0, node);
    attr.perm &= !0o222;
    if node.meta().mtime.is_none() {
        attr.mtime = head_time;
        attr.ctime = head_time;
        attr.atime = head_time;
    }
    attr
}

/// A raw block is a whole file with no metadata: its size is the link's.
fn raw_file_attr(size: u64, head_time: SystemTime) -> Attr {
    Attr {
        ino: 0,
        kind: Kind::File,
        size,
        allocated: size,
        perm: 0o444,
        mtime: head_time,
        ctime: head_time,
        atime: head_time,
        nlink: 1,
    }
}

fn head_time(head: &Head) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(head.time_ms)
}

impl PeerView {
    pub fn new(local: Arc<dyn Blocks>, net: NetHandle, peers_ino: u64) -> PeerView {
        PeerView {
            read_ahead: ReadAhead::handing_to(Arc::clone(&local), net.handover()),
            local,
            net,
            peers_ino,
            recent: Mutex::default(),
            failures_logged: Mutex::new((Instant::now(), 0)),
            state: Mutex::new(State {
                next_ino: PEER_INO_BASE,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn blocks(&self, owner: PeerId) -> RemoteBlocks {
        self.blocks_of(owner, true)
    }

    /// `owner`'s blocks; with `fetch` false, only those already here.
    fn blocks_of(&self, owner: PeerId, fetch: bool) -> RemoteBlocks {
        RemoteBlocks {
            local: Arc::clone(&self.local),
            net: self.net.clone(),
            owner: Some(owner),
            fetch,
        }
    }

    /// Shows `name` for `peer` at `head` (or empty while its head is unknown). A peer
    /// already shown keeps its inode and moves to the new root through `switch_head`.
    pub fn add_peer(&self, name: &str, peer: PeerId, head: Option<&Head>) -> Vec<Invalidation> {
        let existing = self.lock().tops.get(name.as_bytes()).copied();
        if existing.is_some() {
            return match head {
                Some(head) => self.switch_head(peer, head),
                None => Vec::new(),
            };
        }
        let root = head.map(|h| h.root);
        if let Some(h) = head {
            self.lock().head_times.insert(peer, head_time(h));
        }
        // Only what is here: a peer being added must not wait on the network.
        let attr = match root.and_then(|r| load_node(self.local.as_ref(), &r).ok()) {
            Some(node) => shown_attr(&node, self.head_time(peer)),
            None => empty_dir_attr(),
        };
        let mut st = self.lock();
        let ino = st.add_node(peer, self.peers_ino, root, attr);
        st.tops.insert(name.as_bytes().to_vec(), ino);
        vec![Invalidation::Entry {
            parent: self.peers_ino,
            name: name.as_bytes().to_vec(),
        }]
    }

    /// Stops showing the peer called `name`.
    pub fn remove_peer(&self, name: &str) -> Vec<Invalidation> {
        let mut st = self.lock();
        let Some(top) = st.tops.remove(name.as_bytes()) else {
            return Vec::new();
        };
        if let Some(owner) = st.nodes.get(&top).map(|n| n.owner) {
            st.head_times.remove(&owner);
        }
        st.orphan([top]);
        vec![Invalidation::Entry {
            parent: self.peers_ino,
            name: name.as_bytes().to_vec(),
        }]
    }

    /// The peers shown, by name.
    pub fn tops(&self) -> Vec<(Vec<u8>, Attr)> {
        let st = self.lock();
        st.tops
            .iter()
            .filter_map(|(name, ino)| st.nodes.get(ino).map(|n| (name.clone(), n.attr)))
            .collect()
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        self.lock()
            .nodes
            .get(&ino)
            .map(|n| n.attr)
            .ok_or(FsError::NotFound)
    }

    pub fn parent(&self, ino: u64) -> u64 {
        self.lock()
            .nodes
            .get(&ino)
            .map_or(self.peers_ino, |n| n.parent)
    }

    pub fn cid(&self, ino: u64) -> Result<Cid, FsError> {
        self.lock()
            .nodes
            .get(&ino)
            .ok_or(FsError::NotFound)?
            .cid
            .ok_or(FsError::NoAttribute)
    }

    /// Looks `name` up in `parent` (`peers/` itself, or a directory in a peer's drive).
    /// The kernel holds the entry found until it forgets it.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        if parent != self.peers_ino {
            self.load_children(parent)?;
        }
        let mut st = self.lock();
        let ino = if parent == self.peers_ino {
            st.tops.get(name)
        } else {
            st.nodes
                .get(&parent)
                .and_then(|p| p.children.as_ref())
                .and_then(|c| c.get(name))
        };
        let ino = *ino.ok_or(FsError::NotFound)?;
        let n = st.nodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        n.lookups += 1;
        Ok(n.attr)
    }

    /// The kernel dropped `n` references to `ino`. Once it holds none, what hangs off
    /// the inode goes (its listing and the nodes below, a file's root node); an inode
    /// no listing names any more goes too.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut st = self.lock();
        let Some(node) = st.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return;
        }
        node.file = None;
        node.prefetched_to = 0;
        let (orphan, known) = (node.orphan, node.cid.is_some());
        // A peer whose head is unknown keeps its (empty) listing: there is none to load.
        if known || orphan {
            st.drop_below(ino);
        }
        if orphan {
            st.nodes.remove(&ino);
        }
    }

    /// Inodes of peers' drives held now (`peerfs status`).
    pub fn inode_count(&self) -> usize {
        self.lock().nodes.len()
    }

    pub fn list(&self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>, FsError> {
        let children = self
            .children(ino)
            .inspect_err(|e| self.log_failure("listing", ino, e))?;
        let st = self.lock();
        Ok(children
            .into_iter()
            .filter_map(|(name, c)| st.nodes.get(&c).map(|n| (name, n.attr)))
            .collect())
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let (owner, cid) = self.owner_cid(ino)?;
        match load_node(&self.blocks(owner), &cid)? {
            Node::Symlink { target, .. } => Ok(target),
            _ => Err(FsError::Invalid),
        }
    }

    /// Reads up to `len` bytes at `offset`, and starts fetching what a sequential
    /// reader will want next. May wait on the network.
    pub fn read(&self, ino: u64, offset: u64, len: u32) -> Result<ReadData, FsError> {
        self.read_from(ino, offset, len, true)
            .inspect_err(|e| self.log_failure("reading", ino, e))
    }

    /// Says in the log which file a failed read or listing was about (the network's
    /// line names the block and the peers asked), at most `FAILURES_LOGGED` a minute.
    fn log_failure(&self, doing: &str, ino: u64, e: &FsError) {
        if !matches!(e.errno(), libc::EIO | libc::EACCES) {
            return;
        }
        {
            let mut logged = self
                .failures_logged
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if now.duration_since(logged.0) > Duration::from_secs(60) {
                *logged = (now, 0);
            }
            if logged.1 >= FAILURES_LOGGED {
                return;
            }
            logged.1 += 1;
        }
        warn!("{doing} peers/{} failed: {e}", self.path_of(ino));
    }

    /// `NAME/path/below` of a peer inode, as far as the table knows its parents.
    fn path_of(&self, ino: u64) -> String {
        let st = self.lock();
        let mut names = Vec::new();
        let mut at = ino;
        for _ in 0..MAX_PATH_DEPTH {
            let Some(node) = st.nodes.get(&at) else { break };
            let siblings = if node.parent == self.peers_ino {
                Some(&st.tops)
            } else {
                st.nodes.get(&node.parent).and_then(|p| p.children.as_ref())
            };
            let name = siblings.and_then(|c| c.iter().find(|(_, &i)| i == at).map(|(n, _)| n));
            names.push(name.map_or_else(
                || format!("(inode {at})"),
                |n| String::from_utf8_lossy(n).into_owned(),
            ));
            if node.parent == self.peers_ino {
                break;
            }
            at = node.parent;
        }
        names.reverse();
        names.join("/")
    }

    /// `read`, if every block it needs is here already (in memory or the store); never
    /// waits on the network. `None` sends the caller to `read`.
    pub fn read_here(&self, ino: u64, offset: u64, len: u32) -> Option<ReadData> {
        self.read_from(ino, offset, len, false).ok()
    }

    fn read_from(&self, ino: u64, offset: u64, len: u32, fetch: bool) -> Result<ReadData, FsError> {
        let (owner, cid) = self.owner_cid(ino)?;
        let blocks = self.blocks_of(owner, fetch);
        let cached = self.lock().nodes.get(&ino).and_then(|n| n.file.clone());
        let root = match cached {
            Some(f) => f,
            None => {
                let Node::File(f) = load_node(&blocks, &cid)? else {
                    return Err(FsError::IsADirectory);
                };
                let f = Arc::new(f);
                if let Some(n) = self.lock().nodes.get_mut(&ino) {
                    if n.cid == Some(cid) {
                        n.file = Some(Arc::clone(&f));
                    }
                }
                f
            }
        };
        let end = offset.saturating_add(len as u64).min(root.filesize);
        self.prefetch_after(ino, owner, &root, end);
        let reading = RecentBlocks {
            view: self,
            inner: &blocks,
        };
        let reader = FileReader::from_node(&reading, cid, root);
        let len = end.saturating_sub(offset);
        // The kernel's reads mostly fall inside one leaf: hand out that part of it.
        if let Some((leaf, at, size)) = reader.leaf_holding(offset, len)? {
            if let Some(bytes) = reading.block(&leaf)? {
                if bytes.len() as u64 == size {
                    let at = at as usize;
                    return Ok(ReadData::Shared(bytes, at..at + len as usize));
                }
            }
        }
        let mut buf = vec![0u8; len as usize];
        let n = reader.read_at(offset, &mut buf)?;
        buf.truncate(n);
        Ok(ReadData::Owned(buf))
    }

    /// Keeps the blocks ahead of a reader at `pos` asked for, a window at a time.
    fn prefetch_after(&self, ino: u64, owner: PeerId, root: &FileNode, pos: u64) {
        let from = {
            let mut st = self.lock();
            let Some(n) = st.nodes.get_mut(&ino) else {
                return;
            };
            // A reader that jumped back or far ahead starts a new window.
            if n.prefetched_to < pos || n.prefetched_to > pos + 2 * PREFETCH_WINDOW {
                n.prefetched_to = pos;
            }
            if n.prefetched_to >= pos + PREFETCH_WINDOW / 2 || n.prefetched_to >= root.filesize {
                return;
            }
            let from = n.prefetched_to;
            n.prefetched_to = pos + PREFETCH_WINDOW;
            from
        };
        self.prefetch(owner, root, from, pos + PREFETCH_WINDOW - from);
    }

    /// Asks for the blocks under `[from, from + window)`: from the network those that are
    /// not here yet, from the store (read ahead) the leaves that are. Nodes below the
    /// root are walked only when they are already local.
    fn prefetch(&self, owner: PeerId, node: &FileNode, from: u64, window: u64) {
        let mut pos = node.inline.len() as u64;
        let end = from.saturating_add(window);
        for (cid, size) in &node.children {
            let (start, stop) = (pos, pos + size);
            pos = stop;
            if stop <= from {
                continue;
            }
            if start >= end {
                break;
            }
            if cid.codec() == RAW {
                if self.local.has(cid).unwrap_or(false) {
                    self.read_ahead.request([*cid]);
                } else {
                    self.net.prefetch(cid, Some(owner));
                }
                continue;
            }
            match self.local.get(cid) {
                Ok(Some(bytes)) => {
                    if let Ok(Node::File(child)) = Node::decode(cid, bytes) {
                        self.prefetch(
                            owner,
                            &child,
                            from.saturating_sub(start),
                            end - start.min(end),
                        );
                    }
                }
                _ => self.net.prefetch(cid, Some(owner)),
            }
        }
    }

    fn owner_cid(&self, ino: u64) -> Result<(PeerId, Cid), FsError> {
        let st = self.lock();
        let n = st.nodes.get(&ino).ok_or(FsError::NotFound)?;
        Ok((n.owner, n.cid.ok_or(FsError::NotFound)?))
    }

    fn node_attr(&self, owner: PeerId, cid: &Cid) -> Result<Attr, FsError> {
        let node = load_node(&self.blocks(owner), cid)?;
        Ok(shown_attr(&node, self.head_time(owner)))
    }

    /// When `owner` made the head shown (the epoch if none is known).
    fn head_time(&self, owner: PeerId) -> SystemTime {
        self.lock()
            .head_times
            .get(&owner)
            .copied()
            .unwrap_or(UNIX_EPOCH)
    }

    /// A directory's entries, loading them (and each child's node, for its attributes)
    /// on first use.
    fn children(&self, ino: u64) -> Result<BTreeMap<Vec<u8>, u64>, FsError> {
        self.load_children(ino)?;
        self.lock()
            .nodes
            .get(&ino)
            .and_then(|n| n.children.clone())
            .ok_or(FsError::NotFound)
    }

    /// Makes sure a directory's listing is loaded.
    fn load_children(&self, ino: u64) -> Result<(), FsError> {
        let (owner, cid) = {
            let st = self.lock();
            let n = st.nodes.get(&ino).ok_or(FsError::NotFound)?;
            if n.attr.kind != Kind::Directory {
                return Err(FsError::NotADirectory);
            }
            if n.children.is_some() {
                return Ok(());
            }
            (n.owner, n.cid.ok_or(FsError::NotFound)?)
        };
        let loaded = self.load_entries(owner, &cid)?;
        let mut st = self.lock();
        // Another thread may have loaded it meanwhile, or a new head replaced it.
        match st.nodes.get(&ino) {
            Some(n) if n.cid != Some(cid) => return Err(FsError::NotFound),
            Some(n) if n.children.is_some() => return Ok(()),
            Some(_) => {}
            None => return Err(FsError::NotFound),
        }
        let mut children = BTreeMap::new();
        for (name, child_cid, attr) in loaded {
            let child = st.add_node(owner, ino, Some(child_cid), attr);
            children.insert(name, child);
        }
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.children = Some(children);
        }
        Ok(())
    }

    /// A directory's entries with each one's attributes. Child nodes missing here are
    /// asked for `LISTING_AHEAD` entries ahead, so a listing costs a few round trips,
    /// not one per entry.
    fn load_entries(&self, owner: PeerId, dir: &Cid) -> Result<Vec<(Vec<u8>, Cid, Attr)>, FsError> {
        let blocks = self.blocks(owner);
        let node = load_node(&blocks, dir)?;
        let entries = list(&blocks, dir, &node)?;
        let mut asked = 0;
        let time = self.head_time(owner);
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let ahead = entries.len().min(i + LISTING_AHEAD);
            for next in entries.get(asked..ahead).unwrap_or_default() {
                if next.cid.codec() != RAW && !self.local.has(&next.cid)? {
                    self.net.prefetch(&next.cid, Some(owner));
                }
            }
            asked = asked.max(ahead);
            let attr = if e.cid.codec() == RAW {
                raw_file_attr(e.tsize, time)
            } else {
                shown_attr(&load_node(&blocks, &e.cid)?, time)
            };
            out.push((e.name.clone(), e.cid, attr));
        }
        Ok(out)
    }

    /// Moves `peer`'s tree to `root`: inodes the kernel knows keep their numbers and
    /// take their new CIDs; what changed is returned for invalidation.
    pub fn switch_head(&self, peer: PeerId, head: &Head) -> Vec<Invalidation> {
        let root = head.root;
        let top = {
            let st = self.lock();
            st.tops
                .values()
                .copied()
                .find(|ino| st.nodes.get(ino).is_some_and(|n| n.owner == peer))
        };
        let Some(top) = top else {
            return Vec::new();
        };
        self.lock().head_times.insert(peer, head_time(head));
        // A peer seen for the first time shows its root at once; its attributes follow.
        if let Some(n) = self.lock().nodes.get_mut(&top).filter(|n| n.cid.is_none()) {
            n.cid = Some(root);
            n.children = None;
        }
        let mut out = Vec::new();
        let attr = self.node_attr(peer, &root).ok();
        self.retarget(top, root, attr, &mut out);
        out
    }

    /// Points `ino` at `cid`; for a loaded directory, diffs its entries too.
    fn retarget(&self, ino: u64, cid: Cid, attr: Option<Attr>, out: &mut Vec<Invalidation>) {
        let (owner, old_children) = {
            let mut st = self.lock();
            let Some(n) = st.nodes.get_mut(&ino) else {
                return;
            };
            if n.cid == Some(cid) {
                return;
            }
            n.cid = Some(cid);
            n.file = None;
            if let Some(a) = attr {
                n.attr = Attr { ino, ..a };
            }
            out.push(Invalidation::Inode(ino));
            (n.owner, n.children.take())
        };
        let Some(old) = old_children else { return };
        let new = match attr.filter(|a| a.kind == Kind::Directory) {
            Some(_) => self.load_entries(owner, &cid).ok(),
            None => None,
        };
        // No longer a directory, or not loadable now (it loads again on next use).
        let Some(new) = new else {
            self.lock().orphan(old.values().copied());
            for name in old.into_keys() {
                out.push(Invalidation::Entry { parent: ino, name });
            }
            return;
        };
        let mut children = BTreeMap::new();
        let mut old = old;
        for (name, child_cid, child_attr) in new {
            let same_kind = old
                .get(&name)
                .and_then(|c| {
                    self.lock()
                        .nodes
                        .get(c)
                        .map(|n| n.attr.kind == child_attr.kind)
                })
                .unwrap_or(false);
            match old.remove(&name) {
                Some(child) if same_kind => {
                    self.retarget(child, child_cid, Some(child_attr), out);
                    children.insert(name, child);
                }
                replaced => {
                    self.lock().orphan(replaced);
                    // Replaced by another kind, or new (the kernel may hold a negative
                    // entry for it): either way the name must be looked up again.
                    out.push(Invalidation::Entry {
                        parent: ino,
                        name: name.clone(),
                    });
                    let child = self
                        .lock()
                        .add_node(owner, ino, Some(child_cid), child_attr);
                    children.insert(name, child);
                }
            }
        }
        self.lock().orphan(old.values().copied());
        for name in old.into_keys() {
            out.push(Invalidation::Entry { parent: ino, name });
        }
        if let Some(n) = self.lock().nodes.get_mut(&ino) {
            n.children = Some(children);
        }
    }
}

/// Bytes read from a peer's file: part of a leaf shared with the recent blocks, or a
/// copy put together from several.
pub enum ReadData {
    Shared(Arc<Vec<u8>>, Range<usize>),
    Owned(Vec<u8>),
}

impl Deref for ReadData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Shared(block, range) => &block[range.clone()],
            ReadData::Owned(bytes) => bytes,
        }
    }
}

/// A view's reads: recent blocks from memory, the rest through `inner`.
struct RecentBlocks<'a> {
    view: &'a PeerView,
    inner: &'a RemoteBlocks,
}

impl RecentBlocks<'_> {
    fn recent(&self) -> MutexGuard<'_, VecDeque<(Cid, Arc<Vec<u8>>)>> {
        self.view.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block `cid` from memory, or else through `inner` (then kept in memory).
    fn block(&self, cid: &Cid) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        let hit = self
            .recent()
            .iter()
            .find(|(c, _)| c == cid)
            .map(|(_, b)| Arc::clone(b));
        if hit.is_some() {
            return Ok(hit);
        }
        let Some(bytes) = self.inner.get(cid)? else {
            return Ok(None);
        };
        let bytes = Arc::new(bytes);
        let mut recent = self.recent();
        if recent.len() >= RECENT_BLOCKS {
            recent.pop_front();
        }
        recent.push_back((*cid, Arc::clone(&bytes)));
        Ok(Some(bytes))
    }
}

impl Blocks for RecentBlocks<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.block(cid)?.map(|b| b.to_vec()))
    }

    /// The kernel reads a 1 MiB leaf 128 KiB at a time: copy only that part.
    fn read_part(&self, cid: &Cid, offset: u64, out: &mut [u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.block(cid)?.map(|b| copy_part(&b, offset, out)))
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.inner.has(cid)
    }

    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
        self.inner.put_many(blocks, durable)
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        self.inner.delete_many(cids)
    }
}
