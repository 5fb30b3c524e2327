//! The live feed behind `peerfs watch`: what happens as it happens (a followed drive's
//! new head and what changed in it, followed peers connecting and going away, items
//! arriving in my inbox, delivered and read from my outbox), kept in
//! a bounded ring. A watcher reads from its own position; one that falls behind the
//! ring is told how many events it missed, and the daemon's memory stays the same.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Events the ring keeps for watchers that are behind.
const KEPT: usize = 4096;

/// One event, as `peerfs watch --json` prints it (one object per line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// When the daemon saw it, RFC 3339 (UTC).
    pub time: String,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// The watch is on: every event from here is delivered (or counted as missed).
    Watching,
    /// A followed peer's new head.
    Head {
        peer: String,
        peer_id: String,
        seq: u64,
        root: String,
    },
    /// An entry of a followed drive added, changed or removed (`path` from the drive's
    /// root; the mount shows it under `peers/<peer>/`).
    Added(Entry),
    Changed(Entry),
    Removed(Entry),
    /// Not every change of head `seq` is listed: more changed than a head's events
    /// hold, or its blocks could not be fetched (`why`).
    Incomplete {
        peer: String,
        seq: u64,
        why: String,
    },
    Connected {
        peer: String,
        peer_id: String,
    },
    Disconnected {
        peer: String,
        peer_id: String,
    },
    /// An item a peer sent is complete in my inbox, at `inbox/<peer>/<name>`.
    Arrived {
        peer: String,
        peer_id: String,
        name: String,
        size: u64,
        cid: String,
    },
    /// An item I sent is complete in the recipient's inbox.
    Delivered {
        peer: String,
        peer_id: String,
        name: String,
    },
    /// The recipient read an item I sent, for the first time.
    Read {
        peer: String,
        peer_id: String,
        name: String,
    },
    /// The recipient refused an item I sent.
    Refused {
        peer: String,
        peer_id: String,
        name: String,
        reason: String,
    },
    /// This watcher fell behind, and this many events went by unseen.
    Missed {
        count: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub peer: String,
    pub path: String,
    /// "file", "directory" or "symlink".
    pub kind: String,
    /// A file's size (a symlink target's length); none for a directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub cid: String,
}

impl What {
    /// The followed peer the event is about, if any.
    pub fn peer(&self) -> Option<&str> {
        match self {
            What::Head { peer, .. }
            | What::Incomplete { peer, .. }
            | What::Connected { peer, .. }
            | What::Disconnected { peer, .. }
            | What::Arrived { peer, .. }
            | What::Delivered { peer, .. }
            | What::Read { peer, .. }
            | What::Refused { peer, .. } => Some(peer),
            What::Added(e) | What::Changed(e) | What::Removed(e) => Some(&e.peer),
            What::Watching | What::Missed { .. } => None,
        }
    }
}

impl FeedEvent {
    pub fn now(what: What) -> FeedEvent {
        FeedEvent {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            what,
        }
    }
}

#[derive(Default)]
struct Ring {
    events: VecDeque<FeedEvent>,
    /// The position of the next event published; the oldest kept is `next - len`.
    next: u64,
}

#[derive(Default)]
pub struct Feed {
    ring: Mutex<Ring>,
    wake: Condvar,
    /// Watches connected now: what only a watcher reads (a head's changes, which cost
    /// fetching blocks) is worked out only while there is one.
    watchers: AtomicUsize,
}

/// A watch connected to the feed, counted until dropped.
pub struct Watching<'f>(&'f Feed);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Feed {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, what: What) {
        let mut ring = self.ring();
        if ring.events.len() == KEPT {
            ring.events.pop_front();
        }
        ring.events.push_back(FeedEvent::now(what));
        ring.next += 1;
        self.wake.notify_all();
    }

    /// A new watcher: its position (what is published from now on), and its count.
    pub fn watch(&self) -> (u64, Watching<'_>) {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        (self.ring().next, Watching(self))
    }

    /// Whether a watch is connected.
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// The events from `from` on, waiting up to `timeout` for the first; and the
    /// position after them. Events no longer kept come as one `Missed`.
    pub fn read_from(&self, from: u64, timeout: Duration) -> (Vec<FeedEvent>, u64) {
        let ring = self.ring();
        let (ring, _) = self
            .wake
            .wait_timeout_while(ring, timeout, |r| r.next <= from)
            .unwrap_or_else(|e| e.into_inner());
        let oldest = ring.next - ring.events.len() as u64;
        let mut out = Vec::new();
        if from < oldest {
            out.push(FeedEvent::now(What::Missed {
                count: oldest - from,
            }));
        }
        let skip = from.saturating_sub(oldest) as usize;
        out.extend(ring.events.iter().skip(skip).cloned());
        (out, ring.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missed(events: &[FeedEvent]) -> Option<u64> {
        events.iter().find_map(|e| match e.what {
            What::Missed { count } => Some(count),
            _ => None,
        })
    }

    #[test]
    fn a_watcher_gets_what_came_after_it_started_and_hears_of_what_it_missed() {
        let feed = Feed::default();
        feed.publish(What::Watching);
        let (at, watching) = feed.watch();
        assert!(feed.watched());
        let (none, same) = feed.read_from(at, Duration::from_millis(10));
        assert!(none.is_empty());
        assert_eq!(same, at);
        feed.publish(What::Missed { count: 7 });
        let (got, next) = feed.read_from(at, Duration::from_secs(5));
        assert_eq!(got.len(), 1);
        assert_eq!(next, at + 1);
        // A watcher left far behind: the ring kept the newest, and says how many went.
        for _ in 0..KEPT + 10 {
            feed.publish(What::Watching);
        }
        let (got, _) = feed.read_from(next, Duration::ZERO);
        assert_eq!(missed(&got), Some(10));
        assert_eq!(got.len(), KEPT + 1);
        drop(watching);
        assert!(!feed.watched());
    }

    #[test]
    fn events_read_as_one_flat_json_object_each() {
        let e = FeedEvent::now(What::Added(Entry {
            peer: "alice".into(),
            path: "docs/a.txt".into(),
            kind: "file".into(),
            size: Some(3),
            cid: "bafy".into(),
        }));
        let json: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "added");
        assert_eq!(json["path"], "docs/a.txt");
        assert_eq!(json["size"], 3);
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
        let back: FeedEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
