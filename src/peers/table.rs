//! The view's inode table: one node per entry the kernel may hold, each knowing its
//! owner, its CID and, once listed, its children (before that, those looked up). Nodes
//! go when the kernel forgets them, or when no listing names them any more; a directory
//! records when it was last used, so that the least recently used can be handed back
//! to the kernel to drop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use cid::Cid;
use libp2p::PeerId;

use crate::unixfs::FileNode;
use crate::vfs::ino::{IPFS, PEERS};
use crate::vfs::Attr;

pub(super) struct PeerNode {
    /// Whose drive it is in; `None` under `ipfs/` (anyone may hold it).
    pub owner: Option<PeerId>,
    pub parent: u64,
    /// `None` for a followed peer whose head we have not seen yet.
    pub cid: Option<Cid>,
    pub attr: Attr,
    /// The whole listing, loaded on first listing.
    pub children: Option<BTreeMap<Vec<u8>, u64>>,
    /// Entries looked up one by one while the listing is not loaded (empty once it is):
    /// the kernel may hold them, so the listing takes them over, inodes and all.
    pub found: BTreeMap<Vec<u8>, u64>,
    /// A file's root node, kept after the first read.
    pub file: Option<Arc<FileNode>>,
    /// How far ahead of the reader blocks have been asked for.
    pub prefetched_to: u64,
    /// Lookups answered since the kernel last forgot the inode. Entries of a
    /// `readdirplus` reach the kernel without one, so this may count low, never high:
    /// the kernel's forget (sent when it evicts the inode) brings it to zero.
    pub lookups: u64,
    /// No listing names it any more (a peer removed, an entry gone in a new head): it
    /// goes once the kernel forgets it.
    pub orphan: bool,
    /// The table's clock when the node was last listed or looked into.
    pub used: u64,
    /// The kernel was asked to drop it; not asked again before it is used again.
    pub trimmed: bool,
}

impl PeerNode {
    /// The entries known of a directory: its listing once loaded, else those found by
    /// lookup.
    pub(super) fn known(&self) -> &BTreeMap<Vec<u8>, u64> {
        self.children.as_ref().unwrap_or(&self.found)
    }
}

#[derive(Default)]
pub(super) struct State {
    /// Peer name → the inode of its drive's root.
    pub tops: BTreeMap<Vec<u8>, u64>,
    /// A CID, as looked up under `ipfs/` → its inode; held while the kernel holds it.
    pub cids: BTreeMap<Vec<u8>, u64>,
    pub nodes: HashMap<u64, PeerNode>,
    pub next_ino: u64,
    /// The head shown of each peer: its seq, and when the peer made it (the time of
    /// its entries that record none).
    pub heads: HashMap<PeerId, (u64, SystemTime)>,
    /// Counts uses, for `PeerNode::used`.
    pub clock: u64,
    /// The inode of `DIR/inbox/`, once an inbox root is shown (see `inbox`).
    pub inbox: Option<u64>,
}

