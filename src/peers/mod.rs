//! Followed peers' drives as read-only inode trees, for `DIR/peers/<name>/`, and any
//! CID as one, for `DIR/ipfs/<CID>/` (a tree of nobody's drive, looked up by name and
//! gone when the kernel forgets it).
//!
//! Nodes load lazily through `RemoteBlocks` (local store, else the owner, else any peer
//! that has them), so every call here may wait on the network: the FUSE layer runs them
//! off its session threads. Inode numbers live above `PEER_INO_BASE`, apart from the
//! drive's, and stay stable across a peer's new heads: `switch_head` walks only what
//! the kernel has seen, swaps CIDs in place, and returns the exact entries and inodes
//! the kernel must forget.
//!
//! The table follows what the kernel holds: a directory's entries get inodes when it is
//! listed, or one by one as they are looked up before that (a lookup in a huge
//! directory loads a few blocks), and go when the kernel forgets the directory (it
//! forgets a directory only after everything below it). A forgotten entry keeps only
//! its small node in its parent's listing, so an `ls -R` of a huge drive costs what
//! the kernel keeps, not what it has seen.
//!
//! - `PeerView` (here): the view's state and the calls FUSE makes that need no more
//!   than the table: lookup, attributes, forget, listing, readlink.
//! - [`table`]: the inode table: one node per entry the kernel may hold.
//! - [`listing`]: a directory's entries loaded on first listing, child nodes fetched
//!   ahead; or one entry, on lookup.
//! - [`read`]: reading a peer's file, with prefetch ahead of a sequential reader.
//! - [`heads`]: showing a peer, hiding it, and moving its tree to a new head.
//! - [`attrs`]: what `stat` shows of a peer's node: read-only, dated by its head.
//! - [`trim`]: past a limit of nodes, the least used directories go back to the kernel.
//! - [`inbox`]: `DIR/inbox/`, a tree of items received, built here and shown read-only.
//! - [`origin`]: where an entry comes from, for its `user.peerfs.*` attributes.

mod attrs;
mod heads;
mod inbox;
mod listing;
mod origin;
mod read;
mod table;
mod trim;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

use cid::Cid;
use libp2p::PeerId;

use crate::net::{NetHandle, RemoteBlocks};
use crate::seal::unseal::{Unsealer, Unsealing};
use crate::store::readahead::ReadAhead;
use crate::store::Blocks;
use crate::unixfs::{load_node, Node};
use crate::vfs::ino::{IPFS, PEERS, PEER_INO_BASE};
use crate::vfs::layout::IPFS_DIR;
use crate::vfs::{Attr, FsError};
use attrs::shown_attr;
use table::State;

pub use heads::Invalidation;
pub use origin::Origin;
pub use read::ReadData;

/// Failed reads and listings logged per minute at most (a failing `cp -r` fails many).
const FAILURES_LOGGED: u32 = 20;
/// How far up `path_of` names an inode's parents.
const MAX_PATH_DEPTH: usize = 256;

/// Failures the kernel's errno alone does not explain: a peer's data that does not
/// arrive or is refused, and a directory too big to list.
fn logged(e: &FsError) -> bool {
    matches!(e.errno(), libc::EIO | libc::EACCES | libc::EFBIG)
}

pub struct PeerView {
    local: Arc<dyn Blocks>,
    /// Reads cached leaves ahead of a sequential reader, as the drive does its own, into
    /// the handover the network's prefetches use.
    read_ahead: ReadAhead,
    recent: Mutex<VecDeque<(Cid, Arc<Vec<u8>>)>>,
    net: NetHandle,
    state: Mutex<State>,
    trim: trim::Trim,
    /// Most entries one directory's listing holds: a peer's directory is anyone's
    /// making, and its listing is held whole.
    listing_limit: usize,
    /// Since when failures are counted, and how many were logged since.
    failures_logged: Mutex<(Instant, u32)>,
    /// Opens the private folders this node is a reader of.
    unsealer: Arc<Unsealer>,
}

