//! A stored file DAG read back as its leaves, in order, with the zero subtrees as holes:
//! what an open file's chunks start from. Also the file bytes one leaf holds.

use std::collections::BTreeMap;

use cid::Cid;

use crate::block::{DAG_PB, RAW};
use crate::store::Blocks;
use crate::unixfs::build::{StoredLeaf, ZeroRuns};
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::data::{DataType, UnixFsData};
use crate::unixfs::{Error, FormatError};
use crate::vfs::FsError;

/// A file DAG deeper than this is hostile (see `unixfs::read`).
const MAX_DEPTH: usize = 32;

/// The leaves of a stored file DAG, with the zero subtrees as holes.
pub(super) struct Leaves<'z> {
    chunk_size: u64,
    zeros: &'z ZeroRuns,
    /// The leaves that hold data, by chunk index; the indexes missing are holes.
    pub map: BTreeMap<u64, StoredLeaf>,
    /// The chunk index the next leaf has.
    pub next: u64,
    pub size: u64,
    /// Every leaf so far is a whole chunk (the last may be shorter), and no node holds
    /// both data and children: the DAG is the plain balanced form of our chunk size.
    pub regular: bool,
}

impl<'z> Leaves<'z> {
    pub fn new(chunk_size: u64, zeros: &'z ZeroRuns) -> Leaves<'z> {
        Leaves {
            chunk_size,
            zeros,
            map: BTreeMap::new(),
            next: 0,
            size: 0,
            regular: true,
        }
    }

    fn leaf(&mut self, leaf: StoredLeaf) {
        // Only the last leaf may be short: one after a short one breaks the form.
        if !self.size.is_multiple_of(self.chunk_size) || leaf.len == 0 || leaf.len > self.chunk_size
        {
            self.regular = false;
        }
        self.size += leaf.len;
        self.map.insert(self.next, leaf);
        self.next += 1;
    }

    fn hole(&mut self, chunks: u64) {
        if !self.size.is_multiple_of(self.chunk_size) {
            self.regular = false;
        }
        self.size += chunks * self.chunk_size;
        self.next += chunks;
    }

    /// Appends the leaves under `cid` in order.
    pub fn collect(
        &mut self,
        blocks: &dyn Blocks,
        cid: &Cid,
        bytes: Vec<u8>,
        tsize: Option<u64>,
        depth: usize,
    ) -> Result<(), FsError> {
        let malformed = |source| Error::Malformed { cid: *cid, source };
        if depth > MAX_DEPTH {
            return Err(malformed(FormatError::UnixFs("file DAG too deep")).into());
        }
        let own = bytes.len() as u64;
        match cid.codec() {
            RAW => {
                match self.zeros.chunks_under(cid) {
                    Some(n) => self.hole(n),
                    None => self.leaf(StoredLeaf {
                        cid: *cid,
                        tsize: own,
                        len: own,
                    }),
                }
                return Ok(());
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
                self.leaf(StoredLeaf {
                    cid: *cid,
                    tsize: tsize.unwrap_or(own),
                    len: inline,
                });
            }
            return Ok(());
        }
        if inline > 0 {
            self.regular = false;
            return Ok(());
        }
        if d.blocksizes.len() != node.links.len() {
            return Err(malformed(FormatError::UnixFs("blocksizes do not match the links")).into());
        }
        for (link, &len) in node.links.iter().zip(&d.blocksizes) {
            if let Some(n) = self.zeros.chunks_under(&link.cid) {
                if len != n * self.chunk_size {
                    return Err(malformed(FormatError::UnixFs(
                        "blocksizes do not match the links",
                    ))
                    .into());
                }
                self.hole(n);
                continue;
            }
            if link.cid.codec() == RAW {
                // A raw child is a leaf: no need to read a megabyte to learn its size.
                self.leaf(StoredLeaf {
                    cid: link.cid,
                    tsize: link.tsize.unwrap_or(len),
                    len,
                });
                continue;
            }
            let child = blocks.get(&link.cid)?.ok_or(Error::Missing(link.cid))?;
            self.collect(blocks, &link.cid, child, link.tsize, depth + 1)?;
            if !self.regular {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The file bytes a leaf holds: a raw block, or a UnixFS node's inline data.
pub(super) fn leaf_bytes(blocks: &dyn Blocks, cid: &Cid) -> Result<Vec<u8>, FsError> {
    let bytes = blocks.get(cid)?.ok_or(Error::Missing(*cid))?;
    leaf_data(cid, bytes)
}

/// The file bytes in leaf block `bytes`.
pub(super) fn leaf_data(cid: &Cid, bytes: Vec<u8>) -> Result<Vec<u8>, FsError> {
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
