//! The contents of a file being read or written: its chunks as a copy-on-write overlay
//! over the stored DAG. Unchanged chunks stay stored leaves (same CIDs); a chunk that is
//! written is copied into memory, and stored again as soon as it is full, so memory holds
//! a few chunks however big the write. Every chunk but the last is exactly the profile's
//! chunk size, so the DAG built from the leaves is the one `peerfs add` would build.

use std::sync::Arc;

use cid::Cid;

use super::staging::{StageSink, Staging};
use super::DriveError;
use crate::block::{DAG_PB, RAW};
use crate::store::readahead::ReadAhead;
use crate::store::Blocks;
use crate::unixfs::build::{leaf_block, Built, FileBuilder, StoredLeaf};
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::data::{DataType, Metadata, UnixFsData};
use crate::unixfs::read::FileReader;
use crate::unixfs::{Error, FormatError, ImportOptions};

/// Full chunks kept in memory before the oldest is stored: enough for a few interleaved
/// random writes to hit the same chunk without rehashing it each time.
const MAX_DIRTY_CHUNKS: usize = 8;

/// A file DAG deeper than this is hostile (see `unixfs::read`).
const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug)]
enum Chunk {
    Stored(StoredLeaf),
    Dirty(Vec<u8>),
    /// A hole: this many zero bytes, not yet materialised.
    Zeros(u64),
}

impl Chunk {
    fn len(&self) -> u64 {
        match self {
            Chunk::Stored(l) => l.len,
            Chunk::Dirty(b) => b.len() as u64,
            Chunk::Zeros(n) => *n,
        }
    }
}

pub struct FileContent {
    chunks: Vec<Chunk>,
    size: u64,
    chunk_size: u64,
    /// Written since the last `build`.
    pub changed: bool,
    /// The last stored leaf read, for the many small reads of one chunk.
    cached: Option<(Cid, Arc<Vec<u8>>)>,
    /// Index of the stored chunk last loaded, and whether it followed the one before.
    last_loaded: Option<usize>,
    sequential: bool,
    /// Chunks before this index were already handed out for read-ahead.
    ahead_until: usize,
}

impl FileContent {
    pub fn empty(opts: &ImportOptions) -> FileContent {
        FileContent {
            chunks: Vec::new(),
            size: 0,
            chunk_size: opts.chunk_size,
            changed: false,
            cached: None,
            last_loaded: None,
            sequential: false,
            ahead_until: 0,
        }
    }

    /// Opens the stored file `root`. A DAG whose leaves are not all of the profile's
    /// chunk size (imported with other options) is re-chunked into stored leaves first.
    pub fn load(staging: &Staging, opts: &ImportOptions, root: &Cid) -> Result<Self, DriveError> {
        let mut leaves = Vec::new();
        let bytes = staging.get(root)?.ok_or(Error::Missing(*root))?;
        let uniform = collect_leaves(staging, root, bytes, None, &mut leaves, 0)?;
        let mut content = FileContent::empty(opts);
        let cs = opts.chunk_size;
        let n = leaves.len();
        let regular = uniform
            && leaves
                .iter()
                .enumerate()
                .all(|(i, l)| l.len == cs || (i + 1 == n && l.len > 0 && l.len <= cs));
        if regular {
            for leaf in leaves {
                content.size += leaf.len;
                // A staged leaf is dropped at the next commit unless the tree reaches it;
                // an open file must not lose it, so it keeps its own copy. A lone chunk
                // may be a root carrying metadata, never reusable as a leaf.
                let chunk = if n == 1 || staging.is_pending(&leaf.cid) {
                    Chunk::Dirty(leaf_bytes(staging, &leaf.cid)?)
                } else {
                    Chunk::Stored(leaf)
                };
                content.chunks.push(chunk);
            }
            return Ok(content);
        }
        let reader = FileReader::open(staging, root)?;
        let mut offset = 0;
        while offset < reader.size() {
            let mut buf = vec![0; (reader.size() - offset).min(cs) as usize];
            reader.read_at(offset, &mut buf)?;
            offset += buf.len() as u64;
            content.size += buf.len() as u64;
            let (block, leaf) = leaf_block(opts, buf);
            staging.put_chunk(block)?;
            content.chunks.push(Chunk::Stored(leaf));
        }
        Ok(content)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads from the stored chunks, taking those `ahead` has read already.
    pub fn read(
        &mut self,
        blocks: &dyn Blocks,
        ahead: Option<&ReadAhead>,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, DriveError> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = (offset + u64::from(len)).min(self.size);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let idx = (pos / self.chunk_size) as usize;
            let start = pos % self.chunk_size;
            let take = (self.chunks[idx].len() - start).min(end - pos);
            let range = start as usize..(start + take) as usize;
            match &self.chunks[idx] {
                Chunk::Dirty(b) => out.extend_from_slice(&b[range]),
                Chunk::Zeros(_) => out.resize(out.len() + take as usize, 0),
                Chunk::Stored(leaf) => {
                    let leaf = *leaf;
                    if self.cached.as_ref().is_none_or(|(c, _)| *c != leaf.cid) {
                        self.note_load(idx);
                    }
                    let bytes = self.stored(blocks, ahead, &leaf)?;
                    out.extend_from_slice(&bytes[range]);
                }
            }
            pos += take;
        }
        Ok(out)
    }

