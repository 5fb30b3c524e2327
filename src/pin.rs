//! Pinning: fetching a whole DAG so that it stays, and `gc`, which deletes every block
//! that no pin and no head reaches.

use std::collections::{HashSet, VecDeque};

use cid::Cid;

use libp2p_identity::PeerId;

use crate::block::DAG_PB;
use crate::head::SignedHead;
use crate::head::{OWN_HEAD, PLAIN_HEAD};
use crate::store::rocks::RocksStore;
use crate::store::{Blocks, StoreError};
use crate::unixfs::dagpb::PbNode;

/// Blocks asked for at once while walking a tree: enough to keep a link busy.
const WINDOW: usize = 128;
/// Progress is told at least after each window, and within a window this often.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {0} is not in the store")]
    Missing(Cid),
    #[error("block {cid} is not a valid DAG-PB node: {why}")]
    Malformed { cid: Cid, why: String },
    #[error("{path}: {why}")]
    Path { path: String, why: String },
    #[error("committing the drive first: {0}")]
    Drive(#[source] crate::vfs::FsError),
    #[error("head record {name} is unreadable ({why}); gc stops rather than guess")]
    BadHead { name: String, why: String },
}

/// How far a walk has got: blocks and bytes so far, and the tree's size as its root
/// declares it (UnixFS links carry the cumulative size below them).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct WalkProgress {
    pub blocks: u64,
    pub bytes: u64,
    pub total: Option<u64>,
}

/// Reads every block of the DAG under `root` through `blocks`, in breadth-first
/// windows. Before each window is read, `ahead` is called with the blocks about to be
/// needed, so a network-backed store can ask for them all at once. `keep` gets each
/// block as it is read. Returns the number of blocks and bytes.
pub fn walk_tree(
    blocks: &dyn Blocks,
    root: &Cid,
    mut ahead: impl FnMut(&[Cid]),
    mut keep: impl FnMut(&Cid, &[u8]) -> Result<(), StoreError>,
    mut progress: impl FnMut(WalkProgress),
) -> Result<WalkProgress, PinError> {
    let mut seen = HashSet::from([root.hash().to_bytes()]);
    let mut queue = VecDeque::from([*root]);
    let mut asked = 0;
    let mut done = WalkProgress::default();
    let mut told = std::time::Instant::now();
    while !queue.is_empty() {
        // Ask for the next two windows, so one is in flight while the other is read.
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
                let node = PbNode::decode(&data).map_err(|e| PinError::Malformed {
                    cid: *cid,
                    why: e.to_string(),
                })?;
                if done.blocks == 0 {
                    let below: u64 = node.links.iter().map(|l| l.tsize.unwrap_or(0)).sum();
                    done.total = Some(data.len() as u64 + below);
                }
                for link in node.links {
                    if seen.insert(link.cid.hash().to_bytes()) {
                        queue.push_back(link.cid);
                    }
                }
            }
            done.blocks += 1;
            done.bytes += data.len() as u64;
            // A window of large leaves takes a while: say how far it is meanwhile.
            if told.elapsed() >= PROGRESS_EVERY {
                told = std::time::Instant::now();
                progress(done);
            }
        }
        progress(done);
    }
    Ok(done)
}

/// Pins `root` under `label`: reads its whole DAG through `blocks` (which may fetch),
/// claiming each block from the evictable cache as it goes, then records the pin.
/// `owner`: the peer whose drive the tree is in, whose rule its blocks stay under.
pub fn pin_tree(
    store: &RocksStore,
    blocks: &dyn Blocks,
    root: (&Cid, Option<PeerId>),
    label: &str,
    ahead: impl FnMut(&[Cid]),
    progress: impl FnMut(WalkProgress),
) -> Result<WalkProgress, PinError> {
    let claims = Claims::default();
    pin_tree_claiming(store, blocks, root, label, &claims, ahead, progress)
}

/// `pin_tree`, noting in `claims` the blocks it took from the cache or stored: if the
/// pin is cancelled, they go back (`release`).
pub fn pin_tree_claiming(
    store: &RocksStore,
    blocks: &dyn Blocks,
    (root, owner): (&Cid, Option<PeerId>),
    label: &str,
    claims: &Claims,
    ahead: impl FnMut(&[Cid]),
    progress: impl FnMut(WalkProgress),
) -> Result<WalkProgress, PinError> {
    let keep = |cid: &Cid, data: &[u8]| claims.keep(store, cid, data, owner);
    let done = walk_tree(blocks, root, ahead, keep, progress)?;
    // Fetched blocks were written without the write-ahead log; make them durable
    // before the pin says they are kept.
    store.finish_bulk()?;
    store.pin(root, label)?;
    Ok(done)
}

