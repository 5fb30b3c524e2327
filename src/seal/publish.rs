//! Publishing: the drive's plaintext root turned into the root the world sees, each
//! private folder replaced by its envelope and the directories above it rebuilt. The
//! owner keeps the plaintext root for itself; its head names the published one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cid::Cid;
use libp2p_identity::PeerId;

use super::folders::{Change, Folders, Roots};
use super::keys::FolderKey;
use super::tree::{envelope, Memo, Memoed, Sealer, VersionRoot};
use super::SealError;
use crate::block::Block;
use crate::store::{BlockSink, Blocks, StoreError};
use crate::unixfs::build::{build_directory, Built, DirEntry};
use crate::unixfs::hamt::{self, ShardChange};
use crate::unixfs::{list, load_node, lookup, resolve, Error as FormatErr, ImportOptions, Node};

/// The owner's private folders and the memo that makes resealing incremental.
pub struct Publisher {
    repo: PathBuf,
    folders: Mutex<Folders>,
    memo: Arc<dyn Memo>,
}

/// A published root and the blocks (envelopes, rebuilt directories) that go into the
/// head's batch; sealed blocks were written already.
pub struct Published {
    pub root: Built,
    pub blocks: Vec<Block>,
    /// Blocks sealed (the memo had the rest).
    pub sealed: u64,
}