    fn note_load(&mut self, idx: usize) {
        self.sequential = self.last_loaded.map_or(idx == 0, |last| idx == last + 1);
        if !self.sequential {
            self.ahead_until = idx + 1;
        }
        self.last_loaded = Some(idx);
    }

    /// The stored chunks within `bytes` after the last one loaded, each handed out once,
    /// while the file is being read in order; none for random reads.
    pub fn read_ahead(&mut self, bytes: u64) -> Vec<Cid> {
        let Some(last) = self.last_loaded.filter(|_| self.sequential) else {
            return Vec::new();
        };
        let window = (bytes / self.chunk_size).max(1) as usize;
        let from = self.ahead_until.max(last + 1);
        let to = (last + 1 + window).min(self.chunks.len());
        if from >= to {
            return Vec::new();
        }
        self.ahead_until = to;
        self.chunks[from..to]
            .iter()
            .filter_map(|c| match c {
                Chunk::Stored(leaf) => Some(leaf.cid),
                _ => None,
            })
            .collect()
    }

    /// A stored leaf's bytes, checked against the length its parent promised.
    fn stored(
        &mut self,
        blocks: &dyn Blocks,
        ahead: Option<&ReadAhead>,
        leaf: &StoredLeaf,
    ) -> Result<Arc<Vec<u8>>, DriveError> {
        if let Some((c, bytes)) = &self.cached {
            if *c == leaf.cid {
                return Ok(Arc::clone(bytes));
            }
        }
        let bytes = match ahead.and_then(|a| a.take(&leaf.cid)) {
            Some(block) => leaf_data(&leaf.cid, block)?,
            None => leaf_bytes(blocks, &leaf.cid)?,
        };
        if bytes.len() as u64 != leaf.len {
            return Err(Error::Malformed {
                cid: leaf.cid,
                source: FormatError::UnixFs("file part has the wrong size"),
            }
            .into());
        }
        let bytes = Arc::new(bytes);
        self.cached = Some((leaf.cid, Arc::clone(&bytes)));
        Ok(bytes)
    }

