//! The contents of a file being read or written: its chunks as a copy-on-write overlay
//! over the stored DAG. Unchanged chunks stay stored leaves (same CIDs); a chunk that is
//! written is copied into memory, and stored again as soon as it is full, so memory holds
//! a few chunks however big the write. Every chunk but the last is exactly the profile's
//! chunk size, so the DAG built from the leaves is the one `peerfs add` would build.
//!
//! Holes are runs: a chunk that holds only zeros is not kept at all, in memory or in the
//! store beyond the shared zero subtrees (`ZeroRuns`), so a terabyte of sparse file costs
//! what its data costs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cid::Cid;

use super::leaves::{leaf_bytes, leaf_data, Leaves};
use super::staging::{StageSink, Staging};
use crate::store::readahead::ReadAhead;
use crate::store::Blocks;
use crate::unixfs::build::{leaf_block, Built, FileBuilder, StoredLeaf, ZeroRuns};
use crate::unixfs::data::Metadata;
use crate::unixfs::read::FileReader;
use crate::unixfs::{Error, FormatError, ImportOptions};
use crate::vfs::{FsError, Seek};

/// The largest file the drive holds, as ext4 with 4 KiB blocks: beyond it, `EFBIG`.
pub const MAX_FILE_SIZE: u64 = 16 << 40;

/// Full chunks kept in memory before the oldest is stored: enough for a few interleaved
/// random writes to hit the same chunk without rehashing it each time.
const MAX_DIRTY_CHUNKS: usize = 8;

#[derive(Clone, Debug)]
enum Chunk {
    Stored(StoredLeaf),
    Dirty(Vec<u8>),
}

pub struct FileContent {
    /// The chunks that hold data, by index. An index below the chunk count that is
    /// missing here is a hole: zeros.
    chunks: BTreeMap<u64, Chunk>,
    /// Indexes of the `Dirty` chunks.
    dirty: BTreeSet<u64>,
    size: u64,
    chunk_size: u64,
    /// Written since the last `build`.
    pub changed: bool,
    /// The last stored leaf read, for the many small reads of one chunk.
    cached: Option<(Cid, Arc<Vec<u8>>)>,
    /// Index of the stored chunk last loaded, and whether it followed the one before.
    last_loaded: Option<u64>,
    sequential: bool,
    /// Chunks before this index were already handed out for read-ahead.
    ahead_until: u64,
}

