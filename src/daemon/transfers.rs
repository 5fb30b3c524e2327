//! Pins and deliveries as transfers (`crate::transfers`): the blocks they fetch are
//! asked for in the transfer's name (its priority, its per-source tally), a pause
//! stops the walk and drops what it asked for and was not sent yet, a resume walks
//! again (what is here is not fetched again), a cancel ends it. After a restart, the
//! pins that had not finished start again (a paused one waits, paused).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use tracing::{info, warn};

use super::control::Response;
use super::follow::stored_head;
use super::handlers::Context;
use crate::net::fetch::Claim;
use crate::net::{NetHandle, RemoteBlocks};
use crate::pin::{self, PinError, WalkProgress};
use crate::store::{Blocks, StoreError, Unavailable};
use crate::transfers::{Change, Gate, Kind, New, Priority, Transfer, TransferId, Transfers};

/// A paused transfer's client hears from it this often (it waits for an answer, and
/// gives up after two minutes of silence).
const PAUSED_HEARTBEAT: Duration = Duration::from_secs(5);
/// Fetched blocks are cached without the write-ahead log, and a crash loses what the
/// memtable held (up to 64 MiB): a transfer makes them durable after this many bytes
/// arrived, so that after a crash it fetches again little of what it had.
const DURABLE_EVERY: u64 = 8 << 20;
/// How often what arrived for a transfer is counted (and made durable) while it runs.
const TICK: Duration = Duration::from_millis(200);

/// What a transfer's worker tells whoever asked for it: how far the walk is, and
/// the transfer's record.
pub(super) type Tell<'a> = dyn FnMut(WalkProgress, Option<Transfer>) + 'a;

/// How a transfer ended.
pub(super) enum Outcome<T, E> {
    Done(T),
    Failed(E),
    Cancelled,
}

/// Runs `attempt` until it succeeds, fails or the transfer is cancelled. While the
/// transfer is paused, its wants not asked yet are dropped and nothing is asked; an
/// attempt cut short by a pause is made again when it is resumed. `idle` is called
/// now and then while paused.
pub(super) fn drive<T, E>(
    transfers: &Transfers,
    net: &NetHandle,
    id: TransferId,
    mut attempt: impl FnMut() -> Result<T, E>,
    mut idle: impl FnMut(),
) -> Outcome<T, E> {
    loop {
        match transfers.gate(id) {
            Gate::Go => {}
            Gate::Cancelled => {
                net.forget_transfer(id);
                return Outcome::Cancelled;
            }
            Gate::Paused => {
                net.forget_transfer(id);
                loop {
                    match transfers.wait_while_paused(id, PAUSED_HEARTBEAT) {
                        Gate::Paused => idle(),
                        Gate::Go => break,
                        Gate::Cancelled => {
                            net.forget_transfer(id);
                            return Outcome::Cancelled;
                        }
                    }
                }
                continue;
            }
        }
        match attempt() {
            Ok(v) => return Outcome::Done(v),
            // A walk stopped by a pause or cancel ends in an error; the gate says which.
            Err(e) if transfers.gate(id) == Gate::Go => return Outcome::Failed(e),
            Err(_) => {}
        }
    }
}

/// Blocks read for a transfer: fetched in its name, and none while it is paused or
/// cancelled (the walk reading them stops with an error).
pub(crate) struct ForTransfer<'a> {
    inner: RemoteBlocks,
    transfers: &'a Transfers,
    id: TransferId,
    /// How far the walk is.
    walked: Mutex<WalkProgress>,
    /// Bytes fetched for it since they were last made durable.
    not_durable: AtomicU64,
}

impl<'a> ForTransfer<'a> {
    pub(crate) fn new(inner: RemoteBlocks, transfers: &'a Transfers, id: TransferId) -> Self {
        ForTransfer {
            inner,
            transfers,
            id,
            walked: Mutex::default(),
            not_durable: AtomicU64::new(0),
        }
    }

    /// The claim its blocks are asked for with, or none when it is to stop.
    pub(crate) fn claim(&self) -> Option<Claim> {
        (self.transfers.gate(self.id) == Gate::Go).then(|| Claim {
            transfer: self.id,
            priority: self.transfers.priority(self.id),
        })
    }

