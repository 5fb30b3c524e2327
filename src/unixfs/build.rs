//! Building UnixFS DAGs: files streamed chunk by chunk, directories (flat or HAMT by
//! the profile's rule), symlinks. Every block goes to a `BlockSink` as soon as it is
//! final, so memory stays at a few chunks plus one pending node per tree level.

use cid::{Cid, Version};

use super::dagpb::{PbLink, PbNode};
use super::data::{DataType, Metadata, UnixFsData};
use super::hamt;
use super::profile::{ImportOptions, ShardStrategy};
use super::Error;
use crate::block::{Block, DAG_PB, RAW};
use crate::store::BlockSink;

/// A finished DAG: its root and the cumulative size its parent link records (Tsize).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    pub cid: Cid,
    pub tsize: u64,
}

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub cid: Cid,
    pub tsize: u64,
}

/// Encodes a DAG-PB node, names it, and hands it to `sink`. Its Tsize is its own size
/// plus its links' Tsizes, as the reference importers count it.
pub(crate) fn emit_node(
    version: Version,
    links: Vec<PbLink>,
    data: &UnixFsData,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let children: u64 = links.iter().filter_map(|l| l.tsize).sum();
    let block = Block::hash(
        version,
        DAG_PB,
        PbNode {
            links,
            data: Some(data.encode()),
        }
        .encode(),
    );
    let built = Built {
        cid: *block.cid(),
        tsize: block.len() + children,
    };
    sink.put(block)?;
    Ok(built)
}

/// A node of a file DAG under construction.
#[derive(Clone, Copy)]
struct Part {
    cid: Cid,
    tsize: u64,
    /// File bytes under this part.
    filesize: u64,
}

/// Builds a file DAG in the balanced layout from chunks pushed in order.
///
/// Equivalent to the reference importers' bottom-up batching: every `max_links` parts
/// of a level become one node of the level above; at the end partial groups are closed
/// from the bottom up. A file of one chunk is that chunk's block, unless it has
/// metadata, in which case it is a DAG-PB file node with the data inline (Kubo's form).
/// Metadata goes on the root only.
pub struct FileBuilder<'o> {
    opts: &'o ImportOptions,
    meta: Metadata,
    /// `levels[0]` holds leaves, `levels[1]` nodes over leaves, and so on.
    levels: Vec<Vec<Part>>,
    /// The first chunk, held back until we know whether it is the only one.
    first: Option<Vec<u8>>,
    chunks: u64,
    /// Levels of zero subtrees already handed to the sink by `push_zeros`.
    zeros_emitted: usize,
}

impl<'o> FileBuilder<'o> {
    pub fn new(opts: &'o ImportOptions, meta: Metadata) -> Self {
        FileBuilder {
            opts,
            meta,
            levels: vec![Vec::new()],
            first: None,
            chunks: 0,
            zeros_emitted: 0,
        }
    }

    pub fn chunk_size(&self) -> usize {
        self.opts.chunk_size as usize
    }

    /// Adds the next chunk (`chunk_size` bytes, except for the last one).
    pub fn push(&mut self, chunk: Vec<u8>, sink: &mut dyn BlockSink) -> Result<(), Error> {
        self.chunks += 1;
        if self.chunks == 1 {
            self.first = Some(chunk);
            return Ok(());
        }
        if let Some(first) = self.first.take() {
            self.push_leaf(first, sink)?;
        }
        self.push_leaf(chunk, sink)
    }

    fn push_leaf(&mut self, chunk: Vec<u8>, sink: &mut dyn BlockSink) -> Result<(), Error> {
        let part = self.leaf(chunk, sink)?;
        self.add(0, part, sink)
    }

    fn leaf(&self, chunk: Vec<u8>, sink: &mut dyn BlockSink) -> Result<Part, Error> {
        let (block, leaf) = leaf_block(self.opts, chunk);
        sink.put(block)?;
        Ok(Part {
            cid: leaf.cid,
            tsize: leaf.tsize,
            filesize: leaf.len,
        })
    }

    /// Adds a leaf that is already stored. Only for files of two or more chunks: a
    /// one-chunk file's form depends on its bytes, so it must come through `push`.
    pub fn push_stored(&mut self, leaf: StoredLeaf, sink: &mut dyn BlockSink) -> Result<(), Error> {
        self.chunks += 1;
        if let Some(first) = self.first.take() {
            self.push_leaf(first, sink)?;
        }
        let part = Part {
            cid: leaf.cid,
            tsize: leaf.tsize,
            filesize: leaf.len,
        };
        self.add(0, part, sink)
    }

