//! Which peers are shown, and a peer's new head: its tree moves to the new root, the
//! inodes the kernel knows keep their numbers, and what changed is returned for the
//! kernel to drop.

use std::collections::BTreeMap;

use cid::Cid;
use libp2p::PeerId;

use super::attrs::{empty_dir_attr, head_time, shown_attr};
use super::PeerView;
use crate::head::Head;
use crate::unixfs::diff::{diff, Diff};
use crate::unixfs::load_node;
use crate::vfs::ino::PEERS;
use crate::vfs::{Attr, FsError, Kind};

/// What the kernel must drop after a head change.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// The name `name` in directory `parent` changed (added, removed or replaced).
    Entry { parent: u64, name: Vec<u8> },
    /// The inode's content or attributes changed.
    Inode(u64),
}

impl PeerView {
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
            self.lock().heads.insert(peer, (h.seq, head_time(h)));
        }
        // Only what is here: a peer being added must not wait on the network.
        let attr = match root.and_then(|r| load_node(self.local.as_ref(), &r).ok()) {
            Some(node) => shown_attr(&node, self.head_time(Some(peer))),
            None => empty_dir_attr(),
        };
        let mut st = self.lock();
        let ino = st.add_node(Some(peer), PEERS, root, attr);
        st.tops.insert(name.as_bytes().to_vec(), ino);
        vec![Invalidation::Entry {
            parent: PEERS,
            name: name.as_bytes().to_vec(),
        }]
    }

    /// The root shown for the peer called `name`, once its head is known.
    pub fn root_of(&self, name: &str) -> Option<Cid> {
        let st = self.lock();
        let top = st.tops.get(name.as_bytes())?;
        st.nodes.get(top)?.cid
    }

    /// What changed in `owner`'s drive from `old` to `new` (at most `limit` entries),
    /// fetching the blocks it needs from the owner or whoever has them.
    pub fn diff(&self, owner: PeerId, old: &Cid, new: &Cid, limit: usize) -> Result<Diff, FsError> {
        Ok(diff(&self.blocks(Some(owner)), old, new, limit)?)
    }

    /// Stops showing the peer called `name`.
    pub fn remove_peer(&self, name: &str) -> Vec<Invalidation> {
        let mut st = self.lock();
        let Some(top) = st.tops.remove(name.as_bytes()) else {
            return Vec::new();
        };
        if let Some(owner) = st.nodes.get(&top).and_then(|n| n.owner) {
            st.heads.remove(&owner);
        }
        st.orphan([top]);
        vec![Invalidation::Entry {
            parent: PEERS,
            name: name.as_bytes().to_vec(),
        }]
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
                .find(|ino| st.nodes.get(ino).is_some_and(|n| n.owner == Some(peer)))
        };
        let Some(top) = top else {
            return Vec::new();
        };
        self.lock().heads.insert(peer, (head.seq, head_time(head)));
        // A peer seen for the first time shows its root at once; its attributes follow.
        if let Some(n) = self.lock().nodes.get_mut(&top).filter(|n| n.cid.is_none()) {
            n.cid = Some(root);
            n.children = None;
        }
        let mut out = Vec::new();
        let attr = self.node_attr(Some(peer), &root).ok();
        self.retarget(top, root, attr, &mut out);
        out
    }

    /// Points `ino` at `cid`; for a loaded directory, diffs its entries too.
    pub(super) fn retarget(
        &self,
        ino: u64,
        cid: Cid,
        attr: Option<Attr>,
        out: &mut Vec<Invalidation>,
    ) {
        let (owner, old_children, found) = {
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
            (n.owner, n.children.take(), std::mem::take(&mut n.found))
        };
        let Some(old) = old_children else {
            return self.retarget_found(ino, owner, cid, attr, found, out);
        };
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

    /// `retarget` of a directory whose listing was never loaded, only entries looked up
    /// in it: each is looked up again in the new one (a few blocks), the listing still
    /// not loaded. An entry gone or of another kind is invalidated and released (freed,
    /// or orphaned while the kernel holds it).
    fn retarget_found(
        &self,
        ino: u64,
        owner: Option<PeerId>,
        cid: Cid,
        attr: Option<Attr>,
        found: BTreeMap<Vec<u8>, u64>,
        out: &mut Vec<Invalidation>,
    ) {
        let still_dir = attr.is_some_and(|a| a.kind == Kind::Directory);
        let mut kept = BTreeMap::new();
        for (name, child) in found {
            let new = still_dir
                .then(|| self.find_entry(owner, &cid, &name).ok().flatten())
                .flatten();
            let kind = self.lock().nodes.get(&child).map(|n| n.attr.kind);
            match new {
                Some((child_cid, child_attr)) if kind == Some(child_attr.kind) => {
                    self.retarget(child, child_cid, Some(child_attr), out);
                    kept.insert(name, child);
                }
                // Gone, another kind, or not loadable now (looked up again on next use).
                _ => {
                    self.lock().release_found([child]);
                    out.push(Invalidation::Entry { parent: ino, name });
                }
            }
        }
        let mut st = self.lock();
        let Some(n) = st.nodes.get_mut(&ino) else {
            return;
        };
        // A lookup or listing meanwhile (of the new directory) made its own nodes.
        if n.children.is_some() || kept.keys().any(|k| n.found.contains_key(k)) {
            st.release_found(kept.values().copied());
            out.extend(
                kept.into_keys()
                    .map(|name| Invalidation::Entry { parent: ino, name }),
            );
        } else {
            n.found.append(&mut kept);
        }
    }
}
