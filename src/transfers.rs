//! Long transfers the daemon runs (pins, inbox deliveries being fetched): one list,
//! kept in `REPO/transfers.json`, that says how far each is and from whom its blocks
//! came, and through which a user pauses, resumes, cancels or reprioritises one.
//!
//! The registry only keeps the records and the user's wishes; the worker doing a
//! transfer asks it (`gate`) before each block whether to go on, and waits while the
//! transfer is paused. The fetch scheduler serves a transfer's wants by its priority.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// The file, in the repo, the transfers are kept in.
pub const FILE: &str = "transfers.json";
/// Finished transfers listed at most (the newest).
const FINISHED_KEPT: usize = 16;
/// Progress is written to disk at most this often (state changes at once).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A transfer's number, unique in the repo.
pub type TransferId = u64;

/// Which transfer's wants the scheduler serves first when sources have no room for
/// all (a reader's own reads go before any).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl std::str::FromStr for Priority {
    type Err = TransferError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            _ => Err(TransferError::BadPriority(s.to_string())),
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `peerfs pin` or `setfattr -n user.peerfs.pin`.
    Pin,
    /// An item sent to my inbox, being fetched.
    Delivery,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting to be (re)started (after a restart, until its worker runs).
    Queued,
    Running,
    /// Asks for no blocks until resumed.
    Paused,
    Done,
    /// Given up; `error` says why.
    Failed,
}

/// Blocks and bytes one peer sent for a transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProgress {
    pub peer: String,
    pub blocks: u64,
    pub bytes: u64,
    /// Sent over Bitswap (a peer that speaks it and not our protocol).
    #[serde(default)]
    pub bitswap: bool,
}

/// What one peer sent a transfer lately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub blocks: u64,
    pub bytes: u64,
    /// Over Bitswap.
    pub bitswap: bool,
}

/// One line of `peerfs transfers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub kind: Kind,
    /// What is transferred: the path in the mount (or the CID) of a pin, the name of
    /// a delivery.
    pub what: String,
    /// The root of the DAG fetched.
    pub cid: String,
    /// Whose drive a pin is in, or who sent a delivery (a peer ID).
    pub peer: Option<String>,
    pub state: State,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    pub priority: Priority,
    /// Blocks and bytes of the DAG here so far (fetched or found here).
    pub blocks: u64,
    pub bytes: u64,
    /// The DAG's size as its root declares it, once the root is here.
    pub total_bytes: Option<u64>,
    /// Who sent its blocks, over all its runs.
    pub sources: Vec<SourceProgress>,
    /// Milliseconds since the Unix epoch.
    pub started_ms: u64,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// The path in the mount a pin was named by (its worker resolves the owner from
    /// it after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// What the worker knows it by (a delivery's sender and item ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What a new transfer is.
pub struct New {
    pub kind: Kind,
    pub what: String,
    pub cid: String,
    pub peer: Option<String>,
    pub priority: Priority,
    pub path: Option<PathBuf>,
    pub key: Option<String>,
}

/// What a user asks of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "change", content = "priority")]
pub enum Change {
    Pause,
    Resume,
    Cancel,
    Priority(Priority),
}

/// What a worker is to do before its next block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    Paused,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no transfer {0} (see `peerfs transfers`)")]
    NoSuch(TransferId),
    #[error("transfer {id} is {state:?}, so it cannot be {what}")]
    Finished {
        id: TransferId,
        state: State,
        what: &'static str,
    },
    #[error("{0:?}: not a priority (low, normal or high)")]
    BadPriority(String),
}

#[derive(Default, Serialize, Deserialize)]
struct Kept {
    next_id: TransferId,
    transfers: Vec<Transfer>,
}

struct Inner {
    kept: Kept,
    cancelled: HashSet<TransferId>,
    saved_at: Option<Instant>,
}