impl Publisher {
    pub fn open(repo: &Path, memo: Arc<dyn Memo>) -> Result<Publisher, std::io::Error> {
        Ok(Publisher {
            repo: repo.to_path_buf(),
            folders: Mutex::new(Folders::load(repo)?),
            memo,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Folders> {
        // The folders are replaced whole or not at all.
        self.folders.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().folders.is_empty()
    }

    pub fn folders(&self) -> Folders {
        self.lock().clone()
    }

    /// Makes `path` private to `readers` (the whole set), saved before it returns.
    pub fn set_readers(&self, path: &str, readers: &[PeerId]) -> Result<Change, SealError> {
        let path = normal(path);
        let mut folders = self.lock();
        let nested = folders.folders.iter().any(|f| {
            f.path != path
                && (path.starts_with(&format!("{}/", f.path))
                    || f.path.starts_with(&format!("{path}/")))
        });
        if nested || path.is_empty() {
            return Err(SealError::Nested(path));
        }
        let mut changed = folders.clone();
        let change = changed.set_readers(&path, readers)?;
        changed
            .save(&self.repo)
            .map_err(|e| SealError::Save(e.to_string()))?;
        *folders = changed;
        Ok(change)
    }

    /// The published form of plaintext `root`, whose blocks `blocks` holds; sealed
    /// blocks go to `write` as they are made.
    pub fn publish(
        &self,
        blocks: &dyn Blocks,
        root: &Built,
        opts: &ImportOptions,
        write: &mut dyn FnMut(Vec<Block>) -> Result<(), StoreError>,
    ) -> Result<Published, SealError> {
        let mut folders = self.folders();
        let overlay = Overlay {
            base: blocks,
            new: Mutex::default(),
        };
        let mut published = *root;
        let mut sealed_count = 0;
        for f in &mut folders.folders {
            let Ok((plain, node)) = resolve(blocks, &root.cid, &f.path) else {
                continue;
            };
            if !node.is_dir() {
                continue;
            }
            let Some((gen, current)) = f.current() else {
                continue;
            };
            let key = FolderKey::from_bytes(current.key);
            let mut sealer = Sealer::new(blocks, self.memo.as_ref(), f.id, &key, gen, write);
            let sealed = sealer.seal(&plain)?;
            sealed_count += sealer.finish()?;
            if f.stanzas.is_empty() {
                f.stanzas = f.make_stanzas()?;
            }
            let keys: Vec<FolderKey> = f
                .gens
                .iter()
                .map(|g| FolderKey::from_bytes(g.key))
                .collect();
            let mut versions = vec![VersionRoot {
                gen,
                key: &keys[gen as usize],
                plain,
                sealed,
            }];
            for (i, g) in f.gens.iter().enumerate().rev() {
                if let Some(fr) = g.frozen {
                    versions.push(VersionRoot {
                        gen: i as u32,
                        key: &keys[i],
                        plain: fr.plain,
                        sealed: Built {
                            cid: fr.sealed,
                            tsize: fr.tsize,
                        },
                    });
                }
            }
            let env = envelope(&versions, f.stanzas.clone())?;
            let entry = Built {
                cid: *env.cid(),
                tsize: env.len() + versions.iter().map(|v| v.sealed.tsize).sum::<u64>(),
            };
            (&overlay).put(env)?;
            let comps: Vec<&[u8]> = f
                .path
                .split('/')
                .filter(|c| !c.is_empty())
                .map(str::as_bytes)
                .collect();
            published = replace_at(&overlay, &published.cid, &comps, entry, opts)?;
            f.last = Some(Roots {
                plain,
                sealed: sealed.cid,
                tsize: sealed.tsize,
            });
        }
        self.keep(folders)?;
        let blocks = overlay
            .new
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_values()
            .collect();
        Ok(Published {
            root: published,
            blocks,
            sealed: sealed_count,
        })
    }

    /// Keeps what a publication learnt (each folder's last version, its stanzas) for
    /// the folders whose readers did not change meanwhile.
    fn keep(&self, published: Folders) -> Result<(), SealError> {
        let mut folders = self.lock();
        let mut changed = false;
        for f in &mut folders.folders {
            let Some(p) = published.get(&f.path) else {
                continue;
            };
            if p.gens.len() != f.gens.len()
                || p.gens.last().map(|g| &g.readers) != f.gens.last().map(|g| &g.readers)
            {
                continue;
            }
            if f.last != p.last || f.stanzas.is_empty() {
                f.last = p.last;
                f.stanzas = p.stanzas.clone();
                changed = true;
            }
        }
        if changed {
            folders
                .save(&self.repo)
                .map_err(|e| SealError::Save(e.to_string()))?;
        }
        Ok(())
    }
}

/// A path as the folders file keeps it: relative, `/`-separated, no empty parts.
pub fn normal(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Directory `dir` with the entry at `path` (below it) set to `entry`; the directories
/// on the way are rebuilt (a HAMT edited along the name's hash path).
fn replace_at(
    blocks: &Overlay<'_>,
    dir: &Cid,
    path: &[&[u8]],
    entry: Built,
    opts: &ImportOptions,
) -> Result<Built, FormatErr> {
    let Some((name, rest)) = path.split_first() else {
        return Ok(entry);
    };
    let node = load_node(blocks, dir)?;
    let child = if rest.is_empty() {
        entry
    } else {
        let below = lookup(blocks, dir, &node, name)?
            .ok_or_else(|| FormatErr::NotFound(String::from_utf8_lossy(name).into_owned()))?;
        replace_at(blocks, &below.cid, rest, entry, opts)?
    };
    let new = DirEntry {
        name: name.to_vec(),
        cid: child.cid,
        tsize: child.tsize,
    };
    let mut sink = blocks;
    match &node {
        Node::Directory(d) => {
            let mut entries: Vec<DirEntry> = list(blocks, dir, &node)?
                .into_iter()
                .filter(|e| e.name != *name)
                .collect();
            entries.push(new);
            build_directory(entries, d.meta, opts, &mut sink)
        }
        Node::Shard(s) => hamt::edit(
            blocks,
            dir,
            [ShardChange::Set(new)],
            s.meta,
            opts,
            &mut sink,
        ),
        _ => Err(FormatErr::NotADirectory(dir.to_string())),
    }
}

/// New blocks of a publication over the drive's.
struct Overlay<'a> {
    base: &'a dyn Blocks,
    new: Mutex<HashMap<Cid, Block>>,
}

impl Overlay<'_> {
    fn new_blocks(&self) -> MutexGuard<'_, HashMap<Cid, Block>> {
        self.new.lock().unwrap_or_else(|e| e.into_inner())
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

/// The memo in the repo's RocksDB.
#[cfg(feature = "rocksdb")]
impl Memo for crate::store::rocks::RocksStore {
    fn sealed(&self, plain: &Cid) -> Result<Option<Memoed>, StoreError> {
        Ok(self.sealed_memo(plain)?.and_then(|b| Memoed::decode(&b)))
    }

    fn remember(&self, entries: &[(Cid, Memoed)]) -> Result<(), StoreError> {
        let encoded: Vec<(Cid, Vec<u8>)> = entries.iter().map(|(c, m)| (*c, m.encode())).collect();
        self.remember_sealed(&encoded)
    }
}
