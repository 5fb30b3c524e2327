//! Search across drives: walk a tree and keep the entries whose name, kind, size and
//! modification time a query accepts. The walk reads directory blocks and each entry's
//! root block (for its kind, size and time) through any `Blocks`, so a daemon's
//! fetching store makes it work on peers' drives block by block; a subtree whose
//! blocks cannot be had is counted and skipped, never the end of the search.

mod query;
#[cfg(test)]
mod tests;
pub mod wire;

pub use query::{parse_kind, Matcher, Newer, Query, QueryError, SizeTest};

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::block::RAW;
use crate::store::Blocks;
use crate::unixfs::diff::EntryKind;
use crate::unixfs::{list_at_most, load_node, Node, LISTING_LIMIT};

/// An entry the query accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// From the tree's root, components joined with `/`.
    pub path: String,
    pub kind: EntryKind,
    /// A file's size, a symlink target's length; `None` for a directory.
    pub size: Option<u64>,
    /// Seconds since the Unix epoch, when the entry records one.
    pub mtime: Option<i64>,
    pub cid: String,
}

/// What a search went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walked {
    pub entries: u64,
    pub matches: u64,
    /// Entries whose blocks could not be read (their subtrees were skipped).
    pub unreadable: u64,
}

/// What the caller says after each match or progress report.
pub enum Next {
    Go,
    Stop,
}

/// What a search reports to its caller as it goes.
pub struct Hooks<F, P, A> {
    /// Each entry the query accepts; may stop the walk.
    pub found: F,
    /// Every `PROGRESS_EVERY` entries, and once at the end; may stop the walk.
    pub progress: P,
    /// The entries of each directory listed, before their root blocks are read: a
    /// fetching store can ask for them all at once.
    pub ahead: A,
}

/// Walks the tree under `root`, depth first in name order (the root itself is not an
/// entry).
pub fn search<F, P, A>(
    blocks: &dyn Blocks,
    root: &Cid,
    query: &Matcher,
    hooks: Hooks<F, P, A>,
) -> Walked
where
    F: FnMut(Found) -> Next,
    P: FnMut(&Walked) -> Next,
    A: FnMut(&[Cid]),
{
    let Hooks {
        mut found,
        mut progress,
        mut ahead,
    } = hooks;
    let mut walked = Walked::default();
    // Directories still to list: their path and CID. A stack keeps memory to the
    // directories on the way down and their unlisted siblings.
    let mut pending = vec![(String::new(), *root)];
    while let Some((dir_path, dir_cid)) = pending.pop() {
        // A directory too big to hold is skipped like one that cannot be read.
        let listed = load_node(blocks, &dir_cid)
            .and_then(|n| list_at_most(blocks, &dir_cid, &n, LISTING_LIMIT));
        let entries = match listed {
            Ok(e) => e,
            Err(_) => {
                walked.unreadable += 1;
                continue;
            }
        };
        let roots: Vec<Cid> = entries
            .iter()
            .map(|e| e.cid)
            .filter(|c| c.codec() != RAW)
            .collect();
        ahead(&roots);
        let mut subdirs = Vec::new();
        for e in entries {
            walked.entries += 1;
            if walked.entries % PROGRESS_EVERY == 0 {
                if let Next::Stop = progress(&walked) {
                    return walked;
                }
            }
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let path = if dir_path.is_empty() {
                name.clone()
            } else {
                format!("{dir_path}/{name}")
            };
            let Some(seen) = describe(blocks, &e.cid, e.tsize) else {
                walked.unreadable += 1;
                continue;
            };
            if seen.kind == EntryKind::Directory {
                subdirs.push((path.clone(), e.cid));
            }
            if query.accepts(&name, seen.kind, seen.size, seen.mtime) {
                walked.matches += 1;
                let hit = Found {
                    path,
                    kind: seen.kind,
                    size: seen.size,
                    mtime: seen.mtime,
                    cid: e.cid.to_string(),
                };
                if let Next::Stop = found(hit) {
                    return walked;
                }
            }
        }
        // Popped last first: the first name's subtree is walked next.
        pending.extend(subdirs.into_iter().rev());
    }
    progress(&walked);
    walked
}

/// Entries walked between progress reports.
const PROGRESS_EVERY: u64 = 1000;

struct Seen {
    kind: EntryKind,
    size: Option<u64>,
    mtime: Option<i64>,
}

/// An entry's kind, size and time, from its root block; a raw leaf is a file whose
/// size the link already says (its Tsize is its length), so it is not read.
fn describe(blocks: &dyn Blocks, cid: &Cid, tsize: u64) -> Option<Seen> {
    if cid.codec() == RAW {
        return Some(Seen {
            kind: EntryKind::File,
            size: Some(tsize),
            mtime: None,
        });
    }
    let node = load_node(blocks, cid).ok()?;
    let mtime = node.meta().mtime.map(|m| m.secs);
    let (kind, size) = match &node {
        Node::File(f) => (EntryKind::File, Some(f.filesize)),
        Node::Symlink { target, .. } => (EntryKind::Symlink, Some(target.len() as u64)),
        Node::Directory(_) | Node::Shard(_) => (EntryKind::Directory, None),
    };
    Some(Seen { kind, size, mtime })
}
