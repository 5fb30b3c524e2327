//! Sealed trees: a plaintext subtree turned into blocks anyone can walk and only key
//! holders can read, and the envelope on top that carries the recipient stanzas.
//!
//! - A sealed leaf is a raw block of `cipher::seal(leaf)`.
//! - A sealed node is a dag-pb node whose links are the sealed children's CIDs, in the
//!   plaintext node's order, without names, and whose data is `NODE_MAGIC` followed by
//!   the sealed plaintext node (which names the plaintext children's CIDs: a reader
//!   opens child `i` as the block the plaintext node's link `i` names).
//! - The envelope is a dag-pb node whose links are the folder's sealed roots, one per
//!   version (the current one first, then the folder as each older generation left it),
//!   and whose data is `ENVELOPE_MAGIC` followed by DAG-CBOR [`Envelope`].
//!
//! Sealing is deterministic, and a memo (plaintext CID → sealed CID) lets a commit skip
//! every subtree it sealed before: only what changed is read and sealed again.

use std::collections::HashMap;
use std::sync::Mutex;

use cid::{Cid, Version};
use serde::{Deserialize, Serialize};

use super::cipher;
use super::keys::{unwrap, FolderKey, ReaderKey, Stanza};
use super::SealError;
use crate::block::{Block, DAG_PB, RAW};
use crate::store::{Blocks, StoreError};
use crate::unixfs::build::Built;
use crate::unixfs::dagpb::{PbLink, PbNode};

/// Starts the data of a sealed node. 0xff cannot start a UnixFS protobuf, so no
/// plaintext node is ever taken for a sealed one.
pub const NODE_MAGIC: &[u8] = b"\xffpeerfs-sealed-1";
/// Starts the data of an envelope.
pub const ENVELOPE_MAGIC: &[u8] = b"\xffpeerfs-envelope-1";
/// Stanzas in one envelope at most (readers × generations): a reader tries each, and a
/// follower holds the envelope, so both stay small.
pub const MAX_STANZAS: usize = 64;
/// Versions (generations) one envelope links to at most.
pub const MAX_VERSIONS: usize = 16;
/// Sealed bytes kept in memory before they are handed to the writer.
const FLUSH_BYTES: usize = 16 << 20;

/// What the memo knows of one plaintext block: sealed in which folder, as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memoed {
    pub folder: [u8; 16],
    pub sealed: Cid,
    pub tsize: u64,
}

impl Memoed {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.folder.to_vec();
        out.extend_from_slice(&self.tsize.to_be_bytes());
        out.extend_from_slice(&self.sealed.to_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Memoed> {
        Some(Memoed {
            folder: bytes.get(..16)?.try_into().ok()?,
            tsize: u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?),
            sealed: Cid::try_from(bytes.get(24..)?).ok()?,
        })
    }
}

/// Plaintext CID → what it was sealed as. Every plaintext block of a private folder
/// is in it, which is also how serving knows never to hand one out.
pub trait Memo: Send + Sync {
    fn sealed(&self, plain: &Cid) -> Result<Option<Memoed>, StoreError>;
    fn remember(&self, entries: &[(Cid, Memoed)]) -> Result<(), StoreError>;
}

/// A memo in memory, for tests.
#[derive(Default)]
pub struct MemoryMemo(Mutex<HashMap<Vec<u8>, Memoed>>);

impl Memo for MemoryMemo {
    fn sealed(&self, plain: &Cid) -> Result<Option<Memoed>, StoreError> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(&plain.hash().to_bytes()).copied())
    }

    fn remember(&self, entries: &[(Cid, Memoed)]) -> Result<(), StoreError> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (plain, m) in entries {
            map.insert(plain.hash().to_bytes(), *m);
        }
        Ok(())
    }
}

/// Seals subtrees of one folder with one generation's key.
pub struct Sealer<'a> {
    /// Where the plaintext is read.
    blocks: &'a dyn Blocks,
    memo: &'a dyn Memo,
    folder: [u8; 16],
    key: &'a FolderKey,
    gen: u32,
    /// Takes sealed blocks, a batch at a time.
    write: &'a mut dyn FnMut(Vec<Block>) -> Result<(), StoreError>,
    pending: Vec<Block>,
    pending_bytes: usize,
    learned: Vec<(Cid, Memoed)>,
    /// Blocks sealed (not found in the memo).
    pub sealed: u64,
}

