//! Who holds my drive in full: the latest statement of each mirror, as the mirrors
//! sent them, kept in `REPO/replicas.json` (the signed bytes, checked again when read).
//! One per peer, and only from peers in my peer book, so the file stays small.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use tracing::warn;

use super::statement::Statement;
use super::MirrorError;

pub const REPLICAS_FILE: &str = "replicas.json";

#[derive(Debug)]
pub struct Replicas {
    path: PathBuf,
    /// Each mirror's newest statement, as it signed it.
    signed: BTreeMap<PeerId, (Statement, Vec<u8>)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// Signed statements, hex.
    statements: Vec<String>,
}

impl Replicas {
    /// Reads the statements saved; one that does not verify is left out (and logged).
    pub fn load(repo: &Path) -> Result<Replicas, MirrorError> {
        let path = repo.join(REPLICAS_FILE);
        let saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MirrorError::Malformed {
                path: path.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved {
                statements: Vec::new(),
            },
            Err(source) => return Err(MirrorError::Io { path, source }),
        };
        let mut signed = BTreeMap::new();
        for hex_text in saved.statements {
            let checked = from_hex(&hex_text)
                .ok_or_else(|| "not hex".to_string())
                .and_then(|b| {
                    Statement::verify(&b, None, None)
                        .map(|s| (s, b))
                        .map_err(|e| e.to_string())
                });
            match checked {
                Ok((s, b)) => {
                    signed.insert(s.mirror, (s, b));
                }
                Err(e) => warn!("{}: a statement left out: {e}", path.display()),
            }
        }
        Ok(Replicas { path, signed })
    }

    fn save(&self) -> Result<(), MirrorError> {
        let io = |source| MirrorError::Io {
            path: self.path.clone(),
            source,
        };
        let saved = Saved {
            statements: self.signed.values().map(|(_, b)| to_hex(b)).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| io(e.into()))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Keeps `statement` (verified, from a known peer) unless one as new is kept.
    /// Returns whether it was news.
    pub fn note(&mut self, statement: Statement, signed: Vec<u8>) -> Result<bool, MirrorError> {
        if self
            .signed
            .get(&statement.mirror)
            .is_some_and(|(s, _)| (s.seq, s.time_ms) >= (statement.seq, statement.time_ms))
        {
            return Ok(false);
        }
        self.signed.insert(statement.mirror, (statement, signed));
        self.save()?;
        Ok(true)
    }

    /// Each mirror's newest statement as signed, the newest first, at most `n`.
    pub fn signed(&self, n: usize) -> Vec<Vec<u8>> {
        let mut all: Vec<&(Statement, Vec<u8>)> = self.signed.values().collect();
        all.sort_by_key(|(s, _)| std::cmp::Reverse((s.seq, s.time_ms)));
        all.into_iter().take(n).map(|(_, b)| b.clone()).collect()
    }

    /// The mirrors that hold head `seq` with root `root` in full.
    pub fn holding(&self, seq: u64, root: &cid::Cid) -> Vec<&Statement> {
        self.signed
            .values()
            .map(|(s, _)| s)
            .filter(|s| s.seq == seq && s.root == *root)
            .collect()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