    /// Prefetches those of `cids` not here, in the transfer's name.
    pub(crate) fn ahead(&self, cids: &[Cid]) {
        let Some(claim) = self.claim() else {
            return;
        };
        for c in cids {
            if !self.inner.local.has(c).unwrap_or(true) {
                self.inner
                    .net
                    .prefetch_for(c, self.inner.owner, Some(claim));
            }
        }
    }

    /// Notes how far the walk is, and who sent what since the last time.
    pub(crate) fn progress(&self, p: WalkProgress) {
        *self.walked.lock().unwrap_or_else(|e| e.into_inner()) = p;
        self.tick();
    }

    /// Runs `walk` with a ticker beside it: what arrives is counted (and made durable)
    /// also while the walk waits for a block (fetches run ahead of it).
    pub(crate) fn walking<T>(&self, walk: impl FnOnce() -> T) -> T {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut waited = Duration::ZERO;
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    waited += Duration::from_millis(50);
                    if waited >= TICK {
                        waited = Duration::ZERO;
                        self.tick();
                    }
                }
            });
            let out = walk();
            done.store(true, Ordering::Relaxed);
            // Where a walk stopped by a pause got to.
            self.tick();
            out
        })
    }

    fn tick(&self) {
        let p = *self.walked.lock().unwrap_or_else(|e| e.into_inner());
        let sent = self.inner.net.take_transfer_sources(self.id);
        let fetched: u64 = sent.values().map(|n| n.bytes).sum();
        if self.not_durable.fetch_add(fetched, Ordering::Relaxed) + fetched >= DURABLE_EVERY {
            self.not_durable.store(0, Ordering::Relaxed);
            if let Err(e) = self.inner.local.finish_bulk() {
                warn!(
                    "transfer {}: cannot make fetched blocks durable: {e}",
                    self.id
                );
            }
        }
        self.transfers
            .progress(self.id, (p.blocks, p.bytes, p.total), &sent);
    }
}

impl Blocks for ForTransfer<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        match self.claim() {
            Some(claim) => self.inner.get_for(cid, Some(claim)),
            None => Err(StoreError::Unavailable {
                cid: *cid,
                why: Unavailable::Stopped,
            }),
        }
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

impl Context {
    /// Pins `cid` (named at `path` in the mount, if it was) as a new transfer, and
    /// waits for it to end.
    pub(super) fn pin(
        &self,
        cid: &str,
        path: Option<&Path>,
        priority: Priority,
        tell: &mut Tell<'_>,
    ) -> Response {
        let root: Cid = match cid.parse() {
            Ok(c) => c,
            Err(e) => return error_response(format!("{cid}: not a CID ({e})")),
        };
        let label = path.map_or_else(|| root.to_string(), |p| p.display().to_string());
        let owner = path.and_then(|p| self.owner_of(p)).map(|(peer, _)| peer);
        let id = self.transfers.start(New {
            kind: Kind::Pin,
            what: label,
            cid: root.to_string(),
            peer: owner.map(|p| p.to_string()),
            priority,
            path: path.map(Path::to_path_buf),
            key: None,
        });
        self.run_pin(id, root, path, tell)
    }

    /// Carries out pin transfer `id` to its end.
    fn run_pin(
        &self,
        id: TransferId,
        root: Cid,
        path: Option<&Path>,
        tell: &mut Tell<'_>,
    ) -> Response {
        let label = path.map_or_else(|| root.to_string(), |p| p.display().to_string());
        let tell = RefCell::new(tell);
        let last = RefCell::new(WalkProgress::default());
        // Across attempts: a walk after a resume finds what the first one claimed kept.
        let claims = pin::Claims::default();
        let outcome = drive(
            &self.transfers,
            &self.net,
            id,
            || {
                self.pin_once(id, root, path, &claims, &mut |p, t| {
                    *last.borrow_mut() = p;
                    (tell.borrow_mut())(p, t);
                })
            },
            || (tell.borrow_mut())(*last.borrow(), self.transfers.get(id)),
        );
        match outcome {
            Outcome::Done((cid, done)) => {
                self.transfers.finish(id, Ok(()));
                Response::Pinned {
                    cid: cid.to_string(),
                    blocks: done.blocks,
                    bytes: done.bytes,
                }
            }
            Outcome::Failed(e) => {
                self.transfers.finish(id, Err(e.to_string()));
                error_response(format!("pinning {label}: {e}"))
            }
            Outcome::Cancelled => {
                let owner = path.and_then(|p| self.owner_of(p)).map(|(peer, _)| peer);
                self.release(&label, &claims, owner);
                error_response(format!("pinning {label}: cancelled"))
            }
        }
    }

