//! What changed between two versions of a tree: entries added, changed and removed,
//! found by walking only where the two differ (a subtree with the same CID is the same
//! subtree), so the cost follows the change, not the tree. A directory added or removed
//! is one change, not one per entry inside it.

use cid::Cid;

use super::{list_at_most, load_node, Error, Node, LISTING_LIMIT};
use crate::block::RAW;
use crate::store::Blocks;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

impl EntryKind {
    /// As `--json` output spells it.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// One changed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// From the tree's root, components joined with `/`.
    pub path: Vec<u8>,
    pub change: ChangeKind,
    /// The new entry's kind (the old one's, for a removal).
    pub kind: EntryKind,
    /// A file's size, a symlink target's length; `None` for a directory.
    pub size: Option<u64>,
    /// The new entry (the old one, for a removal).
    pub cid: Cid,
}

/// The changes found, in path order; `complete` is false when more than the limit
/// changed and the walk stopped there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub complete: bool,
}

/// The changes from `old` to `new`, at most `limit` of them. `old`'s blocks that are
/// missing only cost the detail of a removal (its kind is taken as a file); `new`'s
/// blocks must be readable.
pub fn diff(blocks: &dyn Blocks, old: &Cid, new: &Cid, limit: usize) -> Result<Diff, Error> {
    let mut walk = Walk {
        blocks,
        limit,
        out: Vec::new(),
    };
    let complete = walk.entry(Vec::new(), Some(*old), Some(*new))?;
    Ok(Diff {
        changes: walk.out,
        complete,
    })
}

struct Walk<'b> {
    blocks: &'b dyn Blocks,
    limit: usize,
    out: Vec<Change>,
}

/// What a diff needs of a node: its kind and size, and for a directory the node.
struct Seen {
    kind: EntryKind,
    size: Option<u64>,
    dir: Option<Node>,
}

