//! Reading UnixFS DAGs: resolving paths, listing directories, and reading files either
//! at random offsets (touching only the blocks under the range) or as a stream.

use std::io::Write;
use std::sync::Arc;

use cid::Cid;

use super::build::DirEntry;
use super::node::{FileNode, Node};
use super::{hamt, load_node, Error, FormatError};
use crate::block::RAW;
use crate::store::Blocks;

/// A file DAG never needs more levels than this (1024-way nodes reach 2^100 bytes long
/// before 10); a deeper one is hostile, and refusing it keeps recursion bounded.
const MAX_FILE_DEPTH: usize = 32;

/// Blocks a streaming read keeps in flight ahead of the writer: 8 MiB of 1 MiB leaves.
const READ_AHEAD: usize = 8;

/// Follows `path` (components separated by `/`) from `root`, one lookup per component.
pub fn resolve(blocks: &dyn Blocks, root: &Cid, path: &str) -> Result<(Cid, Node), Error> {
    let mut cid = *root;
    let mut node = load_node(blocks, &cid)?;
    let mut walked = root.to_string();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let next = match lookup(blocks, &cid, &node, part.as_bytes()) {
            Err(Error::NotADirectory(_)) => return Err(Error::NotADirectory(walked)),
            other => other?,
        };
        walked = format!("{walked}/{part}");
        let Some(entry) = next else {
            return Err(Error::NotFound(walked));
        };
        cid = entry.cid;
        node = load_node(blocks, &cid)?;
    }
    Ok((cid, node))
}

/// Looks a name up in a directory node: a scan of a flat directory's links, or the
/// hash path of a HAMT.
pub fn lookup(
    blocks: &dyn Blocks,
    dir_cid: &Cid,
    dir: &Node,
    name: &[u8],
) -> Result<Option<DirEntry>, Error> {
    match dir {
        Node::Directory(d) => Ok(d
            .links
            .iter()
            .find(|l| l.name.as_deref() == Some(name))
            .map(|l| DirEntry {
                name: name.to_vec(),
                cid: l.cid,
                tsize: l.tsize.unwrap_or(0),
            })),
        Node::Shard(s) => hamt::lookup(blocks, dir_cid, s, name),
        _ => Err(Error::NotADirectory(dir_cid.to_string())),
    }
}

/// The entries of a directory node, sorted by name bytes.
pub fn list(blocks: &dyn Blocks, dir_cid: &Cid, dir: &Node) -> Result<Vec<DirEntry>, Error> {
    list_at_most(blocks, dir_cid, dir, usize::MAX)
}

/// Most entries `list_at_most` is asked to hold of a directory someone else made, unless
/// the user set another bound: at about 1 KiB an entry held, a bound on memory that
/// directories of ordinary size (a few 100,000 entries) stay well inside.
pub const LISTING_LIMIT: usize = 1_000_000;

/// `list`, for a directory someone else made: one of more than `max` entries (or a
/// HAMT of more than `max` shards) fails with `TooManyEntries` before it holds more.
pub fn list_at_most(
    blocks: &dyn Blocks,
    dir_cid: &Cid,
    dir: &Node,
    max: usize,
) -> Result<Vec<DirEntry>, Error> {
    let too_many = || Error::TooManyEntries { cid: *dir_cid, max };
    let mut out = match dir {
        Node::Directory(d) if d.links.len() > max => return Err(too_many()),
        Node::Directory(d) => d
            .links
            .iter()
            .map(|l| DirEntry {
                name: l.name.clone().unwrap_or_default(),
                cid: l.cid,
                tsize: l.tsize.unwrap_or(0),
            })
            .collect(),
        Node::Shard(s) => hamt::entries(blocks, dir_cid, s, max)?,
        _ => return Err(Error::NotADirectory(dir_cid.to_string())),
    };
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Random access into a file DAG.
pub struct FileReader<'b> {
    blocks: &'b dyn Blocks,
    root: Arc<FileNode>,
    root_cid: Cid,
}

impl<'b> FileReader<'b> {
    pub fn open(blocks: &'b dyn Blocks, cid: &Cid) -> Result<Self, Error> {
        match load_node(blocks, cid)? {
            Node::File(root) => Ok(FileReader {
                blocks,
                root: Arc::new(root),
                root_cid: *cid,
            }),
            n if n.is_dir() => Err(Error::IsADirectory(cid.to_string())),
            _ => Err(Error::NotAFile(cid.to_string())),
        }
    }