    pub fn write(
        &mut self,
        staging: &Staging,
        opts: &ImportOptions,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DriveError> {
        let end = offset + data.len() as u64;
        if end > self.size {
            self.set_len(staging, end)?;
        }
        self.changed = true;
        let mut pos = offset;
        while pos < end {
            let idx = (pos / self.chunk_size) as usize;
            let start = (pos % self.chunk_size) as usize;
            let take = ((self.chunk_size - start as u64).min(end - pos)) as usize;
            let src = &data[(pos - offset) as usize..(pos - offset) as usize + take];
            let buf = self.make_dirty(staging, idx)?;
            buf[start..start + take].copy_from_slice(src);
            let full_to_end = start + take == buf.len() && buf.len() as u64 == self.chunk_size;
            pos += take as u64;
            if full_to_end {
                // Written up to its end: sequential writers are done with this chunk.
                self.seal(staging, opts, idx)?;
            }
        }
        self.limit_dirty(staging, opts)
    }

    /// Copies chunk `idx` into memory (copy on write) and returns its bytes.
    fn make_dirty(&mut self, staging: &Staging, idx: usize) -> Result<&mut Vec<u8>, DriveError> {
        let bytes = match &self.chunks[idx] {
            Chunk::Dirty(_) => None,
            Chunk::Zeros(n) => Some(vec![0; *n as usize]),
            Chunk::Stored(leaf) => {
                let leaf = *leaf;
                Some(self.stored(staging, None, &leaf)?.as_ref().clone())
            }
        };
        if let Some(b) = bytes {
            self.chunks[idx] = Chunk::Dirty(b);
        }
        match &mut self.chunks[idx] {
            Chunk::Dirty(b) => Ok(b),
            _ => unreachable!("the chunk was just made dirty"),
        }
    }

    /// Stores a full dirty chunk and keeps only its leaf.
    fn seal(
        &mut self,
        staging: &Staging,
        opts: &ImportOptions,
        idx: usize,
    ) -> Result<(), DriveError> {
        if let Chunk::Dirty(b) = &mut self.chunks[idx] {
            let (block, leaf) = leaf_block(opts, std::mem::take(b));
            if let Err(e) = staging.put_chunk(block.clone()) {
                self.chunks[idx] = Chunk::Dirty(block.data().to_vec());
                return Err(e.into());
            }
            self.chunks[idx] = Chunk::Stored(leaf);
        }
        Ok(())
    }

    fn limit_dirty(&mut self, staging: &Staging, opts: &ImportOptions) -> Result<(), DriveError> {
        let last = self.chunks.len().saturating_sub(1);
        let full: Vec<usize> = (0..last)
            .filter(|&i| matches!(self.chunks[i], Chunk::Dirty(_)))
            .collect();
        if full.len() > MAX_DIRTY_CHUNKS {
            for &i in &full[..full.len() - MAX_DIRTY_CHUNKS] {
                self.seal(staging, opts, i)?;
            }
        }
        Ok(())
    }

    /// Grows (with zeros) or shrinks the file to `size` bytes.
    pub fn set_len(&mut self, staging: &Staging, size: u64) -> Result<(), DriveError> {
        if size == self.size {
            return Ok(());
        }
        self.changed = true;
        let cs = self.chunk_size;
        if size < self.size {
            let keep = size.div_ceil(cs) as usize;
            self.chunks.truncate(keep);
            let tail = size - (keep as u64).saturating_sub(1) * cs;
            if keep > 0 && self.chunks[keep - 1].len() != tail {
                self.resize_chunk(staging, keep - 1, tail)?;
            }
        } else {
            if let Some(last) = self.chunks.len().checked_sub(1) {
                let want = (size - last as u64 * cs).min(cs);
                self.resize_chunk(staging, last, want)?;
            }
            let mut covered = self.chunks.len() as u64 * cs;
            while covered < size {
                let n = (size - covered).min(cs);
                self.chunks.push(Chunk::Zeros(n));
                covered += n;
            }
        }
        self.size = size;
        Ok(())
    }

    fn resize_chunk(&mut self, staging: &Staging, idx: usize, len: u64) -> Result<(), DriveError> {
        // A full stored chunk that stays full must stay stored: appending after it
        // would otherwise read it back, hash it and store it again.
        if self.chunks[idx].len() == len {
            return Ok(());
        }
        if let Chunk::Zeros(n) = &mut self.chunks[idx] {
            *n = len;
            return Ok(());
        }
        self.make_dirty(staging, idx)?.resize(len as usize, 0);
        Ok(())
    }

    /// Builds the file's DAG with `meta` on its root; new blocks are staged.
    pub fn build(
        &mut self,
        staging: &Staging,
        opts: &ImportOptions,
        meta: Metadata,
    ) -> Result<Built, DriveError> {
        let mut builder = FileBuilder::new(opts, meta);
        let mut sink = StageSink(staging);
        if self.chunks.len() <= 1 {
            let bytes = self.read(staging, None, 0, self.size as u32)?;
            builder.push(bytes, &mut sink)?;
        } else {
            let last = self.chunks.len() - 1;
            for i in 0..last {
                self.seal(staging, opts, i)?;
            }
            for chunk in &self.chunks {
                match chunk {
                    Chunk::Stored(leaf) => builder.push_stored(*leaf, &mut sink)?,
                    Chunk::Dirty(b) => builder.push(b.clone(), &mut sink)?,
                    Chunk::Zeros(n) => builder.push(vec![0; *n as usize], &mut sink)?,
                }
            }
        }
        self.changed = false;
        Ok(builder.finish(&mut sink)?)
    }
}

/// The file bytes a leaf holds: a raw block, or a UnixFS node's inline data.
fn leaf_bytes(blocks: &dyn Blocks, cid: &Cid) -> Result<Vec<u8>, DriveError> {
    let bytes = blocks.get(cid)?.ok_or(Error::Missing(*cid))?;
    leaf_data(cid, bytes)
}

/// The file bytes in leaf block `bytes`.
fn leaf_data(cid: &Cid, bytes: Vec<u8>) -> Result<Vec<u8>, DriveError> {
    if cid.codec() == RAW {
        return Ok(bytes);
    }
    let malformed = |source| Error::Malformed { cid: *cid, source };
    let node = PbNode::decode(&bytes).map_err(malformed)?;
    let data = node
        .data
        .ok_or(FormatError::UnixFs("DAG-PB node without UnixFS Data"))
        .map_err(malformed)?;
    Ok(UnixFsData::decode(&data)
        .map_err(malformed)?
        .data
        .unwrap_or_default())
}

/// Appends the leaves under `cid` in order; false when the DAG is not the plain
/// balanced form (a node with both inline data and children).
fn collect_leaves(
    blocks: &dyn Blocks,
    cid: &Cid,
    bytes: Vec<u8>,
    tsize: Option<u64>,
    out: &mut Vec<StoredLeaf>,
    depth: usize,
) -> Result<bool, DriveError> {
    let malformed = |source| Error::Malformed { cid: *cid, source };
    if depth > MAX_DEPTH {
        return Err(malformed(FormatError::UnixFs("file DAG too deep")).into());
    }
    let own = bytes.len() as u64;
    match cid.codec() {
        RAW => {
            out.push(StoredLeaf {
                cid: *cid,
                tsize: own,
                len: own,
            });
            return Ok(true);
        }
        DAG_PB => {}
        other => return Err(malformed(FormatError::Codec(other)).into()),
    }
    let node = PbNode::decode(&bytes).map_err(malformed)?;
    let data = node
        .data
        .as_deref()
        .ok_or(FormatError::UnixFs("DAG-PB node without UnixFS Data"))
        .map_err(malformed)?;
    let d = UnixFsData::decode(data).map_err(malformed)?;
    if !matches!(d.kind, DataType::File | DataType::Raw) {
        return Err(malformed(FormatError::UnixFs("not a file node")).into());
    }
    let inline = d.data.as_ref().map_or(0, |b| b.len() as u64);
    if node.links.is_empty() {
        if inline > 0 {
            out.push(StoredLeaf {
                cid: *cid,
                tsize: tsize.unwrap_or(own),
                len: inline,
            });
        }
        return Ok(true);
    }
    if inline > 0 {
        return Ok(false);
    }
    if d.blocksizes.len() != node.links.len() {
        return Err(malformed(FormatError::UnixFs("blocksizes do not match the links")).into());
    }
    let mut uniform = true;
    for (link, &len) in node.links.iter().zip(&d.blocksizes) {
        if link.cid.codec() == RAW {
            // A raw child is a leaf: no need to read a megabyte to learn its size.
            out.push(StoredLeaf {
                cid: link.cid,
                tsize: link.tsize.unwrap_or(len),
                len,
            });
            continue;
        }
        let child = blocks.get(&link.cid)?.ok_or(Error::Missing(link.cid))?;
        uniform &= collect_leaves(blocks, &link.cid, child, link.tsize, out, depth + 1)?;
    }
    Ok(uniform)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rocks::RocksStore;

    /// A file of `n` stored chunks of 1 KiB in a fresh store.
    fn stored_file(dir: &std::path::Path, n: usize) -> (Staging, FileContent, Vec<Cid>) {
        let store = RocksStore::open(dir, true).unwrap();
        let staging = Staging::new(Arc::new(store));
        let opts = ImportOptions {
            chunk_size: 1024,
            ..ImportOptions::default()
        };
        let mut file = FileContent::empty(&opts);
        for i in 0..n {
            file.write(&staging, &opts, i as u64 * 1024, &[i as u8; 1024])
                .unwrap();
        }
        let leaves = file
            .chunks
            .iter()
            .map(|c| match c {
                Chunk::Stored(leaf) => leaf.cid,
                other => panic!("not stored: {other:?}"),
            })
            .collect();
        (staging, file, leaves)
    }

    #[test]
    fn read_ahead_follows_sequential_readers_only() {
        let dir = tempfile::tempdir().unwrap();
        let (staging, mut file, leaves) = stored_file(dir.path(), 10);
        assert!(file.read_ahead(3 << 10).is_empty(), "nothing read yet");

        // In order from the start: the next three chunks, each handed out once.
        assert_eq!(file.read(&staging, None, 0, 512).unwrap(), vec![0; 512]);
        assert_eq!(file.read_ahead(3 << 10), leaves[1..4]);
        file.read(&staging, None, 512, 512).unwrap();
        assert!(file.read_ahead(3 << 10).is_empty());
        file.read(&staging, None, 1024, 1024).unwrap();
        assert_eq!(file.read_ahead(3 << 10), leaves[4..5]);

        // A jump is a random read: nothing, until reads go in order again.
        file.read(&staging, None, 8 * 1024, 10).unwrap();
        assert!(file.read_ahead(3 << 10).is_empty());
        file.read(&staging, None, 2 * 1024, 10).unwrap();
        assert!(file.read_ahead(3 << 10).is_empty());
        file.read(&staging, None, 3 * 1024, 10).unwrap();
        assert_eq!(file.read_ahead(3 << 10), leaves[4..7]);

        // The window stops at the end of the file.
        file.read(&staging, None, 4 * 1024, 3 * 1024).unwrap();
        assert_eq!(file.read_ahead(3 << 10), leaves[7..10]);
        assert!(file.read_ahead(3 << 10).is_empty());
    }
}