    /// What cancelled pin `label` claimed goes back to the evictable cache, but for
    /// what something else keeps. With another pin or an import under way, it stays
    /// for `gc`: that walk may have passed those blocks as kept, not claiming them.
    fn release(&self, label: &str, claims: &pin::Claims, owner: Option<libp2p::PeerId>) {
        let Some(_no_pins) = self.store.no_pins_under_way() else {
            info!(
                "pin of {label} cancelled; its {} blocks stay until gc (another pin is under way)",
                claims.len()
            );
            return;
        };
        let roots = self.drive.live_roots();
        match pin::release(&self.store, self.drive.blocks(), claims, owner, roots) {
            Ok(bytes) => info!("pin of {label} cancelled; {bytes} bytes back in the cache"),
            Err(e) => warn!("pin of {label} cancelled; its blocks stay until gc: {e}"),
        }
    }

    /// One walk of a pin: reads its whole DAG (fetching in the transfer's name what is
    /// not here), claiming each block from the evictable cache, then records the pin.
    fn pin_once(
        &self,
        id: TransferId,
        mut root: Cid,
        path: Option<&Path>,
        claims: &pin::Claims,
        tell: &mut Tell<'_>,
    ) -> Result<(Cid, WalkProgress), PinError> {
        let label = path.map_or_else(|| root.to_string(), |p| p.display().to_string());
        // What it claims is reachable from nothing until its pin is written.
        let _no_sweep = self.store.hold_off_sweeps();
        let in_peer = path.and_then(|p| self.owner_of(p));
        let owner = in_peer.as_ref().map(|(peer, _)| *peer);
        let remote = RemoteBlocks {
            local: self.store.clone(),
            net: self.net.clone(),
            owner,
            fetch: true,
        };
        let blocks = ForTransfer::new(remote, &self.transfers, id);
        // Under peers/, the directories above the pinned tree stay too, so that its
        // path still opens when the owner is gone.
        if let Some((peer, below)) = &in_peer {
            if let Some(peer_head) = stored_head(self.store.as_ref(), &peer.to_string()) {
                let at = (&peer_head.root, *peer);
                root = pin::keep_path(&self.store, &blocks, at, below, claims)?;
            }
        }
        let progress = |p: WalkProgress| {
            blocks.progress(p);
            tell(p, self.transfers.get(id));
        };
        let ahead = |cids: &[Cid]| blocks.ahead(cids);
        let done = blocks.walking(|| {
            pin::pin_tree_claiming(
                &self.store,
                &blocks,
                (&root, owner),
                &label,
                claims,
                ahead,
                progress,
            )
        })?;
        // The last blocks' senders.
        blocks.progress(done);
        Ok((root, done))
    }

    /// A user's change to a transfer; the scheduler hears of a new priority at once.
    pub(super) fn change_transfer(&self, id: TransferId, change: Change) -> Response {
        match self.transfers.change(id, change) {
            Ok(t) => {
                match change {
                    Change::Priority(p) => self.net.reprioritize(id, p),
                    Change::Pause | Change::Cancel => self.net.forget_transfer(id),
                    Change::Resume => {}
                }
                Response::Transfer(t)
            }
            Err(e) => error_response(e),
        }
    }
}

/// Starts again, each on a thread of its own, the pins that had not finished when the
/// daemon stopped (a paused one waits, paused).
pub(super) fn resume_pins(context: Arc<Context>) {
    for t in context.transfers.unfinished() {
        if t.kind != Kind::Pin {
            continue;
        }
        let Ok(root) = t.cid.parse::<Cid>() else {
            warn!("transfer {}: {:?} is not a CID; dropped", t.id, t.cid);
            let _ = context.transfers.change(t.id, Change::Cancel);
            continue;
        };
        let context = Arc::clone(&context);
        std::thread::spawn(move || {
            context.transfers.resumed(t.id);
            let path: Option<PathBuf> = t.path.clone();
            match context.run_pin(t.id, root, path.as_deref(), &mut |_, _| {}) {
                Response::Error { message } => warn!("transfer {}: {message}", t.id),
                _ => info!("transfer {}: pinned {}", t.id, t.what),
            }
        });
    }
}

fn error_response(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
    }
}
