//! A directory's entries, loaded on its first listing, each with the attributes of
//! its node; the child nodes missing here are asked for ahead. A lookup before that
//! loads only the entry it names (the shards on its path in a HAMT, and its node), so
//! `cat` of one file in a huge directory costs a few blocks, not the whole listing.

use std::collections::BTreeMap;
use std::time::SystemTime;

use cid::Cid;
use libp2p::PeerId;

use super::attrs::{locked_dir_attr, raw_file_attr, shown_attr};
use super::PeerView;
use crate::block::RAW;
use crate::net::RemoteBlocks;
use crate::seal::unseal::Unsealing;
use crate::store::{StoreError, Unavailable};
use crate::unixfs::{list_at_most, load_node, lookup, DirEntry, Error as UnixfsError};
use crate::vfs::{Attr, FsError, Kind};

/// A listing asks for the child nodes it lacks this many entries ahead of the one it
/// loads: the round trips overlap (the scheduler keeps as many requests out as the
/// owner's window holds), and a huge directory does not become a want per entry at
/// once. 256 made a cold `ls -l` of 10,000 entries wait 75 times, a round trip each.
const LISTING_AHEAD: usize = 2048;
/// ...and asks again once this many of them are loaded, in one command: the node's
/// loop dispatches them together, `MAX_WANT` nodes to a request, where a want sent per
/// entry loaded went out in requests of however many the loop found queued.
const LISTING_BATCH: usize = 1024;

impl PeerView {
    /// A directory's entries, loading them (and each child's node, for its attributes)
    /// on first use.
    pub(super) fn children(&self, ino: u64) -> Result<BTreeMap<Vec<u8>, u64>, FsError> {
        self.load_children(ino)?;
        self.lock()
            .nodes
            .get(&ino)
            .and_then(|n| n.children.clone())
            .ok_or(FsError::NotFound)
    }

    /// Makes sure a directory's listing is loaded.
    pub(super) fn load_children(&self, ino: u64) -> Result<(), FsError> {
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
        // Entries looked up before keep their inodes: the kernel may hold them.
        let mut found = st
            .nodes
            .get_mut(&ino)
            .map(|n| std::mem::take(&mut n.found))
            .unwrap_or_default();
        let mut children = BTreeMap::new();
        for (name, child_cid, attr) in loaded {
            // A name listed twice (a malformed directory) gets one node, not a stray one.
            if children.contains_key(&name) {
                continue;
            }
            let child = match found.remove(&name) {
                Some(child) => child,
                None => st.add_node(owner, ino, Some(child_cid), attr),
            };
            children.insert(name, child);
        }
        // None are left for the same directory node; kept anyway, so that they go with it.
        children.append(&mut found);
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.children = Some(children);
        }
        st.touch(ino);
        let size = st.nodes.len();
        drop(st);
        self.note_size(size);
        Ok(())
    }

    /// Makes sure the entry `name` of directory `ino` has a node, if there is one: from
    /// the listing once loaded, else that entry alone, found and kept in `found`.
    pub(super) fn load_entry(&self, ino: u64, name: &[u8]) -> Result<(), FsError> {
        let (owner, cid) = {
            let st = self.lock();
            let n = st.nodes.get(&ino).ok_or(FsError::NotFound)?;
            if n.attr.kind != Kind::Directory {
                return Err(FsError::NotADirectory);
            }
            if n.children.is_some() || n.found.contains_key(name) {
                return Ok(());
            }
            (n.owner, n.cid.ok_or(FsError::NotFound)?)
        };
        let (child_cid, attr) = self
            .find_entry(owner, &cid, name)?
            .ok_or(FsError::NotFound)?;
        let mut st = self.lock();
        // As in `load_children`: loaded meanwhile, or replaced by a new head.
        match st.nodes.get(&ino) {
            Some(n) if n.cid != Some(cid) => return Err(FsError::NotFound),
            Some(n) if n.children.is_some() || n.found.contains_key(name) => return Ok(()),
            Some(_) => {}
            None => return Err(FsError::NotFound),
        }
        let child = st.add_node(owner, ino, Some(child_cid), attr);
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.found.insert(name.to_vec(), child);
        }
        let size = st.nodes.len();
        drop(st);
        self.note_size(size);
        Ok(())
    }

    /// The entry `name` of directory `dir` and its attributes, loading only what leads
    /// to it: the directory's node, a HAMT's shards on the name's path, the child's node.
    pub(super) fn find_entry(
        &self,
        owner: Option<PeerId>,
        dir: &Cid,
        name: &[u8],
    ) -> Result<Option<(Cid, Attr)>, FsError> {
        let blocks = self.blocks(owner);
        let node = load_node(&blocks, dir)?;
        let Some(e) = lookup(&blocks, dir, &node, name)? else {
            return Ok(None);
        };
        let attr = entry_attr(&blocks, &e, self.head_time(owner))?;
        Ok(Some((e.cid, attr)))
    }

    /// A directory's entries with each one's attributes. Child nodes missing here are
    /// asked for `LISTING_AHEAD` entries ahead, so a listing costs a few round trips,
    /// not one per entry.
    pub(super) fn load_entries(
        &self,
        owner: Option<PeerId>,
        dir: &Cid,
    ) -> Result<Vec<(Vec<u8>, Cid, Attr)>, FsError> {
        let blocks = self.blocks(owner);
        let node = load_node(&blocks, dir)?;
        let entries = list_at_most(&blocks, dir, &node, self.listing_limit)?;
        let mut asked = 0;
        let time = self.head_time(owner);
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            // The next batch, once no more than `LISTING_AHEAD - LISTING_BATCH` are ahead.
            if asked < entries.len() && asked <= i + LISTING_AHEAD - LISTING_BATCH {
                let ahead = entries.len().min(i + LISTING_AHEAD);
                let mut missing = Vec::new();
                for next in entries.get(asked..ahead).unwrap_or_default() {
                    // A private folder's entries come as their sealed blocks.
                    let cid = blocks.source_of(&next.cid);
                    if next.cid.codec() != RAW && !self.local.has(&cid)? {
                        missing.push(cid);
                    }
                }
                self.net.prefetch_many(missing, owner);
                asked = ahead;
            }
            out.push((e.name.clone(), e.cid, entry_attr(&blocks, e, time)?));
        }
        Ok(out)
    }
}

/// What `stat` shows of a directory entry: a raw leaf's from its link, else its node's.
fn entry_attr(
    blocks: &Unsealing<RemoteBlocks>,
    e: &DirEntry,
    time: SystemTime,
) -> Result<Attr, FsError> {
    if e.cid.codec() == RAW {
        return Ok(raw_file_attr(e.tsize, time));
    }
    match load_node(blocks, &e.cid) {
        Ok(node) => Ok(shown_attr(&node, time)),
        // A private folder this node may not read: there, but closed.
        Err(UnixfsError::Store(StoreError::Unavailable {
            why: Unavailable::Refused,
            ..
        })) => Ok(locked_dir_attr(time)),
        Err(err) => Err(err.into()),
    }
}
