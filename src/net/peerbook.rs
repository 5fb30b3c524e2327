//! The peer book: the peers I follow, by name, with the addresses to dial them at.
//! Kept in `REPO/peers.toml`, written whole to a temp file and renamed into place.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

pub const PEERS_FILE: &str = "peers.toml";

/// Most addresses kept per peer. Each restart of a peer on a random port, or a typo,
/// used to add one more for good; the newest are the likeliest to work, so the oldest
/// beyond this go.
pub const MAX_ADDRS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PeerBookError {
    #[error("{0:?} is neither a peer ID nor a multiaddr ending in /p2p/PEERID")]
    BadTarget(String),
    #[error("{target}: `{part}` {why} (a multiaddr reads like /ip4/10.0.0.2/tcp/4011/p2p/PEERID)")]
    BadAddr {
        target: String,
        part: String,
        why: String,
    },
    #[error("multiaddr {0} does not say whose it is: end it with /p2p/PEERID")]
    NoPeerId(String),
    #[error("the name {0:?} is taken by peer {1}")]
    NameTaken(String, String),
    #[error("{0:?} cannot be a peer name (it must be a plain file name)")]
    BadName(String),
    #[error("no peer named {0:?} (see `peerfs peers`)")]
    UnknownName(String),
    #[error("that is this node's own peer ID")]
    Myself,
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

impl PeerEntry {
    pub fn peer_id(&self) -> Option<PeerId> {
        PeerId::from_str(&self.id).ok()
    }

    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.addrs.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    #[serde(default, rename = "peer")]
    peers: Vec<PeerEntry>,
}

pub struct PeerBook {
    path: PathBuf,
    peers: Vec<PeerEntry>,
}

impl PeerBook {
    pub fn load(repo: &Path) -> Result<PeerBook, PeerBookError> {
        let path = repo.join(PEERS_FILE);
        let file_err = |message: String| PeerBookError::File {
            path: path.clone(),
            message,
        };
        let file: File = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| file_err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(file_err(e.to_string())),
        };
        for p in &file.peers {
            if p.peer_id().is_none() {
                return Err(file_err(format!(
                    "peer {:?}: bad peer ID {:?}",
                    p.name, p.id
                )));
            }
        }
        Ok(PeerBook {
            path,
            peers: file.peers,
        })
    }

    pub fn save(&self) -> Result<(), PeerBookError> {
        let file_err = |e: &dyn std::fmt::Display| PeerBookError::File {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let text = toml::to_string(&File {
            peers: self.peers.clone(),
        })
        .map_err(|e| file_err(&e))?;
        let tmp = self.path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| file_err(&e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| file_err(&e))
    }

    pub fn entries(&self) -> &[PeerEntry] {
        &self.peers
    }

    pub fn by_id(&self, id: &PeerId) -> Option<&PeerEntry> {
        let id = id.to_string();
        self.peers.iter().find(|p| p.id == id)
    }

    pub fn by_name(&self, name: &str) -> Option<&PeerEntry> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// Follows the peer `target` names (a peer ID, or a multiaddr ending in its ID), or
    /// adds the address to a peer already followed. Returns the entry as saved.
    pub fn add(
        &mut self,
        target: &str,
        name: Option<&str>,
        me: &PeerId,
    ) -> Result<PeerEntry, PeerBookError> {
        let (id, addr) = parse_target(target)?;
        if id == *me {
            return Err(PeerBookError::Myself);
        }
        let id_text = id.to_string();
        // Adding an address to a peer followed already keeps the name it has.
        let known = self.by_id(&id).map(|p| p.name.clone());
        let name = name
            .map(str::to_string)
            .or(known)
            .unwrap_or(id_text.clone());
        check_name(&name)?;
        if let Some(other) = self
            .peers
            .iter()
            .find(|p| p.name == name && p.id != id_text)
        {
            return Err(PeerBookError::NameTaken(name, other.id.clone()));
        }
        let pos = match self.peers.iter().position(|p| p.id == id_text) {
            Some(i) => i,
            None => {
                self.peers.push(PeerEntry {
                    name: name.clone(),
                    id: id_text,
                    addrs: Vec::new(),
                });
                self.peers.len() - 1
            }
        };
        let entry = &mut self.peers[pos];
        entry.name = name;
        if let Some(a) = addr.map(|a| a.to_string()) {
            entry.addrs.retain(|old| *old != a);
            entry.addrs.insert(0, a);
            entry.addrs.truncate(MAX_ADDRS);
        }
        let entry = entry.clone();
        self.save()?;
        Ok(entry)
    }

    /// Stops following the peer called `name` (or with that peer ID).
    pub fn remove(&mut self, name: &str) -> Result<PeerEntry, PeerBookError> {
        let pos = self
            .peers
            .iter()
            .position(|p| p.name == name || p.id == name)
            .ok_or_else(|| PeerBookError::UnknownName(name.to_string()))?;
        let entry = self.peers.remove(pos);
        self.save()?;
        Ok(entry)
    }
}

/// A peer ID alone, or a multiaddr whose last part is `/p2p/ID` (the address is kept
/// without it).
pub fn parse_target(target: &str) -> Result<(PeerId, Option<Multiaddr>), PeerBookError> {
    if let Ok(id) = PeerId::from_str(target) {
        return Ok((id, None));
    }
    if !target.starts_with('/') {
        return Err(PeerBookError::BadTarget(target.to_string()));
    }
    let mut addr = Multiaddr::from_str(target).map_err(|_| {
        let (part, why) = bad_part(target);
        PeerBookError::BadAddr {
            target: target.to_string(),
            part,
            why,
        }
    })?;
    match addr.pop() {
        Some(Protocol::P2p(id)) => Ok((id, Some(addr))),
        _ => Err(PeerBookError::NoPeerId(target.to_string())),
    }
}

/// The first component of a multiaddr that does not parse (`/ip4/10.0.0.300`,
/// `/tpc`), and why, so that a typo is named instead of the whole address refused.
fn bad_part(text: &str) -> (String, String) {
    let mut parts = text.split('/').peekable();
    parts.next(); // the empty string before the leading `/`
    while parts.peek().is_some() {
        let before: Vec<&str> = parts.clone().collect();
        if let Err(e) = Protocol::from_str_parts(&mut parts) {
            let used = (before.len() - parts.clone().count()).clamp(1, before.len());
            let why = match e {
                libp2p::multiaddr::Error::UnknownProtocolString(p) => {
                    format!("is not a protocol: {p:?} is unknown")
                }
                libp2p::multiaddr::Error::InvalidProtocolString => {
                    "lacks its value (a port, an address or a peer ID)".to_string()
                }
                e => format!("is not valid: {e}"),
            };
            return (format!("/{}", before[..used].join("/")), why);
        }
    }
    (text.to_string(), "is not valid".to_string())
}

/// A name becomes a directory under `peers/`, so it must be a plain file name.
fn check_name(name: &str) -> Result<(), PeerBookError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains('/')
        || name.contains('\0');
    if bad {
        return Err(PeerBookError::BadName(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_rename_merge_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let me = PeerId::random();
        let bob = PeerId::random();
        let mut book = PeerBook::load(dir.path()).unwrap();
        let addr = format!("/ip4/127.0.0.1/tcp/4011/p2p/{bob}");
        let e = book.add(&addr, Some("bob"), &me).unwrap();
        assert_eq!(e.addrs, vec!["/ip4/127.0.0.1/tcp/4011".to_string()]);
        // The same peer again: the address merges, the name stays unique.
        book.add(&bob.to_string(), Some("bob"), &me).unwrap();
        let other = PeerId::random();
        assert!(matches!(
            book.add(&other.to_string(), Some("bob"), &me),
            Err(PeerBookError::NameTaken(..))
        ));
        assert!(matches!(
            book.add("/ip4/127.0.0.1/tcp/1", None, &me),
            Err(PeerBookError::NoPeerId(_))
        ));
        assert!(matches!(
            book.add("nonsense", None, &me),
            Err(PeerBookError::BadTarget(_))
        ));
        assert!(matches!(
            book.add(&me.to_string(), None, &me),
            Err(PeerBookError::Myself)
        ));
        assert!(matches!(
            book.add(&other.to_string(), Some("a/b"), &me),
            Err(PeerBookError::BadName(_))
        ));

        let reloaded = PeerBook::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), book.entries());
        assert_eq!(reloaded.entries().len(), 1);
        book.remove("bob").unwrap();
        assert!(matches!(
            book.remove("bob"),
            Err(PeerBookError::UnknownName(_))
        ));
        assert!(PeerBook::load(dir.path()).unwrap().entries().is_empty());
    }
}
