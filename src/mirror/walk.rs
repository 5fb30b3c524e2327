//! Fetching a new head of a mirrored drive: only what the head held before does not
//! hold already. A subtree whose root CID the held head links to is all here (that head
//! was held in full, and its pin keeps it), so it is neither fetched nor read again:
//! a commit that changed one file costs that file and the directories above it, not a
//! read of the whole drive.

use std::collections::{HashSet, VecDeque};

use cid::Cid;

use crate::block::DAG_PB;
use crate::pin::PinError;
use crate::store::{Blocks, StoreError};
use crate::unixfs::dagpb::PbNode;

/// Blocks asked for at once: enough to keep a link busy (as the pin walk).
const WINDOW: usize = 128;

/// The keys (multihashes) of every block the tree under `root` links to, read from
/// `blocks` through its DAG-PB nodes only (the leaves are not read).
pub fn linked(blocks: &dyn Blocks, root: &Cid) -> Result<HashSet<Vec<u8>>, PinError> {
    let mut seen = HashSet::from([root.hash().to_bytes()]);
    let mut todo = vec![*root];
    while let Some(cid) = todo.pop() {
        if cid.codec() != DAG_PB {
            continue;
        }
        let data = blocks.get(&cid)?.ok_or(PinError::Missing(cid))?;
        let node = decode(&cid, &data)?;
        for link in node.links {
            if seen.insert(link.cid.hash().to_bytes()) {
                todo.push(link.cid);
            }
        }
    }
    Ok(seen)
}

/// How far a walk is: blocks and bytes read, and bytes of subtrees skipped as held.
#[derive(Clone, Copy, Debug, Default)]
pub struct Walked {
    pub blocks: u64,
    pub bytes: u64,
    pub skipped: u64,
}

/// Reads every block under `root` that `held` does not name, breadth first, in
/// windows; `ahead` gets the blocks about to be read (to fetch them at once), `keep`
/// each block read, `progress` the count after each window.
pub fn walk_new(
    blocks: &dyn Blocks,
    root: &Cid,
    held: &HashSet<Vec<u8>>,
    mut ahead: impl FnMut(&[Cid]),
    mut keep: impl FnMut(&Cid, &[u8]) -> Result<(), StoreError>,
    mut progress: impl FnMut(Walked),
) -> Result<Walked, PinError> {
    let mut done = Walked::default();
    if held.contains(&root.hash().to_bytes()) {
        return Ok(done);
    }
    let mut seen = HashSet::from([root.hash().to_bytes()]);
    let mut queue = VecDeque::from([*root]);
    let mut asked = 0;
    while !queue.is_empty() {
        // The next two windows asked for, so one is in flight while the other is read.
        let upto = queue.len().min(2 * WINDOW);
        if asked < upto {
            ahead(&queue.range(asked..upto).copied().collect::<Vec<_>>());
            asked = upto;
        }
        let window: Vec<Cid> = queue.drain(..queue.len().min(WINDOW)).collect();
        asked -= window.len();
        for cid in &window {
            let data = blocks.get(cid)?.ok_or(PinError::Missing(*cid))?;
            keep(cid, &data)?;
            if cid.codec() == DAG_PB {
                for link in decode(cid, &data)?.links {
                    let key = link.cid.hash().to_bytes();
                    if held.contains(&key) {
                        done.skipped += link.tsize.unwrap_or(0);
                    } else if seen.insert(key) {
                        queue.push_back(link.cid);
                    }
                }
            }
            done.blocks += 1;
            done.bytes += data.len() as u64;
        }
        progress(done);
    }
    Ok(done)
}

fn decode(cid: &Cid, data: &[u8]) -> Result<PbNode, PinError> {
    PbNode::decode(data).map_err(|e| PinError::Malformed {
        cid: *cid,
        why: e.to_string(),
    })
}