impl<'a> Sealer<'a> {
    pub fn new(
        blocks: &'a dyn Blocks,
        memo: &'a dyn Memo,
        folder: [u8; 16],
        key: &'a FolderKey,
        gen: u32,
        write: &'a mut dyn FnMut(Vec<Block>) -> Result<(), StoreError>,
    ) -> Self {
        Sealer {
            blocks,
            memo,
            folder,
            key,
            gen,
            write,
            pending: Vec::new(),
            pending_bytes: 0,
            learned: Vec::new(),
            sealed: 0,
        }
    }

    /// The sealed form of the plaintext DAG under `plain`.
    pub fn seal(&mut self, plain: &Cid) -> Result<Built, SealError> {
        if let Some(m) = self.memo.sealed(plain)? {
            // Sealed in this folder before, and still here (a sweep may have taken it).
            if m.folder == self.folder && self.blocks.has(&m.sealed)? {
                return Ok(Built {
                    cid: m.sealed,
                    tsize: m.tsize,
                });
            }
        }
        let data = self.blocks.get(plain)?.ok_or(SealError::Missing(*plain))?;
        let (block, tsize) = match plain.codec() {
            RAW => {
                let b = Block::hash(
                    Version::V1,
                    RAW,
                    cipher::seal(self.key, self.gen, plain, &data),
                );
                let tsize = b.len();
                (b, tsize)
            }
            DAG_PB => {
                let node = PbNode::decode(&data).map_err(|_| SealError::Malformed {
                    cid: *plain,
                    why: "plaintext node is not dag-pb",
                })?;
                let mut links = Vec::with_capacity(node.links.len());
                let mut below = 0u64;
                for l in &node.links {
                    let child = self.seal(&l.cid)?;
                    below = below.saturating_add(child.tsize);
                    links.push(PbLink {
                        cid: child.cid,
                        name: None,
                        tsize: Some(child.tsize),
                    });
                }
                let mut sealed_data = NODE_MAGIC.to_vec();
                sealed_data.extend(cipher::seal(self.key, self.gen, plain, &data));
                let sealed = PbNode {
                    links,
                    data: Some(sealed_data),
                };
                let b = Block::hash(Version::V1, DAG_PB, sealed.encode());
                let tsize = b.len().saturating_add(below);
                (b, tsize)
            }
            _ => {
                return Err(SealError::Malformed {
                    cid: *plain,
                    why: "neither dag-pb nor raw",
                })
            }
        };
        let built = Built {
            cid: *block.cid(),
            tsize,
        };
        self.learned.push((
            *plain,
            Memoed {
                folder: self.folder,
                sealed: built.cid,
                tsize,
            },
        ));
        self.sealed += 1;
        self.pending_bytes += block.data().len();
        self.pending.push(block);
        if self.pending_bytes >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(built)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.pending_bytes = 0;
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return Ok(());
        }
        (self.write)(batch)
    }

    /// Writes what is pending, then remembers what was sealed (after its blocks, so the
    /// memo never names a sealed block that was not written).
    pub fn finish(mut self) -> Result<u64, SealError> {
        self.flush()?;
        self.memo.remember(&self.learned)?;
        Ok(self.sealed)
    }
}

/// What an envelope's data holds. `versions[i]` describes link `i`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub versions: Vec<SealedVersion>,
    pub stanzas: Vec<Stanza>,
}

/// One version of the folder: the generation that sealed its root, and its root's
/// plaintext CID, sealed with that generation's key and bound to the sealed root's CID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedVersion {
    pub gen: u32,
    #[serde(with = "serde_bytes")]
    pub root: Vec<u8>,
}

/// One version, as the owner knows it.
pub struct VersionRoot<'a> {
    pub gen: u32,
    pub key: &'a FolderKey,
    pub plain: Cid,
    pub sealed: Built,
}