/// Resolves `path` below `root` and keeps every block on the way (directory nodes,
/// HAMT shards) out of the evictable cache, so a pinned subtree stays reachable by its
/// path when the owner is gone. Returns the CID the path names.
pub fn keep_path(
    store: &RocksStore,
    blocks: &dyn Blocks,
    (root, owner): (&Cid, PeerId),
    path: &str,
    claims: &Claims,
) -> Result<Cid, PinError> {
    let keeping = Keeping {
        inner: blocks,
        store,
        owner,
        claims,
    };
    let (cid, _) = crate::unixfs::resolve(&keeping, root, path).map_err(|e| PinError::Path {
        path: path.to_string(),
        why: e.to_string(),
    })?;
    Ok(cid)
}

/// A store that keeps every block read through it, as `owner`'s.
struct Keeping<'a> {
    inner: &'a dyn Blocks,
    store: &'a RocksStore,
    owner: PeerId,
    claims: &'a Claims,
}

impl Blocks for Keeping<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.inner.get(cid)?;
        if let Some(data) = &got {
            self.claims.keep(self.store, cid, data, Some(self.owner))?;
        }
        Ok(got)
    }
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.inner.has(cid)
    }
    fn put_many(&self, blocks: &[crate::block::Block], durable: bool) -> Result<(), StoreError> {
        self.inner.put_many(blocks, durable)
    }
    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        self.inner.delete_many(cids)
    }
}

/// The blocks a pin under way took out of the evictable cache (or stored), as its
/// walk kept them: a cancelled pin gives them back (`release`) rather than leave them
/// kept, unreachable from any pin, until a `gc` (which spares what a followed head
/// still reaches: for ever, for a drive that does not change).
#[derive(Default)]
pub struct Claims(std::sync::Mutex<Vec<Cid>>);

impl Claims {
    /// Keeps `cid` for good (`RocksStore::keep_block`), noting it if this claimed it.
    fn keep(
        &self,
        store: &RocksStore,
        cid: &Cid,
        data: &[u8],
        owner: Option<PeerId>,
    ) -> Result<(), StoreError> {
        if store.keep_block(cid, data, owner)? {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(*cid);
        }
        Ok(())
    }

    /// Blocks claimed so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Gives what a cancelled pin of `owner`'s blocks (none: a CID's) claimed back to the
/// evictable cache, but for what a pin, my head or the drive (`drive_roots`, its
/// uncommitted tree, read through `walk`) reaches. Returns the bytes given back.
pub fn release(
    store: &RocksStore,
    walk: &dyn Blocks,
    claims: &Claims,
    owner: Option<PeerId>,
    drive_roots: Vec<Cid>,
) -> Result<u64, PinError> {
    let claimed = std::mem::take(&mut *claims.0.lock().unwrap_or_else(|e| e.into_inner()));
    if claimed.is_empty() {
        return Ok(0);
    }
    let protected = live_blocks(store, walk, &[], drive_roots, &mut GcReport::default())?;
    Ok(store.recache(&claimed, owner, &protected)?)
}

/// Removes the label `target` from the pins that have it; failing that, the pins whose
/// CID is `target` or `resolved` (what a path in the mount names now), with all their
/// labels. Returns the CIDs whose pins changed.
pub fn unpin(
    store: &RocksStore,
    target: &str,
    resolved: Option<&Cid>,
) -> Result<Vec<Cid>, PinError> {
    let pins = store.pins()?;
    let mut changed = Vec::new();
    for (cid, label) in pins.iter().filter(|(_, l)| l == target) {
        if store.unpin_label(cid, label)? && !changed.contains(cid) {
            changed.push(*cid);
        }
    }
    if !changed.is_empty() {
        return Ok(changed);
    }
    for (cid, _) in &pins {
        if (cid.to_string() == target || Some(cid) == resolved) && !changed.contains(cid) {
            store.unpin(cid)?;
            changed.push(*cid);
        }
    }
    Ok(changed)
}

/// What a garbage collection did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub kept: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    /// Blocks that a pin or head reaches but that are not here (a followed drive is
    /// usually only partly cached; for our own drive, `fsck` says more).
    pub missing: u64,
    /// Stored heads of peers no longer followed, whose drives were not kept.
    pub unfollowed: u64,
    /// Private folders' memo entries of plaintext no longer stored.
    pub memo_trimmed: u64,
}