/// The daemon's transfers, kept on disk.
pub struct Transfers {
    path: PathBuf,
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Transfers {
    /// The transfers kept in `repo`. Those that were running when the daemon stopped
    /// are queued, to be started again; a file that does not parse is set aside.
    pub fn open(repo: &Path) -> Transfers {
        let path = repo.join(FILE);
        let mut kept: Kept = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!("{}: {e}; starting with no transfers", path.display());
                let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                Kept::default()
            }),
            Err(_) => Kept::default(),
        };
        for t in &mut kept.transfers {
            if t.state == State::Running {
                t.state = State::Queued;
            }
        }
        Transfers {
            path,
            inner: Mutex::new(Inner {
                kept,
                cancelled: HashSet::new(),
                saved_at: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change under the lock leaves the records whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the records out, whole, through a temp file.
    fn save(&self, inner: &mut Inner) {
        inner.saved_at = Some(Instant::now());
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&inner.kept)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            warn!("cannot keep the transfers in {}: {e}", self.path.display());
        }
    }

    /// Registers a transfer, running; or, when one with the same `key` is not
    /// finished, that one (a delivery tried again).
    pub fn start(&self, new: New) -> TransferId {
        let mut inner = self.lock();
        if let Some(t) = new.key.as_ref().and_then(|k| {
            inner
                .kept
                .transfers
                .iter_mut()
                .find(|t| t.key.as_ref() == Some(k) && !finished(t.state))
        }) {
            if t.state == State::Queued {
                t.state = State::Running;
            }
            return t.id;
        }
        inner.kept.next_id += 1;
        let id = inner.kept.next_id;
        inner.kept.transfers.push(Transfer {
            id,
            kind: new.kind,
            what: new.what,
            cid: new.cid,
            peer: new.peer,
            state: State::Running,
            error: None,
            priority: new.priority,
            blocks: 0,
            bytes: 0,
            total_bytes: None,
            sources: Vec::new(),
            started_ms: now_ms(),
            finished_ms: None,
            path: new.path,
            key: new.key,
        });
        self.save(&mut inner);
        id
    }

    /// A queued transfer's worker starts.
    pub fn resumed(&self, id: TransferId) {
        let mut inner = self.lock();
        if let Some(t) = find(&mut inner, id) {
            if t.state == State::Queued {
                t.state = State::Running;
            }
        }
    }

    /// How far the walk is (a walk begun again counts what is here again, so the
    /// figures never go back), and what peers sent since the last call.
    pub fn progress(
        &self,
        id: TransferId,
        walk: (u64, u64, Option<u64>),
        sent: &HashMap<String, Tally>,
    ) {
        let mut inner = self.lock();
        let Some(t) = find(&mut inner, id) else {
            return;
        };
        let (blocks, bytes, total) = walk;
        t.blocks = t.blocks.max(blocks);
        t.bytes = t.bytes.max(bytes);
        t.total_bytes = total.or(t.total_bytes);
        for (peer, n) in sent {
            match t.sources.iter_mut().find(|s| &s.peer == peer) {
                Some(s) => {
                    s.blocks += n.blocks;
                    s.bytes += n.bytes;
                    s.bitswap |= n.bitswap;
                }
                None => t.sources.push(SourceProgress {
                    peer: peer.clone(),
                    blocks: n.blocks,
                    bytes: n.bytes,
                    bitswap: n.bitswap,
                }),
            }
        }
        t.sources.sort_by_key(|s| std::cmp::Reverse(s.bytes));
        // The last figures of a paused transfer are what a restart shows.
        let paused = t.state != State::Running;
        if paused || inner.saved_at.is_none_or(|at| at.elapsed() >= SAVE_EVERY) {
            self.save(&mut inner);
        }
    }

    /// The transfer ended: done, or failed with why.
    pub fn finish(&self, id: TransferId, result: Result<(), String>) {
        let mut inner = self.lock();
        inner.cancelled.remove(&id);
        let Some(t) = find(&mut inner, id) else {
            return;
        };
        t.finished_ms = Some(now_ms());
        match result {
            Ok(()) => {
                t.state = State::Done;
                t.error = None;
                t.total_bytes = Some(t.total_bytes.unwrap_or(t.bytes).max(t.bytes));
            }
            Err(e) => {
                t.state = State::Failed;
                t.error = Some(e);
            }
        }
        // Only the newest finished ones stay listed.
        let mut finished_seen = 0;
        let list = &mut inner.kept.transfers;
        for i in (0..list.len()).rev() {
            if finished(list[i].state) {
                finished_seen += 1;
                if finished_seen > FINISHED_KEPT {
                    list.remove(i);
                }
            }
        }
        self.save(&mut inner);
    }

    /// Carries out a user's wish. A cancelled transfer leaves the list at once; its
    /// worker sees it at its next block.
    pub fn change(&self, id: TransferId, change: Change) -> Result<Transfer, TransferError> {
        let mut inner = self.lock();
        let t = find(&mut inner, id).ok_or(TransferError::NoSuch(id))?;
        let state = t.state;
        let refuse = |what| TransferError::Finished { id, state, what };
        let now = match change {
            Change::Pause if finished(t.state) => return Err(refuse("paused")),
            Change::Resume if finished(t.state) => return Err(refuse("resumed")),
            Change::Cancel if finished(t.state) => return Err(refuse("cancelled")),
            Change::Pause => {
                t.state = State::Paused;
                t.clone()
            }
            Change::Resume => {
                if t.state == State::Paused {
                    t.state = State::Running;
                }
                t.clone()
            }
            Change::Priority(p) => {
                t.priority = p;
                t.clone()
            }
            Change::Cancel => {
                let gone = t.clone();
                inner.kept.transfers.retain(|t| t.id != id);
                inner.cancelled.insert(id);
                gone
            }
        };
        self.save(&mut inner);
        drop(inner);
        self.changed.notify_all();
        Ok(now)
    }

    /// Whether the worker of `id` goes on.
    pub fn gate(&self, id: TransferId) -> Gate {
        let inner = self.lock();
        gate_of(&inner, id)
    }

    /// Waits while `id` is paused, at most `limit`; then says what to do.
    pub fn wait_while_paused(&self, id: TransferId, limit: Duration) -> Gate {
        let inner = self.lock();
        let (inner, _) = self
            .changed
            .wait_timeout_while(inner, limit, |inner| gate_of(inner, id) == Gate::Paused)
            .unwrap_or_else(|e| e.into_inner());
        gate_of(&inner, id)
    }

    /// The priority of `id` now.
    pub fn priority(&self, id: TransferId) -> Priority {
        let mut inner = self.lock();
        find(&mut inner, id).map_or_else(Priority::default, |t| t.priority)
    }

    pub fn get(&self, id: TransferId) -> Option<Transfer> {
        let mut inner = self.lock();
        find(&mut inner, id).cloned()
    }

    /// Every transfer listed, oldest first.
    pub fn list(&self) -> Vec<Transfer> {
        self.lock().kept.transfers.clone()
    }

    /// Transfers to start again after a restart (queued or paused), oldest first.
    pub fn unfinished(&self) -> Vec<Transfer> {
        let inner = self.lock();
        let list = inner.kept.transfers.iter();
        list.filter(|t| !finished(t.state)).cloned().collect()
    }
}

