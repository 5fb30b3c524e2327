//! Commits: what changed since the last commit, written as new directory blocks and a
//! signed head in one batch. Three steps, so that the drive's lock is held only for the
//! first and the last, and a commit never makes a reader or writer wait on its I/O:
//!
//! 1. [`snapshot`] (under the lock): the changed directories, innermost first, each with
//!    the names that changed and what they hold now; the changes leave the tree.
//! 2. [`Snapshot::build`] (no lock): the new directory nodes. A directory stored as a
//!    HAMT that stays one is edited along each changed name's hash path, so the cost
//!    follows the number of changes, not the directory's size; any other directory is
//!    rebuilt whole, which is cheap because it is below the shard threshold (or new).
//! 3. [`install`] (under the lock): each directory's new committed form; or, when the
//!    commit failed, its changes go back, for the next commit to retry.
//!
//! `Drive::commit` runs the three in order, one commit at a time (`commit_lock`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cid::Cid;

use super::staging::Staging;
use super::tree::{Body, Dir, State, StoredDir};
use super::{Commit, Drive};
use crate::block::{Block, DAG_PB};
use crate::head::{Head, SignedHead, OWN_HEAD, PLAIN_HEAD};
use crate::seal::publish::Publisher;
use crate::store::{BlockSink, Blocks, StoreError};
use crate::unixfs::build::{build_directory, Built, DirEntry};
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::data::Metadata;
use crate::unixfs::hamt::{self, ShardChange};
use crate::unixfs::node::Node;
use crate::unixfs::{load_node, ImportOptions};
use crate::vfs::ino::DRIVE_ROOT;
use crate::vfs::{panic_message, FsError};

/// The fewest bytes a link adds to the shard estimate besides its name: a CID of a
/// sha2-256 multihash (CIDv0) and nothing else. With the names' bytes it bounds the
/// estimate from below, so a large directory is known to stay a HAMT without summing.
const MIN_LINK_BYTES: u64 = 34;

impl Drive {
    /// The CID of an entry as of now: commits first if it has changed.
    pub fn cid(&self, ino: u64) -> Result<Cid, FsError> {
        let built = self
            .lock()
            .inodes
            .get(&ino)
            .ok_or(FsError::NotFound)?
            .built();
        if let Some(b) = built {
            return Ok(b.cid);
        }
        self.commit_with(true)?;
        let st = self.lock();
        let inode = st.inodes.get(&ino).ok_or(FsError::NotFound)?;
        // An unlinked directory is never rebuilt; say so rather than guess.
        inode.built().map(|b| b.cid).ok_or(FsError::NotFound)
    }

    /// Writes every changed directory and a new signed head in one batch. Returns
    /// `None` when nothing changed since the last commit.
    pub fn commit(&self) -> Result<Option<Commit>, FsError> {
        self.commit_with(false)
    }

