//! The owner's private folders, kept in `REPO/private.json` (mode 0600: it holds the
//! keys): each folder's path in the drive, its key generations with the readers each
//! had, and the version each older generation left behind.

use std::collections::BTreeSet;
use std::path::Path;

use cid::Cid;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::keys::{recipient_of, wrap, FolderKey, Stanza, KEY_LEN};
use super::tree::{MAX_STANZAS, MAX_VERSIONS};
use super::SealError;

/// The file under the repo.
pub const FILE: &str = "private.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Folders {
    pub folders: Vec<Folder>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Folder {
    /// Relative to the drive's root, `/`-separated.
    pub path: String,
    /// Names the folder in the memo, so a block is resealed when it moves between
    /// folders (each has its own keys).
    pub id: [u8; 16],
    /// Oldest first; the last is the current one.
    pub gens: Vec<Generation>,
    /// The current version as of the last commit: frozen into its generation when a
    /// reader is removed.
    pub last: Option<Roots>,
    /// The current stanzas, made again only when the readers change (each wrap is
    /// random, and an envelope that changed at every commit would be news to followers).
    #[serde(default)]
    pub stanzas: Vec<Stanza>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Generation {
    pub key: [u8; KEY_LEN],
    /// Peer IDs, as strings.
    pub readers: Vec<String>,
    /// The folder as this generation left it (none for the current one).
    pub frozen: Option<Roots>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roots {
    #[serde(with = "cid_string")]
    pub plain: Cid,
    #[serde(with = "cid_string")]
    pub sealed: Cid,
    pub tsize: u64,
}

/// CIDs as their usual strings in the JSON file.
mod cid_string {
    use cid::Cid;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cid: &Cid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&cid.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cid, D::Error> {
        let s = String::deserialize(d)?;
        Cid::try_from(s.as_str()).map_err(serde::de::Error::custom)
    }
}

/// What `set_readers` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The folder became private.
    New,
    /// Readers were only added: same key.
    Added,
    /// A reader was removed: a new generation.
    NewGeneration,
    Unchanged,
}

impl Folder {
    pub fn current(&self) -> Option<(u32, &Generation)> {
        let g = self.gens.last()?;
        Some(((self.gens.len() - 1) as u32, g))
    }

    /// The stanzas for the current readers: each generation's key to the readers it
    /// had and to every current reader.
    pub fn make_stanzas(&self) -> Result<Vec<Stanza>, SealError> {
        let current: BTreeSet<&String> = self
            .gens
            .last()
            .map(|g| g.readers.iter().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for (i, g) in self.gens.iter().enumerate() {
            let to: BTreeSet<&String> = g.readers.iter().chain(current.iter().copied()).collect();
            let key = FolderKey::from_bytes(g.key);
            for reader in to {
                let peer: PeerId = reader
                    .parse()
                    .map_err(|_| SealError::NotEd25519(reader.clone()))?;
                out.push(wrap(&key, i as u32, &recipient_of(&peer)?)?);
            }
        }
        Ok(out)
    }
}

impl Folders {
    pub fn load(repo: &Path) -> Result<Folders, std::io::Error> {
        match std::fs::read(repo.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Folders::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the file whole, then renames it in place, readable by its owner only.
    pub fn save(&self, repo: &Path) -> Result<(), std::io::Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = repo.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, repo.join(FILE))
    }

    pub fn get(&self, path: &str) -> Option<&Folder> {
        self.folders.iter().find(|f| f.path == path)
    }

    /// Makes `path` private to `readers` (all of them: the set is replaced). Removing
    /// anyone starts a new generation; adding only does not.
    pub fn set_readers(&mut self, path: &str, readers: &[PeerId]) -> Result<Change, SealError> {
        for r in readers {
            recipient_of(r)?;
        }
        let new: BTreeSet<String> = readers.iter().map(PeerId::to_string).collect();
        let new_list: Vec<String> = new.iter().cloned().collect();
        let Some(folder) = self.folders.iter_mut().find(|f| f.path == path) else {
            let folder = Folder {
                path: path.to_string(),
                id: *FolderKey::random()?
                    .as_bytes()
                    .first_chunk()
                    .unwrap_or(&[0; 16]),
                gens: vec![Generation {
                    key: *FolderKey::random()?.as_bytes(),
                    readers: new_list,
                    frozen: None,
                }],
                last: None,
                stanzas: Vec::new(),
            };
            check_stanzas(&folder)?;
            self.folders.push(folder);
            return Ok(Change::New);
        };
        let Some(current) = folder.gens.last_mut() else {
            return Err(SealError::Malformed {
                cid: Cid::default(),
                why: "a private folder without a generation",
            });
        };
        let old: BTreeSet<String> = current.readers.iter().cloned().collect();
        if old == new {
            return Ok(Change::Unchanged);
        }
        let mut changed = folder.clone();
        let change = if old.is_subset(&new) {
            if let Some(g) = changed.gens.last_mut() {
                g.readers = new_list;
            }
            Change::Added
        } else {
            if changed.gens.len() >= MAX_VERSIONS {
                return Err(SealError::TooManyStanzas {
                    max: MAX_VERSIONS,
                    wanted: changed.gens.len() + 1,
                });
            }
            if let Some(g) = changed.gens.last_mut() {
                g.frozen = changed.last;
            }
            changed.gens.push(Generation {
                key: *FolderKey::random()?.as_bytes(),
                readers: new_list,
                frozen: None,
            });
            Change::NewGeneration
        };
        changed.stanzas.clear();
        check_stanzas(&changed)?;
        *folder = changed;
        Ok(change)
    }
}

/// Refuses a reader set whose stanzas would pass the cap.
fn check_stanzas(f: &Folder) -> Result<(), SealError> {
    let current: BTreeSet<&String> = f
        .gens
        .last()
        .map(|g| g.readers.iter().collect())
        .unwrap_or_default();
    let wanted: usize = f
        .gens
        .iter()
        .map(|g| {
            g.readers
                .iter()
                .chain(current.iter().copied())
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum();
    if wanted > MAX_STANZAS {
        return Err(SealError::TooManyStanzas {
            max: MAX_STANZAS,
            wanted,
        });
    }
    Ok(())
}