impl FileContent {
    pub fn empty(opts: &ImportOptions) -> FileContent {
        FileContent {
            chunks: BTreeMap::new(),
            dirty: BTreeSet::new(),
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
    pub fn load(
        staging: &Staging,
        opts: &ImportOptions,
        zeros: &ZeroRuns,
        root: &Cid,
    ) -> Result<Self, FsError> {
        let mut leaves = Leaves::new(opts.chunk_size, zeros);
        let bytes = staging.get(root)?.ok_or(Error::Missing(*root))?;
        leaves.collect(staging, root, bytes, None, 0)?;
        let mut content = FileContent::empty(opts);
        if leaves.regular {
            content.size = leaves.size;
            let lone = leaves.next == 1;
            for (idx, leaf) in leaves.map {
                // A staged leaf is dropped at the next commit unless the tree reaches it;
                // an open file must not lose it, so it keeps its own copy. A lone chunk
                // may be a root carrying metadata, never reusable as a leaf.
                if lone || staging.is_pending(&leaf.cid) {
                    content
                        .chunks
                        .insert(idx, Chunk::Dirty(leaf_bytes(staging, &leaf.cid)?));
                    content.dirty.insert(idx);
                } else {
                    content.chunks.insert(idx, Chunk::Stored(leaf));
                }
            }
            return Ok(content);
        }
        let reader = FileReader::open(staging, root)?;
        content.size = reader.size();
        let mut offset = 0;
        while offset < reader.size() {
            let mut buf = vec![0; (reader.size() - offset).min(opts.chunk_size) as usize];
            reader.read_at(offset, &mut buf)?;
            let idx = offset / opts.chunk_size;
            offset += buf.len() as u64;
            if buf.iter().any(|&b| b != 0) {
                let (block, leaf) = leaf_block(opts, buf);
                staging.put_chunk(block)?;
                content.chunks.insert(idx, Chunk::Stored(leaf));
            }
        }
        Ok(content)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The stored leaves this contents reads from (a sweep must keep them).
    pub fn stored_leaves(&self) -> impl Iterator<Item = Cid> + '_ {
        self.chunks.values().filter_map(|c| match c {
            Chunk::Stored(leaf) => Some(leaf.cid),
            Chunk::Dirty(_) => None,
        })
    }

    /// Bytes outside holes, for `du`.
    pub fn allocated(&self) -> u64 {
        self.chunks.keys().map(|&i| self.chunk_len(i)).sum()
    }

    fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// File bytes in chunk `idx`: the chunk size, less for the last one.
    fn chunk_len(&self, idx: u64) -> u64 {
        (self.size - idx * self.chunk_size).min(self.chunk_size)
    }

    /// Reads from the stored chunks, taking those `ahead` has read already.
    pub fn read(
        &mut self,
        blocks: &dyn Blocks,
        ahead: Option<&ReadAhead>,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, FsError> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = (offset + u64::from(len)).min(self.size);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let idx = pos / self.chunk_size;
            let start = pos % self.chunk_size;
            let take = (self.chunk_len(idx) - start).min(end - pos);
            let range = start as usize..(start + take) as usize;
            match self.chunks.get(&idx) {
                None => out.resize(out.len() + take as usize, 0),
                Some(Chunk::Dirty(b)) => out.extend_from_slice(&b[range]),
                Some(Chunk::Stored(leaf)) => {
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

    fn note_load(&mut self, idx: u64) {
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
        let window = (bytes / self.chunk_size).max(1);
        let from = self.ahead_until.max(last + 1);
        let to = (last + 1 + window).min(self.chunk_count());
        if from >= to {
            return Vec::new();
        }
        self.ahead_until = to;
        self.chunks
            .range(from..to)
            .filter_map(|(_, c)| match c {
                Chunk::Stored(leaf) => Some(leaf.cid),
                Chunk::Dirty(_) => None,
            })
            .collect()
    }

    /// Where the next data (or hole) at or after `offset` starts, as lseek(2) answers
    /// `SEEK_DATA` and `SEEK_HOLE`; `None` past the end (ENXIO). The end of the file
    /// counts as a hole.
    pub fn seek(&self, offset: u64, what: Seek) -> Option<u64> {
        if offset >= self.size {
            return None;
        }
        let idx = offset / self.chunk_size;
        match what {
            Seek::Data if self.chunks.contains_key(&idx) => Some(offset),
            Seek::Data => self
                .chunks
                .range(idx..)
                .next()
                .map(|(&i, _)| i * self.chunk_size),
            Seek::Hole => {
                let mut i = idx;
                while self.chunks.contains_key(&i) {
                    i += 1;
                }
                Some((i * self.chunk_size).clamp(offset, self.size))
            }
        }
    }

    /// A stored leaf's bytes, checked against the length its parent promised.
    fn stored(
        &mut self,
        blocks: &dyn Blocks,
        ahead: Option<&ReadAhead>,
        leaf: &StoredLeaf,
    ) -> Result<Arc<Vec<u8>>, FsError> {
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
    ) -> Result<(), FsError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > self.size {
            self.set_len(staging, end)?;
        }
        self.changed = true;
        let mut pos = offset;
        while pos < end {
            let idx = pos / self.chunk_size;
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
    fn make_dirty(&mut self, staging: &Staging, idx: u64) -> Result<&mut Vec<u8>, FsError> {
        let bytes = match self.chunks.get(&idx) {
            Some(Chunk::Dirty(_)) => None,
            None => Some(vec![0; self.chunk_len(idx) as usize]),
            Some(Chunk::Stored(leaf)) => {
                let leaf = *leaf;
                Some(self.stored(staging, None, &leaf)?.as_ref().clone())
            }
        };
        if let Some(b) = bytes {
            self.chunks.insert(idx, Chunk::Dirty(b));
            self.dirty.insert(idx);
        }
        match self.chunks.get_mut(&idx) {
            Some(Chunk::Dirty(b)) => Ok(b),
            _ => unreachable!("the chunk was just made dirty"),
        }
    }

    /// Stores a full dirty chunk and keeps only its leaf; a chunk of zeros becomes a hole.
    fn seal(&mut self, staging: &Staging, opts: &ImportOptions, idx: u64) -> Result<(), FsError> {
        let Some(Chunk::Dirty(b)) = self.chunks.get_mut(&idx) else {
            return Ok(());
        };
        if b.iter().all(|&x| x == 0) {
            self.chunks.remove(&idx);
            self.dirty.remove(&idx);
            return Ok(());
        }
        let (block, leaf) = leaf_block(opts, std::mem::take(b));
        if let Err(e) = staging.put_chunk(block.clone()) {
            self.chunks.insert(idx, Chunk::Dirty(block.data().to_vec()));
            return Err(e.into());
        }
        self.chunks.insert(idx, Chunk::Stored(leaf));
        self.dirty.remove(&idx);
        Ok(())
    }

    fn limit_dirty(&mut self, staging: &Staging, opts: &ImportOptions) -> Result<(), FsError> {
        let last = self.chunk_count().saturating_sub(1);
        let full = self.dirty.range(..last).count();
        if full > MAX_DIRTY_CHUNKS {
            let oldest: Vec<u64> = self
                .dirty
                .range(..last)
                .take(full - MAX_DIRTY_CHUNKS)
                .copied()
                .collect();
            for i in oldest {
                self.seal(staging, opts, i)?;
            }
        }
        Ok(())
    }

    /// Grows (with a hole) or shrinks the file to `size` bytes.
    pub fn set_len(&mut self, staging: &Staging, size: u64) -> Result<(), FsError> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        if size == self.size {
            return Ok(());
        }
        self.changed = true;
        let cs = self.chunk_size;
        // The chunk that is the last one before and after keeps its bytes up to the
        // new end; chunks past the new end go, and new room is a hole.
        let edge = size.min(self.size).saturating_sub(1) / cs;
        let keep = size.div_ceil(cs);
        self.chunks.split_off(&keep);
        self.dirty.split_off(&keep);
        self.size = size;
        if self.chunks.contains_key(&edge) {
            let want = self.chunk_len(edge);
            let have = match &self.chunks[&edge] {
                Chunk::Stored(l) => l.len,
                Chunk::Dirty(b) => b.len() as u64,
            };
            // A full stored chunk that stays full must stay stored: appending after it
            // would otherwise read it back, hash it and store it again.
            if have != want {
                self.make_dirty(staging, edge)?.resize(want as usize, 0);
            }
        }
        Ok(())
    }

    /// Builds the file's DAG with `meta` on its root; new blocks are staged.
    pub fn build(
        &mut self,
        staging: &Staging,
        opts: &ImportOptions,
        zeros: &ZeroRuns,
        meta: Metadata,
    ) -> Result<Built, FsError> {
        let mut builder = FileBuilder::new(opts, meta);
        let mut sink = StageSink(staging);
        let count = self.chunk_count();
        if count <= 1 {
            let bytes = self.read(staging, None, 0, self.size as u32)?;
            builder.push(bytes, &mut sink)?;
        } else {
            let full: Vec<u64> = self.dirty.range(..count - 1).copied().collect();
            for i in full {
                self.seal(staging, opts, i)?;
            }
            let mut next = 0;
            for (&idx, chunk) in &self.chunks {
                builder.push_zeros(idx - next, zeros, &mut sink)?;
                match chunk {
                    Chunk::Stored(leaf) => builder.push_stored(*leaf, &mut sink)?,
                    Chunk::Dirty(b) => builder.push(b.clone(), &mut sink)?,
                }
                next = idx + 1;
            }
            if next < count {
                // A hole up to the end: whole chunks, then a shorter last one.
                let last = count - 1;
                builder.push_zeros(last - next, zeros, &mut sink)?;
                builder.push(vec![0; self.chunk_len(last) as usize], &mut sink)?;
            }
        }
        self.changed = false;
        Ok(builder.finish(&mut sink)?)
    }
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
            file.write(&staging, &opts, i as u64 * 1024, &[i as u8 + 1; 1024])
                .unwrap();
        }
        let leaves = file
            .chunks
            .values()
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
        assert_eq!(file.read(&staging, None, 0, 512).unwrap(), vec![1; 512]);
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