fn find(inner: &mut Inner, id: TransferId) -> Option<&mut Transfer> {
    inner.kept.transfers.iter_mut().find(|t| t.id == id)
}

fn gate_of(inner: &Inner, id: TransferId) -> Gate {
    if inner.cancelled.contains(&id) {
        return Gate::Cancelled;
    }
    match inner.kept.transfers.iter().find(|t| t.id == id) {
        Some(t) if t.state == State::Paused => Gate::Paused,
        Some(_) => Gate::Go,
        None => Gate::Cancelled,
    }
}

fn finished(state: State) -> bool {
    matches!(state, State::Done | State::Failed)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(what: &str) -> New {
        New {
            kind: Kind::Pin,
            what: what.into(),
            cid: "bafy".into(),
            peer: None,
            priority: Priority::Low,
            path: None,
            key: None,
        }
    }

    #[test]
    fn a_paused_transfer_stays_paused_across_a_restart_and_a_running_one_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transfers::open(dir.path());
        let a = t.start(pin("a"));
        let b = t.start(pin("b"));
        let tally = Tally {
            blocks: 3,
            bytes: 300,
            bitswap: false,
        };
        let sent = HashMap::from([("p".to_string(), tally)]);
        t.progress(a, (5, 500, Some(1000)), &sent);
        t.change(a, Change::Pause).unwrap();
        assert_eq!(t.gate(a), Gate::Paused);
        assert_eq!(t.gate(b), Gate::Go);
        drop(t);

        let t = Transfers::open(dir.path());
        let listed = t.list();
        assert_eq!(listed[0].state, State::Paused);
        assert_eq!((listed[0].blocks, listed[0].bytes), (5, 500));
        assert_eq!(listed[0].sources[0].blocks, 3);
        assert_eq!(listed[1].state, State::Queued);
        // A walk begun again does not set the figures back.
        t.progress(a, (1, 100, None), &HashMap::new());
        assert_eq!(t.get(a).unwrap().bytes, 500);
        assert_eq!(t.start(pin("c")), b + 1);
    }

    #[test]
    fn a_cancelled_transfer_leaves_the_list_and_its_waiting_worker_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::sync::Arc::new(Transfers::open(dir.path()));
        let a = t.start(pin("a"));
        t.change(a, Change::Pause).unwrap();
        let waiter = {
            let t = std::sync::Arc::clone(&t);
            std::thread::spawn(move || t.wait_while_paused(a, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        t.change(a, Change::Cancel).unwrap();
        assert_eq!(waiter.join().unwrap(), Gate::Cancelled);
        assert!(t.list().is_empty());
        assert!(matches!(
            t.change(a, Change::Resume),
            Err(TransferError::NoSuch(_))
        ));
    }

    #[test]
    fn finished_transfers_cannot_be_paused_and_only_the_newest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transfers::open(dir.path());
        let ids: Vec<_> = (0..FINISHED_KEPT + 3)
            .map(|i| t.start(pin(&i.to_string())))
            .collect();
        for id in &ids {
            t.finish(*id, Ok(()));
        }
        assert_eq!(t.list().len(), FINISHED_KEPT);
        assert_eq!(t.list()[0].id, ids[3]);
        assert!(t.change(ids[5], Change::Pause).is_err());
    }

    #[test]
    fn a_delivery_tried_again_is_the_same_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transfers::open(dir.path());
        let new = || New {
            key: Some("peer/item".into()),
            kind: Kind::Delivery,
            ..pin("x")
        };
        let a = t.start(new());
        assert_eq!(t.start(new()), a);
        t.finish(a, Err("gone".into()));
        assert_ne!(t.start(new()), a);
    }
}