    /// Adds `count` full chunks of zeros (a hole). Whole aligned runs go in as the
    /// shared zero subtrees, so a hole costs the same whatever its size.
    pub fn push_zeros(
        &mut self,
        mut count: u64,
        zeros: &ZeroRuns,
        sink: &mut dyn BlockSink,
    ) -> Result<(), Error> {
        // The first chunk decides the one-chunk form: it goes in the plain way.
        if count > 0 && self.chunks == 0 {
            self.push(vec![0; self.chunk_size()], sink)?;
            count -= 1;
        }
        if count > 0 {
            if let Some(first) = self.first.take() {
                self.push_leaf(first, sink)?;
            }
        }
        while count > 0 {
            // The largest subtree that starts here: every level below it is empty.
            let mut level = 0;
            while level + 1 < zeros.parts.len()
                && self.levels.get(level).is_none_or(Vec::is_empty)
                && count >= zeros.parts[level + 1].1
            {
                level += 1;
            }
            for (block, _) in &zeros.parts[self.zeros_emitted.min(level + 1)..=level] {
                sink.put(block.clone())?;
            }
            self.zeros_emitted = self.zeros_emitted.max(level + 1);
            let (block, chunks) = &zeros.parts[level];
            let part = Part {
                cid: *block.cid(),
                tsize: zeros.tsizes[level],
                filesize: chunks * self.opts.chunk_size,
            };
            self.chunks += chunks;
            count -= chunks;
            self.add(level, part, sink)?;
        }
        Ok(())
    }

    fn add(&mut self, level: usize, part: Part, sink: &mut dyn BlockSink) -> Result<(), Error> {
        while self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(part);
        if self.levels[level].len() == self.opts.max_links {
            let group = std::mem::take(&mut self.levels[level]);
            let node = self.reduce(&group, Metadata::default(), sink)?;
            self.add(level + 1, node, sink)?;
        }
        Ok(())
    }

    fn reduce(
        &self,
        group: &[Part],
        meta: Metadata,
        sink: &mut dyn BlockSink,
    ) -> Result<Part, Error> {
        let filesize = group.iter().map(|p| p.filesize).sum();
        let mut d = UnixFsData::new(DataType::File);
        d.filesize = Some(filesize);
        d.blocksizes = group.iter().map(|p| p.filesize).collect();
        d.meta = meta;
        let links = group
            .iter()
            .map(|p| PbLink::new(p.cid, Vec::new(), p.tsize))
            .collect();
        let built = emit_node(self.opts.cid_version, links, &d, sink)?;
        Ok(Part {
            cid: built.cid,
            tsize: built.tsize,
            filesize,
        })
    }

    /// Closes the DAG and returns its root.
    pub fn finish(mut self, sink: &mut dyn BlockSink) -> Result<Built, Error> {
        if self.chunks <= 1 {
            return self.finish_single(sink);
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            let group = std::mem::take(&mut self.levels[level]);
            if top && group.len() == 1 {
                return Ok(Built {
                    cid: group[0].cid,
                    tsize: group[0].tsize,
                });
            }
            if !group.is_empty() {
                let meta = if top { self.meta } else { Metadata::default() };
                let node = self.reduce(&group, meta, sink)?;
                if top {
                    return Ok(Built {
                        cid: node.cid,
                        tsize: node.tsize,
                    });
                }
                self.levels[level + 1].push(node);
            }
            level += 1;
        }
    }

    fn finish_single(mut self, sink: &mut dyn BlockSink) -> Result<Built, Error> {
        let chunk = self.first.take().unwrap_or_default();
        if self.meta.is_empty() {
            let leaf = self.leaf(chunk, sink)?;
            return Ok(Built {
                cid: leaf.cid,
                tsize: leaf.tsize,
            });
        }
        emit_node(
            self.opts.cid_version,
            Vec::new(),
            &file_data(chunk, self.meta),
            sink,
        )
    }
}

/// The subtrees of an all-zero region of a file, level by level of the balanced layout:
/// level 0 is one zero chunk, level k is `max_links` subtrees of level k-1. A hole of any
/// size is made of these, so it is hashed once, and is recognised when read back.
pub struct ZeroRuns {
    /// Each level's block and the chunks under it.
    parts: Vec<(Block, u64)>,
    tsizes: Vec<u64>,
}

