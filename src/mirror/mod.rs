//! Mirrors: peers' drives this node keeps in full, every new head of them, so that
//! they stay readable while their owner is away; and the other side, who holds my
//! newest head in full.
//!
//! - this module: the mirrors I keep, as saved in `REPO/mirrors.json`, and the state
//!   each is in.
//! - `statement`: "I hold head SEQ of your drive in full", signed by the mirror, on
//!   `/peerfs/replica/1.0.0`.
//! - `replicas`: the latest statement per mirror of my drive, in `REPO/replicas.json`.
//! - `walk`: a new head's blocks that the head held before does not hold already.
//!
//! The daemon's `mirror` module does the work (fetching, pinning, telling the owner).

pub mod replicas;
pub mod statement;
pub mod walk;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file mirrors are kept in, inside the repo.
pub const MIRRORS_FILE: &str = "mirrors.json";
/// The pin label under which a mirror keeps the newest head it holds in full.
pub const PIN_PREFIX: &str = "mirror/";

/// The pin label of the mirror of peer `peer_id`.
pub fn pin_label(peer_id: &str) -> String {
    format!("{PIN_PREFIX}{peer_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a mirrors file ({why})")]
    Malformed { path: PathBuf, why: String },
    #[error("{0} is not mirrored")]
    NotMirrored(String),
}

/// A head held in full: every block of its DAG is here, kept out of the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub seq: u64,
    pub root: String,
    /// The tree's bytes, as its root declares them.
    pub bytes: u64,
    /// Blocks read to hold it (what the head before held was not read again).
    pub blocks: u64,
}

/// One mirror as saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    /// Its name in the peer book.
    pub name: String,
    pub peer_id: String,
    /// Bytes one head may have at most; `None`: no limit.
    pub quota: Option<u64>,
    /// The newest head held in full.
    pub held: Option<Held>,
    /// The seq of a head that did not fit the quota (it is not fetched).
    #[serde(default)]
    pub over_quota: Option<u64>,
    /// A restricted drive's readers, as its owner last named them: the peers this
    /// mirror passes its blocks on to (kept, so that it does while the owner is away).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<String>,
}

/// The state `peerfs mirrors` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// The newest head known is held in full.
    Synced,
    /// A head is being fetched: this percent of its bytes are here.
    Fetching(u8),
    /// The newest head is larger than the quota, and is not fetched.
    OverQuota,
    /// A newer head is known than the one held, and no fetch runs (the owner and every
    /// other holder may be away; it is tried again).
    Behind,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Synced => write!(f, "synced"),
            State::Fetching(p) => write!(f, "fetching {p}%"),
            State::OverQuota => write!(f, "over quota"),
            State::Behind => write!(f, "behind"),
        }
    }
}

impl Mirror {
    /// Its state, given the newest head seq known of its drive and how far a fetch
    /// under way is (`None`: none runs).
    pub fn state(&self, newest: Option<u64>, fetching: Option<u8>) -> State {
        if let Some(p) = fetching {
            return State::Fetching(p);
        }
        let held = self.held.as_ref().map(|h| h.seq);
        match newest {
            Some(n) if held.is_none_or(|h| h < n) => {
                if self.over_quota == Some(n) {
                    State::OverQuota
                } else {
                    State::Behind
                }
            }
            // No head known yet: nothing to hold.
            None if held.is_none() => State::Behind,
            _ => State::Synced,
        }
    }
}

/// The mirrors of a repo, as saved in `REPO/mirrors.json`.
#[derive(Debug)]
pub struct Mirrors {
    path: PathBuf,
    list: Vec<Mirror>,
}

impl Mirrors {
    /// Reads the repo's mirrors; none when the file is not there.
    pub fn load(repo: &Path) -> Result<Mirrors, MirrorError> {
        let path = repo.join(MIRRORS_FILE);
        let list = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MirrorError::Malformed {
                path: path.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(MirrorError::Io { path, source }),
        };
        Ok(Mirrors { path, list })
    }

    /// Writes the list whole to a temp file and renames it into place.
    pub fn save(&self) -> Result<(), MirrorError> {
        let io = |source| MirrorError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&self.list).map_err(|e| io(e.into()))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    pub fn list(&self) -> &[Mirror] {
        &self.list
    }

    pub fn get(&self, peer_id: &str) -> Option<&Mirror> {
        self.list.iter().find(|m| m.peer_id == peer_id)
    }

    pub fn get_mut(&mut self, peer_id: &str) -> Option<&mut Mirror> {
        self.list.iter_mut().find(|m| m.peer_id == peer_id)
    }

    /// Adds a mirror of `peer_id`, or changes the name and quota of the one there.
    pub fn add(&mut self, name: &str, peer_id: &str, quota: Option<u64>) -> Mirror {
        match self.get_mut(peer_id) {
            Some(m) => {
                m.name = name.to_string();
                if m.quota != quota {
                    // A head refused under the old quota may fit the new one.
                    m.over_quota = None;
                }
                m.quota = quota;
                m.clone()
            }
            None => {
                let m = Mirror {
                    name: name.to_string(),
                    peer_id: peer_id.to_string(),
                    quota,
                    held: None,
                    over_quota: None,
                    readers: Vec::new(),
                };
                self.list.push(m.clone());
                m
            }
        }
    }

    /// Removes the mirror named `name` (or of peer ID `name`).
    pub fn remove(&mut self, name: &str) -> Result<Mirror, MirrorError> {
        let at = self
            .list
            .iter()
            .position(|m| m.name == name || m.peer_id == name)
            .ok_or_else(|| MirrorError::NotMirrored(name.to_string()))?;
        Ok(self.list.remove(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seq: u64) -> Option<Held> {
        Some(Held {
            seq,
            root: "r".into(),
            bytes: 1,
            blocks: 1,
        })
    }

    #[test]
    fn states() {
        let mut m = Mirror {
            name: "a".into(),
            peer_id: "p".into(),
            quota: Some(10),
            held: held(3),
            over_quota: None,
            readers: Vec::new(),
        };
        assert_eq!(m.state(Some(3), None), State::Synced);
        assert_eq!(m.state(Some(4), None), State::Behind);
        assert_eq!(m.state(Some(4), Some(40)).to_string(), "fetching 40%");
        m.over_quota = Some(4);
        assert_eq!(m.state(Some(4), None), State::OverQuota);
        // A newer head than the one that did not fit is tried again.
        assert_eq!(m.state(Some(5), None), State::Behind);
    }

    #[test]
    fn saved_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut ms = Mirrors::load(dir.path()).unwrap();
        ms.add("a", "p1", None);
        ms.add("b", "p2", Some(5));
        ms.get_mut("p1").unwrap().held = held(7);
        ms.save().unwrap();
        let again = Mirrors::load(dir.path()).unwrap();
        assert_eq!(again.list(), ms.list());
        let mut again = again;
        assert_eq!(again.remove("b").unwrap().peer_id, "p2");
        assert!(again.remove("b").is_err());
    }
}