    /// A reader of the file `cid` whose root node is already decoded (shared, so a
    /// caller that keeps it open does not copy its links for every read).
    pub fn from_node(blocks: &'b dyn Blocks, cid: Cid, root: impl Into<Arc<FileNode>>) -> Self {
        FileReader {
            blocks,
            root: root.into(),
            root_cid: cid,
        }
    }

    pub fn size(&self) -> u64 {
        self.root.filesize
    }

    /// Fills `buf` from `offset`; returns how many bytes were read (0 at end of file).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        if offset >= self.size() || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size() - offset) as usize;
        self.read_node(&self.root, &self.root_cid, offset, &mut buf[..len], 0)?;
        Ok(len)
    }

    /// The raw leaf that holds all of `[offset, offset + len)`: its CID, where in it the
    /// range starts, and its size. `None` when the range is not inside one raw leaf (it spans several, or
    /// lies in inline data or a non-raw leaf). Lets a reader hand out a leaf's bytes
    /// without copying them.
    pub fn leaf_holding(&self, offset: u64, len: u64) -> Result<Option<(Cid, u64, u64)>, Error> {
        let end = offset.saturating_add(len);
        if len == 0 || end > self.size() {
            return Ok(None);
        }
        let mut node = Arc::clone(&self.root);
        let mut offset = offset;
        for _ in 0..=MAX_FILE_DEPTH {
            let mut pos = node.inline.len() as u64;
            if offset < pos {
                return Ok(None);
            }
            let Some((cid, size)) = node.children.iter().find(|(_, size)| {
                pos += size;
                offset < pos
            }) else {
                return Ok(None);
            };
            let start = pos - size;
            if offset + len > pos {
                return Ok(None);
            }
            offset -= start;
            if cid.codec() == RAW {
                return Ok(Some((*cid, offset, *size)));
            }
            node = match load_node(self.blocks, cid)? {
                Node::File(f) if f.filesize == *size => Arc::new(f),
                _ => {
                    return Err(Error::Malformed {
                        cid: *cid,
                        source: FormatError::UnixFs("file part has the wrong size or type"),
                    })
                }
            };
        }
        Err(Error::Malformed {
            cid: self.root_cid,
            source: FormatError::UnixFs("file DAG too deep"),
        })
    }

    /// Copies `buf.len()` bytes starting `offset` bytes into `node` (the caller keeps
    /// the range inside the node).
    fn read_node(
        &self,
        node: &FileNode,
        cid: &Cid,
        offset: u64,
        buf: &mut [u8],
        depth: usize,
    ) -> Result<(), Error> {
        if depth > MAX_FILE_DEPTH {
            return Err(Error::Malformed {
                cid: *cid,
                source: FormatError::UnixFs("file DAG too deep"),
            });
        }
        let mut pos = 0u64; // start of the current piece within the node
        let mut done = 0usize;
        let inline = node.inline.len() as u64;
        if offset < inline {
            let n = ((inline - offset) as usize).min(buf.len());
            buf[..n].copy_from_slice(&node.inline[offset as usize..offset as usize + n]);
            done = n;
        }
        pos += inline;
        for (child_cid, size) in &node.children {
            if done == buf.len() {
                break;
            }
            let want = offset + done as u64;
            if want >= pos + size {
                pos += size;
                continue;
            }
            let within = want - pos;
            let n = ((size - within) as usize).min(buf.len() - done);
            if child_cid.codec() == RAW {
                // A raw leaf is file bytes: copy just the part wanted.
                let out = &mut buf[done..done + n];
                match self.blocks.read_part(child_cid, within, out)? {
                    Some(len) if len == *size => {}
                    Some(_) => {
                        return Err(Error::Malformed {
                            cid: *child_cid,
                            source: FormatError::UnixFs("file part has the wrong size or type"),
                        })
                    }
                    None => return Err(Error::Missing(*child_cid)),
                }
                done += n;
                pos += size;
                continue;
            }
            let child = match load_node(self.blocks, child_cid)? {
                Node::File(f) if f.filesize == *size => f,
                _ => {
                    return Err(Error::Malformed {
                        cid: *child_cid,
                        source: FormatError::UnixFs("file part has the wrong size or type"),
                    })
                }
            };
            self.read_node(
                &child,
                child_cid,
                within,
                &mut buf[done..done + n],
                depth + 1,
            )?;
            done += n;
            pos += size;
        }
        if done != buf.len() {
            return Err(Error::Malformed {
                cid: *cid,
                source: FormatError::UnixFs("file is shorter than its size"),
            });
        }
        Ok(())
    }

    /// Streams the whole file to `out`, visiting each block once, in order. A second
    /// thread reads up to `READ_AHEAD` blocks ahead while this one writes, so the store
    /// and `out` are busy at the same time. `progress` hears the total bytes written.
    pub fn copy_to(
        &self,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(READ_AHEAD);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut root = (*self.root).clone();
                self.stream(
                    &mut root,
                    &self.root_cid,
                    &mut |piece| tx.send(piece).is_ok(),
                    0,
                )
            });
            let mut written = 0u64;
            let mut write_error = None;
            for piece in rx.iter() {
                if let Err(e) = out.write_all(&piece) {
                    write_error = Some(e);
                    break; // dropping `rx` stops the reader at its next send
                }
                written += piece.len() as u64;
                progress(written);
            }
            drop(rx);
            let read = reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            match write_error {
                Some(e) => Err(Error::Io(e)),
                None => read.map(|_| written),
            }
        })
    }

    /// Hands the file's bytes under `node` to `emit`, in order; returns how many. Stops
    /// early (with the count so far) when `emit` says the receiver is gone.
    fn stream(
        &self,
        node: &mut FileNode,
        cid: &Cid,
        emit: &mut dyn FnMut(Vec<u8>) -> bool,
        depth: usize,
    ) -> Result<u64, Error> {
        if depth > MAX_FILE_DEPTH {
            return Err(Error::Malformed {
                cid: *cid,
                source: FormatError::UnixFs("file DAG too deep"),
            });
        }
        let mut produced = node.inline.len() as u64;
        if !node.inline.is_empty() && !emit(std::mem::take(&mut node.inline)) {
            return Ok(produced);
        }
        for (child_cid, size) in &node.children {
            let mut child = match load_node(self.blocks, child_cid)? {
                Node::File(f) => f,
                _ => {
                    return Err(Error::Malformed {
                        cid: *child_cid,
                        source: FormatError::UnixFs("file part is not a file"),
                    })
                }
            };
            let n = self.stream(&mut child, child_cid, emit, depth + 1)?;
            if n != *size {
                return Err(Error::Malformed {
                    cid: *child_cid,
                    source: FormatError::UnixFs("file part has the wrong size"),
                });
            }
            produced += n;
        }
        Ok(produced)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::block::Block;
    use crate::store::{MemoryBlocks, StoreError};
    use crate::unixfs::build::{build_directory, FileBuilder};
    use crate::unixfs::{ImportOptions, Metadata, Profile};

    /// Counts block reads, to show which blocks a read touches.
    #[derive(Default)]
    struct Counting {
        inner: MemoryBlocks,
        gets: AtomicUsize,
    }

    impl Blocks for Counting {
        fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get(cid)
        }
        fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
            self.inner.has(cid)
        }
        fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
            self.inner.put_many(blocks, durable)
        }
        fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
            self.inner.delete_many(cids)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn small_opts(raw_leaves: bool) -> ImportOptions {
        ImportOptions {
            chunk_size: 100,
            max_links: 4,
            raw_leaves,
            ..Profile::V1_2025.options()
        }
    }

    fn build_file(store: &Counting, content: &[u8], opts: &ImportOptions) -> Cid {
        let mut sink = &store.inner;
        let mut b = FileBuilder::new(opts, Metadata::default());
        for chunk in content.chunks(100) {
            b.push(chunk.to_vec(), &mut sink).unwrap();
        }
        b.finish(&mut sink).unwrap().cid
    }

    #[test]
    fn the_leaf_holding_a_range_has_its_bytes() {
        let store = Counting::default();
        let content = data(10_000); // 100 leaves of 100 bytes, 4 levels of nodes
        let cid = build_file(&store, &content, &small_opts(true));
        let reader = FileReader::open(&store, &cid).unwrap();
        for (off, len) in [(0, 100), (0, 1), (250, 50), (9_950, 50), (4_321, 7)] {
            let (leaf, at, size) = reader.leaf_holding(off, len).unwrap().unwrap();
            assert_eq!(leaf.codec(), RAW);
            let bytes = store.inner.get(&leaf).unwrap().unwrap();
            assert_eq!(bytes.len() as u64, size);
            let at = at as usize;
            assert_eq!(
                &bytes[at..at + len as usize],
                &content[off as usize..(off + len) as usize],
                "{off}+{len}"
            );
        }
        // Ranges across leaves, empty, or past the end are not one leaf's.
        for (off, len) in [(50, 100), (99, 2), (0, 0), (9_950, 51), (20_000, 1)] {
            assert_eq!(reader.leaf_holding(off, len).unwrap(), None, "{off}+{len}");
        }
        // Leaves wrapped in dag-pb are not raw bytes.
        let wrapped = build_file(&store, &content, &small_opts(false));
        let reader = FileReader::open(&store, &wrapped).unwrap();
        assert_eq!(reader.leaf_holding(0, 10).unwrap(), None);
    }

    #[test]
    fn random_reads_return_the_right_bytes_and_touch_only_their_path() {
        for raw in [true, false] {
            let store = Counting::default();
            let content = data(10_000); // 100 chunks, 4 links per node: 4 levels of nodes
            let cid = build_file(&store, &content, &small_opts(raw));
            let reader = FileReader::open(&store, &cid).unwrap();
            assert_eq!(reader.size(), 10_000);
            for (off, len) in [
                (0, 1),
                (99, 2),
                (5_000, 777),
                (9_999, 10),
                (0, 10_000),
                (12_000, 5),
            ] {
                let mut buf = vec![0u8; len];
                let n = reader.read_at(off as u64, &mut buf).unwrap();
                let end = (off + len).min(content.len());
                let want = if off < content.len() {
                    &content[off..end]
                } else {
                    &[][..]
                };
                assert_eq!(&buf[..n], want, "read at {off} len {len}");
            }
            // One byte: the root was read at open; then one node per level down to a leaf.
            store.gets.store(0, Ordering::Relaxed);
            reader.read_at(4_321, &mut [0u8; 1]).unwrap();
            assert_eq!(
                store.gets.load(Ordering::Relaxed),
                4,
                "levels below the root: 3 nodes + 1 leaf"
            );
        }
    }

    #[test]
    fn streaming_copy_matches_the_content() {
        let store = Counting::default();
        let content = data(12_345);
        let cid = build_file(&store, &content, &small_opts(false));
        let mut out = Vec::new();
        FileReader::open(&store, &cid)
            .unwrap()
            .copy_to(&mut out, &mut |_| {})
            .unwrap();
        assert_eq!(out, content);
    }

    #[test]
    fn hamt_lookup_follows_the_hash_path() {
        let store = Counting::default();
        let opts = ImportOptions {
            shard_threshold: 1000,
            ..Profile::V1_2025.options()
        };
        let leaf = Block::hash(cid::Version::V1, crate::block::RAW, b"x".to_vec());
        let entries: Vec<DirEntry> = (0..3000)
            .map(|i| DirEntry {
                name: format!("name-{i}").into_bytes(),
                cid: *leaf.cid(),
                tsize: 1,
            })
            .collect();
        let mut sink = &store.inner;
        let root = build_directory(entries, Metadata::default(), &opts, &mut sink)
            .unwrap()
            .cid;
        let node = load_node(&store, &root).unwrap();
        assert!(matches!(node, Node::Shard(_)));
        for i in [0, 1, 1234, 2999] {
            store.gets.store(0, Ordering::Relaxed);
            let found = lookup(&store, &root, &node, format!("name-{i}").as_bytes()).unwrap();
            assert_eq!(
                found.map(|e| e.name),
                Some(format!("name-{i}").into_bytes())
            );
            assert!(
                store.gets.load(Ordering::Relaxed) <= 3,
                "a lookup reads one block per level"
            );
        }
        assert_eq!(lookup(&store, &root, &node, b"absent").unwrap(), None);
        let all = list(&store, &root, &node).unwrap();
        assert_eq!(all.len(), 3000);
    }
}