impl ZeroRuns {
    /// The levels needed for files of up to `max_size` bytes.
    pub fn new(opts: &ImportOptions, max_size: u64) -> ZeroRuns {
        let (leaf, stored) = leaf_block(opts, vec![0; opts.chunk_size as usize]);
        let (mut below, mut chunks, mut tsize) = (*leaf.cid(), 1, stored.tsize);
        let mut runs = ZeroRuns {
            parts: vec![(leaf, 1)],
            tsizes: vec![tsize],
        };
        let max_chunks = max_size.div_ceil(opts.chunk_size);
        let fanout = opts.max_links as u64;
        while chunks < max_chunks && fanout > 1 {
            // What `FileBuilder::reduce` makes of `max_links` equal parts.
            let mut d = UnixFsData::new(DataType::File);
            d.filesize = Some(chunks * fanout * opts.chunk_size);
            d.blocksizes = vec![chunks * opts.chunk_size; opts.max_links];
            let node = PbNode {
                links: vec![PbLink::new(below, Vec::new(), tsize); opts.max_links],
                data: Some(d.encode()),
            };
            let block = Block::hash(opts.cid_version, DAG_PB, node.encode());
            (below, chunks, tsize) = (*block.cid(), chunks * fanout, block.len() + tsize * fanout);
            runs.parts.push((block, chunks));
            runs.tsizes.push(tsize);
        }
        runs
    }

    /// How many chunks of zeros `cid` stands for, when it is one of these subtrees.
    pub fn chunks_under(&self, cid: &Cid) -> Option<u64> {
        self.parts
            .iter()
            .find(|(b, _)| b.cid() == cid)
            .map(|(_, chunks)| *chunks)
    }
}

/// A leaf of a file DAG that is already stored: what its parent's link records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredLeaf {
    pub cid: Cid,
    pub tsize: u64,
    /// File bytes in the leaf.
    pub len: u64,
}

/// The block for one chunk of a file: raw, or a UnixFS file node, as the profile says.
pub fn leaf_block(opts: &ImportOptions, chunk: Vec<u8>) -> (Block, StoredLeaf) {
    let len = chunk.len() as u64;
    let block = if opts.raw_leaves {
        Block::hash(Version::V1, RAW, chunk)
    } else {
        let data = file_data(chunk, Metadata::default()).encode();
        let node = PbNode {
            links: Vec::new(),
            data: Some(data),
        };
        Block::hash(opts.cid_version, DAG_PB, node.encode())
    };
    let leaf = StoredLeaf {
        cid: *block.cid(),
        tsize: block.len(),
        len,
    };
    (block, leaf)
}

/// A file node holding `chunk` inline.
fn file_data(chunk: Vec<u8>, meta: Metadata) -> UnixFsData {
    let mut d = UnixFsData::new(DataType::File);
    d.filesize = Some(chunk.len() as u64);
    d.data = Some(chunk);
    d.meta = meta;
    d
}

/// Builds a directory: a flat node, or a HAMT when the profile's size estimate of the
/// flat node is strictly greater than the threshold.
pub fn build_directory(
    mut entries: Vec<DirEntry>,
    meta: Metadata,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let links: Vec<PbLink> = entries
        .iter()
        .map(|e| PbLink::new(e.cid, e.name.clone(), e.tsize))
        .collect();
    let mut data = UnixFsData::new(DataType::Directory);
    data.meta = meta;
    let estimate = match opts.shard_strategy {
        ShardStrategy::LinksBytes => entries
            .iter()
            .map(|e| e.name.len() as u64 + e.cid.encoded_len() as u64)
            .sum(),
        ShardStrategy::BlockBytes => PbNode::encoded_len_of(&links, &data.encode()),
    };
    if estimate > opts.shard_threshold {
        return hamt::build(entries, meta, opts, sink);
    }
    emit_node(opts.cid_version, links, &data, sink)
}

/// A symlink node. Symlinks carry no mode (Kubo's form); an mtime if given.
pub fn build_symlink(
    target: &[u8],
    meta: Metadata,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let mut d = UnixFsData::new(DataType::Symlink);
    d.data = Some(target.to_vec());
    d.meta = Metadata {
        mode: None,
        mtime: meta.mtime,
    };
    emit_node(opts.cid_version, Vec::new(), &d, sink)
}