impl PeerView {
    /// A view that holds at most about `inode_limit` nodes (see [`trim`]), and lists
    /// directories of at most `listing_limit` entries.
    pub fn new(
        local: Arc<dyn Blocks>,
        net: NetHandle,
        inode_limit: usize,
        listing_limit: usize,
        unsealer: Arc<Unsealer>,
    ) -> PeerView {
        PeerView {
            unsealer,
            trim: trim::Trim::new(inode_limit),
            listing_limit,
            read_ahead: ReadAhead::handing_to(Arc::clone(&local), net.handover()),
            local,
            net,
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

    fn blocks(&self, owner: Option<PeerId>) -> Unsealing<RemoteBlocks> {
        self.blocks_of(owner, true)
    }

    /// `owner`'s blocks (anyone's for `None`), private folders opened where this node
    /// is a reader; with `fetch` false, only those here.
    fn blocks_of(&self, owner: Option<PeerId>, fetch: bool) -> Unsealing<RemoteBlocks> {
        Unsealing {
            inner: RemoteBlocks {
                local: Arc::clone(&self.local),
                net: self.net.clone(),
                owner,
                fetch,
            },
            unsealer: Arc::clone(&self.unsealer),
        }
    }

    /// Sealed blocks of private folders that did not open (`peerfs status`).
    pub fn unsealed_failures(&self) -> u64 {
        self.unsealer.tampered()
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
        self.lock().nodes.get(&ino).map_or(PEERS, |n| n.parent)
    }

    pub fn cid(&self, ino: u64) -> Result<Cid, FsError> {
        self.lock()
            .nodes
            .get(&ino)
            .ok_or(FsError::NotFound)?
            .cid
            .ok_or(FsError::NoAttribute)
    }

    /// Looks `name` up in `parent` (`peers/` itself, `ipfs/`, or a directory below).
    /// The kernel holds the entry found until it forgets it.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        match parent {
            IPFS => return self.lookup_cid(name),
            PEERS => {}
            _ => self.load_entry(parent, name)?,
        }
        let mut st = self.lock();
        st.touch(parent);
        let ino = if parent == PEERS {
            st.tops.get(name)
        } else {
            st.nodes.get(&parent).and_then(|p| p.known().get(name))
        };
        let ino = *ino.ok_or(FsError::NotFound)?;
        let n = st.nodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        n.lookups += 1;
        Ok(n.attr)
    }

    /// `ipfs/<name>`: the node of the CID `name` spells (any base, v0 or v1), fetched
    /// from whoever has it. A name that is no CID is not there.
    fn lookup_cid(&self, name: &[u8]) -> Result<Attr, FsError> {
        let cid = std::str::from_utf8(name)
            .ok()
            .and_then(|s| Cid::try_from(s).ok())
            .ok_or(FsError::NotFound)?;
        let attr = {
            let mut st = self.lock();
            if let Some(&ino) = st.cids.get(name) {
                st.touch(ino);
                if let Some(n) = st.nodes.get_mut(&ino) {
                    n.lookups += 1;
                    return Ok(n.attr);
                }
            }
            drop(st);
            self.node_attr(None, &cid).inspect_err(|e| {
                self.log_failure_at("looking up", &format!("{IPFS_DIR}/{cid}"), e)
            })?
        };
        let mut st = self.lock();
        // Another lookup of the same name may have added it meanwhile.
        let ino = match st.cids.get(name) {
            Some(&ino) if st.nodes.contains_key(&ino) => ino,
            _ => {
                let ino = st.add_node(None, IPFS, Some(cid), attr);
                st.cids.insert(name.to_vec(), ino);
                ino
            }
        };
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
        let (known, under_ipfs) = (node.cid.is_some(), node.parent == IPFS);
        // Nothing names a CID under ipfs/ once the kernel forgot it.
        let orphan = node.orphan || under_ipfs;
        // A peer whose head is unknown keeps its (empty) listing: there is none to load.
        if known || orphan {
            st.drop_below(ino);
        }
        if orphan {
            st.nodes.remove(&ino);
        }
        if under_ipfs {
            st.cids.retain(|_, i| *i != ino);
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
        let mut st = self.lock();
        st.touch(ino);
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

    /// Says in the log which file a failed read or listing was about (the network's
    /// line names the block and the peers asked), at most `FAILURES_LOGGED` a minute.
    fn log_failure(&self, doing: &str, ino: u64, e: &FsError) {
        if logged(e) {
            let path = self
                .path_of(ino)
                .map_or_else(|_| format!("(inode {ino})"), |p| p.display().to_string());
            self.log_failure_at(doing, &path, e);
        }
    }

    /// `log_failure` for a path named already.
    fn log_failure_at(&self, doing: &str, path: &str, e: &FsError) {
        if !logged(e) {
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
        warn!("{doing} {path} failed: {e}");
    }

    fn owner_cid(&self, ino: u64) -> Result<(Option<PeerId>, Cid), FsError> {
        let st = self.lock();
        let n = st.nodes.get(&ino).ok_or(FsError::NotFound)?;
        Ok((n.owner, n.cid.ok_or(FsError::NotFound)?))
    }

    fn node_attr(&self, owner: Option<PeerId>, cid: &Cid) -> Result<Attr, FsError> {
        let node = load_node(&self.blocks(owner), cid)?;
        Ok(shown_attr(&node, self.head_time(owner)))
    }

    /// When `owner` made the head shown (the epoch if none is known, or for a CID
    /// under `ipfs/`, which has no head).
    fn head_time(&self, owner: Option<PeerId>) -> SystemTime {
        let st = self.lock();
        owner
            .and_then(|o| st.heads.get(&o).map(|&(_, time)| time))
            .unwrap_or(UNIX_EPOCH)
    }
}