    /// `force`: commit an untouched new drive too, so that its root has a CID.
    fn commit_with(&self, force: bool) -> Result<Option<Commit>, FsError> {
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(snap) = snapshot(&mut self.lock(), &self.staging, &self.opts, force) else {
            return Ok(None);
        };
        // A panic while building must not lose the changes the snapshot took.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            snap.build(&self.staging, &self.opts)
        }))
        .unwrap_or_else(|panic| Err(FsError::Bug(panic_message(&panic))));
        let written = built.and_then(|prepared| {
            let head = self.signed_head(snap.seq, prepared.root.cid);
            let publisher = self.publisher.get().filter(|p| !p.is_empty());
            // With private folders the plaintext root is mine only: what is published
            // (and announced) is sealed, in a second batch.
            let name = if publisher.is_some() {
                PLAIN_HEAD
            } else {
                OWN_HEAD
            };
            self.staging
                .commit(&prepared.blocks, name, head.encoded(), snap.epoch)?;
            let published = match publisher {
                Some(p) => Some(self.publish_sealed(p, &prepared.root, snap.seq)),
                None => None,
            };
            Ok((prepared, head, published))
        });
        let mut st = self.lock();
        match written {
            Ok((prepared, head, published)) => {
                st.seq = snap.seq;
                st.root = Some(prepared.root.cid);
                st.last_commit = Some(SystemTime::now());
                install(&mut st, snap, Some(&prepared));
                let head = match published {
                    None => head,
                    Some(Ok(sealed)) => sealed,
                    // The plaintext is committed; the published head stays the last
                    // one until a commit seals again.
                    Some(Err(e)) => {
                        tracing::error!("sealing private folders failed: {e}");
                        return Ok(None);
                    }
                };
                st.head = Some(head.clone());
                Ok(Some(Commit { head }))
            }
            Err(e) => {
                install(&mut st, snap, None);
                Err(e)
            }
        }
    }

    /// Commits, and publishes again even when nothing changed: the private folders or
    /// their readers did. `None` when there is no committed root yet.
    pub fn republish(&self) -> Result<Option<Commit>, FsError> {
        if let Some(c) = self.commit_with(true)? {
            return Ok(Some(c));
        }
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (seq, root) = {
            let st = self.lock();
            let Some(root) = st.root else {
                return Ok(None);
            };
            (st.seq + 1, root)
        };
        let plain = self.signed_head(seq, root);
        self.staging
            .store()
            .commit(&[], PLAIN_HEAD, plain.encoded())?;
        let head = match self.publisher.get() {
            Some(p) => self.publish_sealed(
                p,
                &Built {
                    cid: root,
                    tsize: 0,
                },
                seq,
            )?,
            None => {
                self.staging
                    .store()
                    .commit(&[], OWN_HEAD, plain.encoded())?;
                plain
            }
        };
        let mut st = self.lock();
        st.seq = seq;
        st.head = Some(head.clone());
        Ok(Some(Commit { head }))
    }

    fn signed_head(&self, seq: u64, root: Cid) -> SignedHead {
        Head {
            peer: self.key.public().to_peer_id(),
            seq,
            root,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            open: self.open.load(Ordering::Relaxed),
        }
        .sign_with_profile(&self.key, self.profile().as_ref())
    }

    /// Seals the private folders of plaintext `root` and commits the published head.
    fn publish_sealed(&self, p: &Publisher, root: &Built, seq: u64) -> Result<SignedHead, FsError> {
        let store = self.staging.store();
        let mut write = |batch: Vec<Block>| store.put_many(&batch, false);
        let published = p
            .publish(&self.staging, root, &self.opts, &mut write)
            .map_err(|e| FsError::Bug(format!("sealing: {e}")))?;
        let head = self.signed_head(seq, published.root.cid);
        store.commit(&published.blocks, OWN_HEAD, head.encoded())?;
        tracing::debug!(
            sealed = published.sealed,
            root = %published.root.cid,
            "published with private folders sealed"
        );
        Ok(head)
    }

    /// Whether uncommitted changes should be committed now: they have paused for
    /// `quiet` (a file was saved, a copy finished), or have gone on for `longest`.
    pub fn commit_due(&self, quiet: Duration, longest: Duration) -> bool {
        let st = self.lock();
        let (Some(first), Some(last)) = (st.dirty_since, st.last_change) else {
            return false;
        };
        st.changed() && (last.elapsed() >= quiet || first.elapsed() >= longest)
    }
}

/// Where a changed entry's new form comes from.
#[derive(Clone, Copy)]
enum Source {
    Built(Built),
    /// The directory planned at this index (built earlier in the same commit).
    Planned(usize),
}

enum Work {
    /// Edit the stored HAMT: each changed name set to its new entry, or removed.
    Edit(Vec<(Vec<u8>, Option<Source>)>),
    /// Build from every entry.
    Rebuild(Vec<(Vec<u8>, Source)>),
}

struct DirPlan {
    ino: u64,
    meta: Metadata,
    base: Option<StoredDir>,
    /// The names that changed, put back if the commit fails.
    names: BTreeSet<Vec<u8>>,
    work: Work,
}

