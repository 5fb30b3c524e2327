//! `DIR/inbox/`: the items peers sent me, as a read-only tree. The daemon builds a
//! UnixFS directory of them (`inbox/<sender>/<name>`, each item's root linked in once
//! all its blocks are here) and shows its root here; a new root moves the tree as a
//! peer's new head does, so the inodes the kernel holds keep their numbers.

use cid::Cid;

use super::attrs::shown_attr;
use super::heads::Invalidation;
use super::PeerView;
use crate::unixfs::load_node;
use crate::vfs::ino::MOUNT_ROOT;
use crate::vfs::layout::INBOX_DIR;
use crate::vfs::{Attr, FsError};

/// How deep below `inbox/` the parents of a read file are walked, at most.
const MAX_DEPTH: usize = 256;

impl PeerView {
    /// Shows `root` (a directory here, in the local store) as `DIR/inbox/`.
    pub fn show_inbox(&self, root: Cid) -> Vec<Invalidation> {
        let attr = load_node(self.local.as_ref(), &root)
            .ok()
            .map(|n| shown_attr(&n, std::time::SystemTime::now()));
        let existing = self.lock().inbox;
        match existing {
            Some(ino) => {
                let mut out = Vec::new();
                self.retarget(ino, root, attr, &mut out);
                out
            }
            None => {
                let Some(attr) = attr else { return Vec::new() };
                let mut st = self.lock();
                let ino = st.add_node(None, MOUNT_ROOT, Some(root), attr);
                st.inbox = Some(ino);
                vec![Invalidation::Entry {
                    parent: MOUNT_ROOT,
                    name: INBOX_DIR.as_bytes().to_vec(),
                }]
            }
        }
    }

    /// Takes `inbox/<folder>/<name>` out of its folder's listing at once: the user
    /// deleted it. The new inbox root that follows may orphan the folder itself (its
    /// last item gone), and an orphan keeps its listing for whoever still holds it;
    /// without this, a lookup through the kernel's cached folder would still find the
    /// item until the kernel is told.
    pub fn drop_inbox_entry(&self, folder: &str, name: &str) {
        let folder_ino = {
            let st = self.lock();
            let Some(inbox) = st.inbox else { return };
            st.nodes
                .get(&inbox)
                .and_then(|n| n.known().get(folder.as_bytes()).copied())
        };
        let Some(folder_ino) = folder_ino else { return };
        // Not listed yet, a lookup would find the name again in the folder's node: its
        // listing (here, and small) is loaded for the name to leave it.
        let _ = self.load_children(folder_ino);
        let mut st = self.lock();
        let gone = st
            .nodes
            .get_mut(&folder_ino)
            .and_then(|n| n.children.as_mut())
            .and_then(|c| c.remove(name.as_bytes()));
        st.orphan(gone);
    }

    /// `DIR/inbox/` looked up by the kernel, which holds it until it forgets it.
    pub fn lookup_inbox(&self) -> Result<Attr, FsError> {
        let mut st = self.lock();
        let ino = st.inbox.ok_or(FsError::NotFound)?;
        let n = st.nodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        n.lookups += 1;
        Ok(n.attr)
    }

    /// `DIR/inbox/`'s attributes, for the mount root's listing.
    pub fn inbox_attr(&self) -> Option<Attr> {
        let st = self.lock();
        st.nodes.get(&st.inbox?).map(|n| n.attr)
    }

    /// For a directory `inbox/<sender>/` or one below it: the sender's folder name,
    /// and the names from it down to `ino` (none for the folder itself).
    pub fn inbox_path_of(&self, ino: u64) -> Option<(String, Vec<String>)> {
        let st = self.lock();
        let inbox = st.inbox?;
        let mut names = Vec::new();
        let mut at = ino;
        for _ in 0..MAX_DEPTH {
            let (parent, name) = st.entry_of(at)?;
            let name = String::from_utf8_lossy(name).into_owned();
            if parent == inbox {
                names.reverse();
                return Some((name, names));
            }
            names.push(name);
            at = parent;
        }
        None
    }

    /// For a file somewhere under `inbox/<sender>/<item>`: the sender's folder name and
    /// the item's name. `None` for anything else.
    pub fn inbox_item_of(&self, ino: u64) -> Option<(String, String)> {
        let st = self.lock();
        let inbox = st.inbox?;
        let mut chain = vec![ino];
        let mut at = ino;
        for _ in 0..MAX_DEPTH {
            let parent = st.nodes.get(&at)?.parent;
            if parent == inbox {
                break;
            }
            if !crate::vfs::ino::is_peer_ino(parent) {
                return None;
            }
            chain.push(parent);
            at = parent;
        }
        // chain ends [.., item, sender]
        let n = chain.len();
        if n < 2 {
            return None;
        }
        let name = |i: u64| {
            st.entry_of(i)
                .map(|(_, name)| String::from_utf8_lossy(name).into_owned())
        };
        Some((name(chain[n - 1])?, name(chain[n - 2])?))
    }
}