impl Walk<'_> {
    fn seen(&self, cid: &Cid) -> Result<Seen, Error> {
        if cid.codec() == RAW {
            let size = self.blocks.get(cid)?.ok_or(Error::Missing(*cid))?.len();
            return Ok(Seen {
                kind: EntryKind::File,
                size: Some(size as u64),
                dir: None,
            });
        }
        Ok(match load_node(self.blocks, cid)? {
            Node::File(f) => Seen {
                kind: EntryKind::File,
                size: Some(f.filesize),
                dir: None,
            },
            Node::Symlink { target, .. } => Seen {
                kind: EntryKind::Symlink,
                size: Some(target.len() as u64),
                dir: None,
            },
            dir => Seen {
                kind: EntryKind::Directory,
                size: None,
                dir: Some(dir),
            },
        })
    }

    /// Records a change; false once the limit is reached.
    fn push(&mut self, path: &[u8], change: ChangeKind, cid: Cid, seen: &Seen) -> bool {
        if self.out.len() >= self.limit {
            return false;
        }
        self.out.push(Change {
            path: path.to_vec(),
            change,
            kind: seen.kind,
            size: seen.size,
            cid,
        });
        true
    }

    /// Compares the entry at `path` in both versions; false once the limit is reached.
    fn entry(&mut self, path: Vec<u8>, old: Option<Cid>, new: Option<Cid>) -> Result<bool, Error> {
        if old == new {
            return Ok(true);
        }
        // The old version's blocks may be gone (never fetched, or collected): a removal
        // is then taken as a file's, and a directory's old entries as none.
        let unknown = Seen {
            kind: EntryKind::File,
            size: None,
            dir: None,
        };
        match (old, new) {
            (None, None) => Ok(true),
            (Some(o), None) => {
                let was = self.seen(&o).unwrap_or(unknown);
                Ok(self.push(&path, ChangeKind::Removed, o, &was))
            }
            (None, Some(n)) => {
                let now = self.seen(&n)?;
                Ok(self.push(&path, ChangeKind::Added, n, &now))
            }
            (Some(o), Some(n)) => {
                let now = self.seen(&n)?;
                let Ok(was) = self.seen(&o) else {
                    return match &now.dir {
                        Some(new_dir) => self.directory(&path, None, (&n, new_dir)),
                        None => Ok(self.push(&path, ChangeKind::Changed, n, &now)),
                    };
                };
                match (&was.dir, &now.dir) {
                    (Some(old_dir), Some(new_dir)) => {
                        self.directory(&path, Some((&o, old_dir)), (&n, new_dir))
                    }
                    _ if was.kind == now.kind => Ok(self.push(&path, ChangeKind::Changed, n, &now)),
                    _ => Ok(self.push(&path, ChangeKind::Removed, o, &was)
                        && self.push(&path, ChangeKind::Added, n, &now)),
                }
            }
        }
    }

    /// Both versions' entries of a directory, joined by name.
    fn directory(
        &mut self,
        path: &[u8],
        old: Option<(&Cid, &Node)>,
        (new_cid, new): (&Cid, &Node),
    ) -> Result<bool, Error> {
        // An old listing that cannot be read is taken as empty: what is there now shows
        // as added.
        let old_entries = old
            .and_then(|(cid, node)| list_at_most(self.blocks, cid, node, LISTING_LIMIT).ok())
            .unwrap_or_default();
        let new_entries = list_at_most(self.blocks, new_cid, new, LISTING_LIMIT)?;
        let (mut a, mut b) = (old_entries.iter().peekable(), new_entries.iter().peekable());
        loop {
            let (name, o, n) = match (a.peek(), b.peek()) {
                (None, None) => return Ok(true),
                (Some(x), Some(y)) if x.name == y.name => {
                    let step = (x.name.clone(), Some(x.cid), Some(y.cid));
                    a.next();
                    b.next();
                    step
                }
                (Some(x), Some(y)) if x.name < y.name => {
                    let step = (x.name.clone(), Some(x.cid), None);
                    a.next();
                    step
                }
                (Some(x), None) => {
                    let step = (x.name.clone(), Some(x.cid), None);
                    a.next();
                    step
                }
                (_, Some(y)) => {
                    let step = (y.name.clone(), None, Some(y.cid));
                    b.next();
                    step
                }
            };
            let mut child = path.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            if !self.entry(child, o, n)? {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBlocks;
    use crate::unixfs::testing::{dir, symlink as link};
    use crate::unixfs::{DirEntry, Metadata};

    fn file(store: &MemoryBlocks, content: &[u8]) -> DirEntry {
        crate::unixfs::testing::file(store, content, Metadata::default())
    }

    fn summary(d: &Diff) -> Vec<(String, ChangeKind, EntryKind, Option<u64>)> {
        d.changes
            .iter()
            .map(|c| {
                let path = String::from_utf8_lossy(&c.path).into_owned();
                (path, c.change, c.kind, c.size)
            })
            .collect()
    }

    #[test]
    fn finds_what_was_added_changed_and_removed_and_nothing_else() {
        let s = MemoryBlocks::default();
        // A big directory (sharded) that changes in one entry, and one that does not.
        let many = |s: &MemoryBlocks, extra: bool| {
            let mut e: Vec<(String, DirEntry)> = (0..20)
                .map(|i| (format!("f{i:02}"), file(s, format!("{i}").as_bytes())))
                .collect();
            if extra {
                e.push(("new".into(), file(s, b"fresh")));
            }
            let e = e.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
            dir(s, e)
        };
        let old = dir(
            &s,
            vec![
                ("same", many(&s, false)),
                ("big", many(&s, false)),
                ("gone", dir(&s, vec![("x", file(&s, b"x"))])),
                ("edit.txt", file(&s, b"one")),
                ("kind", file(&s, b"was a file")),
            ],
        );
        let new = dir(
            &s,
            vec![
                ("same", many(&s, false)),
                ("big", many(&s, true)),
                ("edit.txt", file(&s, b"three")),
                ("kind", link(&s, "edit.txt")),
                ("made", dir(&s, vec![("y", file(&s, b"y"))])),
            ],
        );
        let d = diff(&s, &old.cid, &new.cid, 100).unwrap();
        use {ChangeKind::*, EntryKind::*};
        assert_eq!(
            summary(&d),
            vec![
                ("big/new".into(), Added, File, Some(5)),
                ("edit.txt".into(), Changed, File, Some(5)),
                ("gone".into(), Removed, Directory, None),
                ("kind".into(), Removed, File, Some(10)),
                ("kind".into(), Added, Symlink, Some(8)),
                ("made".into(), Added, Directory, None),
            ]
        );
        assert!(d.complete);
        assert_eq!(diff(&s, &new.cid, &new.cid, 100).unwrap().changes, vec![]);
        // At the limit the walk stops and says so.
        let d = diff(&s, &old.cid, &new.cid, 2).unwrap();
        assert_eq!((d.changes.len(), d.complete), (2, false));
    }

    #[test]
    fn an_old_version_whose_blocks_are_gone_still_gives_the_new_entries() {
        let s = MemoryBlocks::default();
        let other = MemoryBlocks::default();
        let old = dir(&other, vec![("a", file(&other, b"a"))]);
        let new = dir(&s, vec![("b", file(&s, b"b"))]);
        let d = diff(&s, &old.cid, &new.cid, 10).unwrap();
        let paths: Vec<_> = d
            .changes
            .iter()
            .map(|c| (c.path.clone(), c.change))
            .collect();
        assert_eq!(paths, vec![(b"b".to_vec(), ChangeKind::Added)]);
    }
}