/// What a commit writes, taken from the tree under the lock.
pub(super) struct Snapshot {
    /// Innermost first; the root last.
    dirs: Vec<DirPlan>,
    /// Staged blocks of the files and symlinks that changed.
    staged: Vec<Block>,
    /// The staging epoch the snapshot covers.
    pub epoch: u64,
    pub seq: u64,
}

/// Takes the changes out of the tree (`force`: commit even an unchanged root, so an
/// untouched drive gets a CID). `None` when there is nothing to commit.
fn snapshot(
    st: &mut State,
    staging: &Staging,
    opts: &ImportOptions,
    force: bool,
) -> Option<Snapshot> {
    let root = st.inodes.get(&DRIVE_ROOT)?;
    let unstored = matches!(&root.body, Body::Dir(Dir::Loaded(d)) if d.stored.is_none());
    let wanted = st.changed() || (force && unstored);
    if !wanted {
        return None;
    }
    let mut snap = Snapshot {
        dirs: Vec::new(),
        staged: Vec::new(),
        epoch: staging.begin_commit(),
        seq: st.seq + 1,
    };
    plan_dir(st, DRIVE_ROOT, staging, opts, &mut snap);
    for plan in &snap.dirs {
        if let Some(d) = st.loaded_dir(plan.ino) {
            d.changed = None;
        }
    }
    st.dirty_since = None;
    Some(snap)
}

/// Plans directory `ino` (and the changed directories below it); returns its index.
fn plan_dir(
    st: &State,
    ino: u64,
    staging: &Staging,
    opts: &ImportOptions,
    snap: &mut Snapshot,
) -> usize {
    let inode = &st.inodes[&ino];
    let Body::Dir(Dir::Loaded(dir)) = &inode.body else {
        unreachable!("only loaded directories are planned: a changed one is always loaded")
    };
    let names = dir.changed.clone().unwrap_or_default();
    let lower_bound = dir.name_bytes + MIN_LINK_BYTES * dir.children.len() as u64;
    let stays_shard = dir.stored.is_some_and(|s| s.shard) && lower_bound > opts.shard_threshold;
    let source = |name: &[u8], child: u64, snap: &mut Snapshot| -> Option<Source> {
        let c = st.inodes.get(&child)?;
        let changed = names.contains(name);
        match (&c.body, c.built()) {
            (Body::Dir(_), None) => Some(Source::Planned(plan_dir(st, child, staging, opts, snap))),
            (_, Some(built)) => {
                if changed {
                    staging.collect(&built.cid, &mut snap.staged);
                }
                Some(Source::Built(built))
            }
            (_, None) => None,
        }
    };
    let work = if stays_shard {
        let mut edits = Vec::with_capacity(names.len());
        for name in &names {
            let src = dir.children.get(name).and_then(|&c| source(name, c, snap));
            edits.push((name.clone(), src));
        }
        Work::Edit(edits)
    } else {
        let mut all = Vec::with_capacity(dir.children.len());
        for (name, &child) in &dir.children {
            if let Some(src) = source(name, child, snap) {
                all.push((name.clone(), src));
            }
        }
        Work::Rebuild(all)
    };
    snap.dirs.push(DirPlan {
        ino,
        meta: inode.meta(),
        base: dir.stored,
        names,
        work,
    });
    snap.dirs.len() - 1
}

/// The new blocks of one commit, before they are written.
pub(super) struct Prepared {
    pub root: Built,
    pub blocks: Vec<Block>,
    /// Each planned directory's new form, in plan order.
    results: Vec<StoredDir>,
}