/// The envelope block over `versions` (the current one first).
pub fn envelope(versions: &[VersionRoot<'_>], stanzas: Vec<Stanza>) -> Result<Block, SealError> {
    if stanzas.len() > MAX_STANZAS {
        return Err(SealError::TooManyStanzas {
            max: MAX_STANZAS,
            wanted: stanzas.len(),
        });
    }
    let env = Envelope {
        v: 1,
        versions: versions
            .iter()
            .map(|v| SealedVersion {
                gen: v.gen,
                root: cipher::seal_bound(v.key, v.gen, &v.sealed.cid, &v.plain.to_bytes()),
            })
            .collect(),
        stanzas,
    };
    let mut data = ENVELOPE_MAGIC.to_vec();
    data.extend(
        serde_ipld_dagcbor::to_vec(&env).map_err(|_| SealError::Malformed {
            cid: versions.first().map_or(Cid::default(), |v| v.plain),
            why: "envelope does not encode",
        })?,
    );
    let node = PbNode {
        links: versions
            .iter()
            .map(|v| PbLink {
                cid: v.sealed.cid,
                name: None,
                tsize: Some(v.sealed.tsize),
            })
            .collect(),
        data: Some(data),
    };
    Ok(Block::hash(Version::V1, DAG_PB, node.encode()))
}

/// What a sealed block's bytes are, read without a key.
pub enum Sealed {
    Envelope {
        links: Vec<Cid>,
        envelope: Envelope,
    },
    Node {
        links: Vec<Cid>,
        payload: Vec<u8>,
    },
    /// Not sealed: plaintext, or a raw leaf (which says nothing of itself).
    Other,
}

/// Tells a dag-pb block sealed by us from any other.
pub fn classify(cid: &Cid, bytes: &[u8]) -> Result<Sealed, SealError> {
    // Most blocks are not sealed: look for the magics' common start before decoding.
    const MARK: &[u8] = b"\xffpeerfs-";
    if cid.codec() != DAG_PB || !bytes.windows(MARK.len()).any(|w| w == MARK) {
        return Ok(Sealed::Other);
    }
    let Ok(node) = PbNode::decode(bytes) else {
        return Ok(Sealed::Other);
    };
    let links = node.links.iter().map(|l| l.cid).collect();
    let malformed = |why| SealError::Malformed { cid: *cid, why };
    match node.data {
        Some(d) if d.starts_with(ENVELOPE_MAGIC) => {
            let envelope: Envelope = serde_ipld_dagcbor::from_slice(&d[ENVELOPE_MAGIC.len()..])
                .map_err(|_| malformed("envelope does not decode"))?;
            if envelope.stanzas.len() > MAX_STANZAS || envelope.versions.len() > MAX_VERSIONS {
                return Err(malformed("envelope past its limits"));
            }
            if envelope.versions.len() != node.links.len() {
                return Err(malformed("envelope versions do not match its links"));
            }
            Ok(Sealed::Envelope { links, envelope })
        }
        Some(d) if d.starts_with(NODE_MAGIC) => Ok(Sealed::Node {
            links,
            payload: d[NODE_MAGIC.len()..].to_vec(),
        }),
        _ => Ok(Sealed::Other),
    }
}

/// An envelope opened by one reader: every generation's key it was given, and the
/// version it reads (the newest it has the key of).
#[derive(Debug)]
pub struct Opened {
    pub keys: HashMap<u32, FolderKey>,
    pub plain_root: Cid,
    pub sealed_root: Cid,
}

/// Opens `envelope` (block `cid`, with `links`) for `reader`; `None` when no stanza is
/// the reader's.
pub fn open_envelope(
    cid: &Cid,
    links: &[Cid],
    envelope: &Envelope,
    reader: &ReaderKey,
) -> Result<Option<Opened>, SealError> {
    let keys: HashMap<u32, FolderKey> = envelope
        .stanzas
        .iter()
        .filter_map(|s| unwrap(s, reader).map(|k| (s.gen, k)))
        .collect();
    let newest = envelope
        .versions
        .iter()
        .zip(links)
        .filter(|(v, _)| keys.contains_key(&v.gen))
        .max_by_key(|(v, _)| v.gen);
    let Some((version, sealed_root)) = newest else {
        return Ok(None);
    };
    let key = &keys[&version.gen];
    let root = cipher::open_bound(key, sealed_root, &version.root)?;
    let plain_root = Cid::try_from(root.as_slice()).map_err(|_| SealError::Malformed {
        cid: *cid,
        why: "envelope names no CID",
    })?;
    Ok(Some(Opened {
        keys,
        plain_root,
        sealed_root: *sealed_root,
    }))
}
