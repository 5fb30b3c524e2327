//! Reading a peer's file: from recent blocks in memory, the store, or the network, with
//! the blocks ahead of a sequential reader asked for a window at a time.

use std::collections::VecDeque;
use std::ops::{Deref, Range};
use std::sync::{Arc, MutexGuard};

use cid::Cid;
use libp2p::PeerId;

use super::PeerView;
use crate::block::{Block, RAW};
use crate::net::RemoteBlocks;
use crate::seal::unseal::Unsealing;
use crate::store::{copy_part, Blocks, StoreError};
use crate::unixfs::{load_node, FileNode, FileReader, Node};
use crate::vfs::FsError;

/// How far ahead of a reader leaves are fetched when it starts (or jumps)...
const PREFETCH_WINDOW: u64 = 32 << 20;
/// ...and once it reads on from where it was: enough to keep several sources' windows
/// full at once (the fetch scheduler spreads the blocks over every holder).
const SEQUENTIAL_WINDOW: u64 = 96 << 20;
/// How many recently read blocks a view keeps: the kernel reads 128 KiB at a time, and
/// each leaf is 1 MiB, so without this every leaf would be loaded eight times.
const RECENT_BLOCKS: usize = 8;

impl PeerView {
    /// Reads up to `len` bytes at `offset`, and starts fetching what a sequential
    /// reader will want next. May wait on the network.
    pub fn read(&self, ino: u64, offset: u64, len: u32) -> Result<ReadData, FsError> {
        self.read_from(ino, offset, len, true)
            .inspect_err(|e| self.log_failure("reading", ino, e))
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
    fn prefetch_after(&self, ino: u64, owner: Option<PeerId>, root: &FileNode, pos: u64) {
        let from = {
            let mut st = self.lock();
            let Some(n) = st.nodes.get_mut(&ino) else {
                return;
            };
            // A reader that jumped back or far ahead starts a new window; one that
            // reads on gets a larger one, topped up every quarter.
            let window = if n.prefetched_to < pos || n.prefetched_to > pos + SEQUENTIAL_WINDOW {
                n.prefetched_to = pos;
                PREFETCH_WINDOW
            } else if n.prefetched_to > pos {
                SEQUENTIAL_WINDOW
            } else {
                PREFETCH_WINDOW
            };
            if n.prefetched_to >= pos + window * 3 / 4 || n.prefetched_to >= root.filesize {
                return;
            }
            let from = n.prefetched_to;
            n.prefetched_to = pos + window;
            (from, window)
        };
        let (from, window) = from;
        self.prefetch(owner, root, from, pos + window - from);
    }

    /// Asks for the blocks under `[from, from + window)`: from the network those that are
    /// not here yet, from the store (read ahead) the leaves that are. Nodes below the
    /// root are walked only when they are already local.
    fn prefetch(&self, owner: Option<PeerId>, node: &FileNode, from: u64, window: u64) {
        let mut pos = node.inline.len() as u64;
        let end = from.saturating_add(window);
        for (plain, size) in &node.children {
            // A private folder's block comes as its sealed form.
            let sealed = self.unsealer.sealed_of(plain);
            let cid = sealed.as_ref().unwrap_or(plain);
            let (start, stop) = (pos, pos + size);
            pos = stop;
            if stop <= from {
                continue;
            }
            if start >= end {
                break;
            }
            if plain.codec() == RAW {
                if self.local.has(cid).unwrap_or(false) && sealed.is_none() {
                    self.read_ahead.request([*cid]);
                } else {
                    self.net.prefetch(cid, owner);
                }
                continue;
            }
            // A sealed node is opened (and its children learnt) only through a read.
            let here = match sealed {
                Some(_) => Ok(None),
                None => self.local.get(cid),
            };
            match here {
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
                _ => self.net.prefetch(cid, owner),
            }
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
    inner: &'a Unsealing<RemoteBlocks>,
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