/// Deletes every block that no pin, no head of mine and no head of a peer in
/// `followed` reaches, then gives the space back to the disk. Only with the repo to
/// itself: the daemon's uncommitted blocks are reachable from nothing stored.
///
/// The head of a peer no longer followed stays stored (only its drive goes): should the
/// peer be followed again, it keeps an older head someone replays from being taken
/// for news.
pub fn collect_garbage(store: &RocksStore, followed: &[PeerId]) -> Result<GcReport, PinError> {
    let mut report = GcReport::default();
    let live = live_blocks(store, store, followed, Vec::new(), &mut report)?;
    let mut dead = Vec::new();
    store.for_each_block_key(|key| {
        if live.contains(key) {
            report.kept += 1;
        } else {
            dead.push(key.to_vec());
        }
        Ok(())
    })?;
    for batch in dead.chunks(1024) {
        report.removed_bytes += store.delete_keys(batch)?;
        report.removed += batch.len() as u64;
    }
    report.memo_trimmed = store.trim_sealed_memo()?;
    if report.removed > 0 {
        store.reclaim()?;
    }
    Ok(report)
}

/// `gc` while the daemon runs. Deletes the cached blocks of peers' drives that no pin
/// and no kept head reaches, and the blocks of our own that nothing reaches any more:
/// neither a pin, nor my head, nor what the drive holds that no head names yet
/// (`drive_roots`: its uncommitted tree and open files' chunks, asked for once the
/// sweep's guard is up, so what the drive writes after that is kept anyway). `walk`
/// reads the DAGs (the drive's staging: blocks not stored yet are there).
///
/// `None` when an import or pin is under way and `wait` is false: their blocks are
/// reachable from nothing until their pin is written.
pub fn collect_garbage_online(
    store: &RocksStore,
    walk: &dyn Blocks,
    followed: &[PeerId],
    drive_roots: impl FnOnce() -> Vec<Cid>,
    wait: bool,
) -> Result<Option<GcReport>, PinError> {
    let Some(guard) = store.begin_sweep(wait) else {
        return Ok(None);
    };
    let mut report = GcReport::default();
    let live = live_blocks(store, walk, followed, drive_roots(), &mut report)?;
    report.kept = live.len() as u64;
    (report.removed, report.removed_bytes) = store.drop_cached_except(&live)?;
    let mut dead = Vec::new();
    let mut sweep = |dead: &mut Vec<Vec<u8>>| -> Result<(), StoreError> {
        let (blocks, bytes) = store.sweep_own(dead, &guard)?;
        report.removed += blocks;
        report.removed_bytes += bytes;
        dead.clear();
        Ok(())
    };
    store.for_each_block_key(|key| {
        if !live.contains(key) {
            dead.push(key.to_vec());
            if dead.len() >= 1024 {
                sweep(&mut dead)?;
            }
        }
        Ok(())
    })?;
    sweep(&mut dead)?;
    report.memo_trimmed = store.trim_sealed_memo()?;
    drop(guard);
    if report.removed > 0 {
        store.reclaim()?;
    }
    Ok(Some(report))
}

/// The keys of every block a pin, my head or the head of a peer in `followed` reaches
/// (those here: what is not counts as `missing`).
fn live_blocks(
    store: &RocksStore,
    walk: &dyn Blocks,
    followed: &[PeerId],
    more_roots: Vec<Cid>,
    report: &mut GcReport,
) -> Result<HashSet<Vec<u8>>, PinError> {
    let followed: HashSet<String> = followed.iter().map(PeerId::to_string).collect();
    let mut roots: Vec<Cid> = store.pins()?.into_iter().map(|(c, _)| c).collect();
    for (name, record) in store.heads()? {
        if name != OWN_HEAD && name != PLAIN_HEAD && !followed.contains(&name) {
            report.unfollowed += 1;
            continue;
        }
        let head = SignedHead::verify(&record).map_err(|e| PinError::BadHead {
            name,
            why: e.to_string(),
        })?;
        roots.push(head.head().root);
    }
    roots.extend(more_roots);
    let mut live = HashSet::new();
    let mut todo = roots;
    while let Some(cid) = todo.pop() {
        if !live.insert(cid.hash().to_bytes()) || cid.codec() != DAG_PB {
            continue;
        }
        match walk.get(&cid)? {
            // A corrupt node stays for fsck to report; what it links to is unknown.
            Some(data) => {
                if let Ok(node) = PbNode::decode(&data) {
                    todo.extend(node.links.into_iter().map(|l| l.cid));
                }
            }
            None => report.missing += 1,
        }
    }
    Ok(live)
}