impl State {
    /// A new inode under `parent`; returns its number.
    pub(super) fn add_node(
        &mut self,
        owner: Option<PeerId>,
        parent: u64,
        cid: Option<Cid>,
        attr: Attr,
    ) -> u64 {
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
                found: BTreeMap::new(),
                file: None,
                prefetched_to: 0,
                lookups: 0,
                orphan: false,
                used: self.clock,
                trimmed: false,
            },
        );
        ino
    }

    /// Records a use of `ino` (a listing, a lookup in it).
    pub(super) fn touch(&mut self, ino: u64) {
        self.clock += 1;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.used = self.clock;
            n.trimmed = false;
        }
    }

    /// The least recently used directories whose listings, dropped, bring the table
    /// down to `target` nodes, marked as trimmed. Listings already trimmed (their
    /// forget not yet here) count as gone. A directory's listing is counted, not what
    /// is loaded below it: the kernel drops a directory's subtree with it, so this
    /// frees at least what it counts.
    pub(super) fn least_used_dirs(&mut self, target: usize) -> Vec<u64> {
        let mut pending = 0;
        let mut dirs = Vec::new();
        for (&ino, n) in &self.nodes {
            let len = n.known().len();
            if n.trimmed {
                pending += len;
            } else if len > 0 && n.cid.is_some() && !n.orphan {
                dirs.push((n.used, ino, len));
            }
        }
        let mut excess = self.nodes.len().saturating_sub(target + pending);
        dirs.sort_unstable();
        let mut chosen = Vec::new();
        for (_, ino, len) in dirs {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(len);
            chosen.push(ino);
        }
        for ino in &chosen {
            if let Some(n) = self.nodes.get_mut(ino) {
                n.trimmed = true;
            }
        }
        chosen
    }

    /// The parent of `ino` and its name there, if a listing still names it.
    pub(super) fn entry_of(&self, ino: u64) -> Option<(u64, &[u8])> {
        let parent = self.nodes.get(&ino)?.parent;
        let siblings = match parent {
            PEERS => &self.tops,
            IPFS => &self.cids,
            _ => self.nodes.get(&parent)?.known(),
        };
        let name = siblings.iter().find(|(_, &i)| i == ino)?.0;
        Some((parent, name))
    }

    /// Removes the nodes below `ino` (the kernel holds none of them).
    pub(super) fn drop_below(&mut self, ino: u64) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        let found = std::mem::take(&mut n.found);
        let children = n.children.take().unwrap_or_default();
        for child in children.into_values().chain(found.into_values()) {
            self.drop_below(child);
            self.nodes.remove(&child);
        }
    }

    /// Frees entries found by lookup (never through a listing) that no directory names
    /// any more. Their lookup counts are exact, as `readdirplus` never handed them out:
    /// those the kernel holds none of go now, the others once it forgets them.
    pub(super) fn release_found(&mut self, inos: impl IntoIterator<Item = u64>) {
        for ino in inos {
            match self.nodes.get_mut(&ino) {
                Some(n) if n.lookups == 0 => {
                    self.drop_below(ino);
                    self.nodes.remove(&ino);
                }
                Some(n) => n.orphan = true,
                None => {}
            }
        }
    }

    /// Marks inodes no listing names any more. What the kernel may still hold of them
    /// (an open file, a directory below) keeps working until it forgets them.
    pub(super) fn orphan(&mut self, inos: impl IntoIterator<Item = u64>) {
        for ino in inos {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.orphan = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{cid_of, RAW};
    use crate::peers::attrs::empty_dir_attr;
    use cid::Version;

    fn node(st: &mut State, parent: u64, what: &[u8]) -> u64 {
        let cid = cid_of(Version::V1, RAW, what);
        st.add_node(None, parent, Some(cid), empty_dir_attr())
    }

    /// `node`, as a lookup in `parent` adds it: named in the parent's `found`.
    fn found(st: &mut State, parent: u64, name: &[u8]) -> u64 {
        let ino = node(st, parent, name);
        st.nodes
            .get_mut(&parent)
            .unwrap()
            .found
            .insert(name.to_vec(), ino);
        ino
    }

    #[test]
    fn entries_found_by_lookup_are_named_counted_and_dropped_with_their_directory() {
        let mut st = State {
            next_ino: 1000,
            ..State::default()
        };
        let dir = node(&mut st, IPFS, b"dir");
        st.cids.insert(b"dir".to_vec(), dir);
        let sub = found(&mut st, dir, b"sub");
        let below = found(&mut st, sub, b"below");

        assert_eq!(st.entry_of(below), Some((sub, &b"below"[..])));
        assert_eq!(st.entry_of(sub), Some((dir, &b"sub"[..])));
        // Trimming counts what a lookup added, as it does a listing.
        assert_eq!(st.least_used_dirs(0).len(), 2);

        st.drop_below(dir);
        assert_eq!(st.nodes.len(), 1, "only the directory itself is left");
        assert!(st.nodes[&dir].found.is_empty());
    }

    #[test]
    fn an_entry_found_by_lookup_and_gone_goes_now_unless_the_kernel_holds_it() {
        let mut st = State::default();
        let dir = node(&mut st, IPFS, b"dir");
        let held = node(&mut st, dir, b"held");
        let forgotten = node(&mut st, dir, b"forgotten");
        let below = found(&mut st, forgotten, b"below");
        st.nodes.get_mut(&held).unwrap().lookups = 1;
        st.release_found([held, forgotten]);
        assert!(st.nodes[&held].orphan);
        assert!(!st.nodes.contains_key(&forgotten) && !st.nodes.contains_key(&below));
    }
}