impl Snapshot {
    /// Makes the new directory nodes; nothing is written yet.
    pub fn build(&self, staging: &Staging, opts: &ImportOptions) -> Result<Prepared, FsError> {
        let overlay = Overlay {
            new: Mutex::default(),
            base: staging,
        };
        let mut results: Vec<StoredDir> = Vec::with_capacity(self.dirs.len());
        for plan in &self.dirs {
            let resolve = |src: &Source| match src {
                Source::Built(b) => *b,
                Source::Planned(i) => results[*i].built,
            };
            let entry = |name: &[u8], src: &Source| {
                let b = resolve(src);
                DirEntry {
                    name: name.to_vec(),
                    cid: b.cid,
                    tsize: b.tsize,
                }
            };
            let mut sink = &overlay;
            let result = match (&plan.work, plan.base) {
                (Work::Edit(edits), Some(base)) => {
                    let changes = edits.iter().map(|(name, src)| match src {
                        Some(src) => ShardChange::Set(entry(name, src)),
                        None => ShardChange::Remove(name.clone()),
                    });
                    let built = hamt::edit(
                        &overlay,
                        &base.built.cid,
                        changes,
                        plan.meta,
                        opts,
                        &mut sink,
                    )?;
                    StoredDir { built, shard: true }
                }
                (Work::Edit(_), None) => unreachable!("only a stored HAMT is edited"),
                (Work::Rebuild(all), _) => {
                    let entries = all.iter().map(|(name, src)| entry(name, src)).collect();
                    let built = build_directory(entries, plan.meta, opts, &mut sink)?;
                    let shard = matches!(load_node(&overlay, &built.cid)?, Node::Shard(_));
                    StoredDir { built, shard }
                }
            };
            results.push(result);
        }
        let root = results.last().map(|r| r.built).ok_or(FsError::NotFound)?;
        let mut blocks = overlay.reachable(&root.cid);
        blocks.extend(self.staged.iter().cloned());
        Ok(Prepared {
            root,
            blocks,
            results,
        })
    }
}

/// Puts each directory's new form in place after a commit (`Some`), or its changes back
/// after a failed one (`None`). Changes made meanwhile stay, on top of the new form.
fn install(st: &mut State, snap: Snapshot, outcome: Option<&Prepared>) {
    for (i, plan) in snap.dirs.into_iter().enumerate() {
        let Some(dir) = st.loaded_dir(plan.ino) else {
            continue;
        };
        match outcome {
            Some(prepared) => dir.stored = Some(prepared.results[i]),
            None => dir.changed.get_or_insert_default().extend(plan.names),
        }
    }
    if outcome.is_none() {
        st.dirty_since.get_or_insert_with(std::time::Instant::now);
    }
}

/// The blocks a commit makes, over the blocks already staged or stored: each HAMT edit
/// reads the shards the one before wrote.
struct Overlay<'a> {
    new: Mutex<HashMap<Cid, Block>>,
    base: &'a Staging,
}

impl Overlay<'_> {
    fn new_blocks(&self) -> std::sync::MutexGuard<'_, HashMap<Cid, Block>> {
        // Every operation on the map is one insert or read.
        self.new.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The new blocks the tree under `root` reaches: intermediate versions (a shard
    /// rewritten by several edits) are left out.
    fn reachable(&self, root: &Cid) -> Vec<Block> {
        let mut new = self.new_blocks();
        let mut out = Vec::new();
        let mut todo = vec![*root];
        while let Some(cid) = todo.pop() {
            let Some(block) = new.remove(&cid) else {
                continue;
            };
            if cid.codec() == DAG_PB {
                if let Ok(node) = PbNode::decode(block.data()) {
                    todo.extend(node.links.iter().map(|l| l.cid));
                }
            }
            out.push(block);
        }
        out
    }
}

impl Blocks for Overlay<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(b) = self.new_blocks().get(cid) {
            return Ok(Some(b.data().to_vec()));
        }
        self.base.get(cid)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.new_blocks().contains_key(cid) || self.base.has(cid)?)
    }

    fn put_many(&self, blocks: &[Block], _durable: bool) -> Result<(), StoreError> {
        let mut new = self.new_blocks();
        for b in blocks {
            new.insert(*b.cid(), b.clone());
        }
        Ok(())
    }

    fn delete_many(&self, _cids: &[Cid]) -> Result<(), StoreError> {
        Ok(())
    }
}

impl BlockSink for &Overlay<'_> {
    fn put(&mut self, block: Block) -> Result<(), StoreError> {
        self.new_blocks().insert(*block.cid(), block);
        Ok(())
    }
}
