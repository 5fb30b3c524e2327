//! CAR (Content Addressable aRchive) files: `peerfs export` writes CARv1, `peerfs import`
//! reads CARv1 and CARv2. Every block read is checked against its CID; frame sizes are
//! bounded, so a hostile or truncated file is an error, never an allocation bomb.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockError, DAG_PB};
use crate::store::{write_behind, Blocks, Holding, StoreError};
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::{self, wire};

/// Largest header we accept: a header only lists roots.
const MAX_HEADER: u64 = 1 << 20;
/// Largest block frame (CID + bytes) we accept; blocks over 2 MiB are not exchanged
/// by any IPFS implementation.
pub const MAX_FRAME: u64 = 4 << 20;
const CARV2_PRAGMA: [u8; 11] = [
    0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02,
];

#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("reading CAR: {0}")]
    Io(#[from] io::Error),
    #[error("truncated CAR: {0}")]
    Truncated(&'static str),
    #[error("malformed CAR: {0}")]
    Malformed(String),
    #[error("CAR block {0}: bytes do not hash to the CID; nothing from this CAR was kept")]
    BadBlock(Cid),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    UnixFs(#[from] unixfs::Error),
}

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(default)]
    roots: Vec<Cid>,
    version: u64,
}

/// Writes the DAG under `root` as a CARv1, each block once, in depth-first order (the
/// order a streaming reader wants). Returns the number of blocks written.
pub fn export(
    blocks: &dyn Blocks,
    root: &Cid,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, CarError> {
    let mut car = CarWriter::start(out, root)?;
    car.dag(blocks, root, progress)?;
    Ok(car.written())
}

/// A CARv1 being written: the header, then blocks, each at most once.
pub struct CarWriter<'o> {
    out: &'o mut dyn Write,
    seen: HashSet<Cid>,
}

impl<'o> CarWriter<'o> {
    /// Writes the header naming `root`.
    pub fn start(out: &'o mut dyn Write, root: &Cid) -> Result<Self, CarError> {
        let header = serde_ipld_dagcbor::to_vec(&Header {
            roots: vec![*root],
            version: 1,
        })
        .map_err(|e| CarError::Malformed(format!("encoding the header: {e}")))?;
        write_frame(out, &[&header])?;
        Ok(CarWriter {
            out,
            seen: HashSet::new(),
        })
    }

    /// Blocks written so far.
    pub fn written(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Writes one block, unless it was written before.
    pub fn block(&mut self, cid: &Cid, data: &[u8]) -> io::Result<()> {
        if self.seen.insert(*cid) {
            write_frame(self.out, &[&cid.to_bytes(), data])?;
        }
        Ok(())
    }

    /// Writes every block of the DAG under `root` that was not written yet, depth first.
    pub fn dag(
        &mut self,
        blocks: &dyn Blocks,
        root: &Cid,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), CarError> {
        // Its own visited set: a block written before (a path's blocks, ahead of the
        // DAG at its end) was written without what is below it.
        let mut visited = HashSet::new();
        let mut stack = vec![*root];
        while let Some(cid) = stack.pop() {
            if !visited.insert(cid) {
                continue;
            }
            let data = blocks.get(&cid)?.ok_or(unixfs::Error::Missing(cid))?;
            if !self.seen.contains(&cid) {
                self.block(&cid, &data)?;
                progress(data.len() as u64);
            }
            stack.extend(links(&cid, &data)?.into_iter().rev());
        }
        Ok(())
    }
}

/// The CIDs a block links to (only dag-pb blocks link; raw leaves do not).
pub fn links(cid: &Cid, data: &[u8]) -> Result<Vec<Cid>, CarError> {
    if cid.codec() != DAG_PB {
        return Ok(Vec::new());
    }
    let node =
        PbNode::decode(data).map_err(|source| unixfs::Error::Malformed { cid: *cid, source })?;
    Ok(node.links.iter().map(|l| l.cid).collect())
}

fn write_frame(out: &mut dyn Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut len = Vec::with_capacity(10);
    wire::put_varint(&mut len, parts.iter().map(|p| p.len() as u64).sum());
    out.write_all(&len)?;
    for p in parts {
        out.write_all(p)?;
    }
    Ok(())
}

/// Reads a CAR block by block, checking each against its CID.
pub struct CarReader<R: Read> {
    input: R,
    roots: Vec<Cid>,
    /// For CARv2: bytes of the inner CARv1 payload still to read.
    remaining: Option<u64>,
}

impl<R: Read> CarReader<R> {
    pub fn new(mut input: R) -> Result<Self, CarError> {
        let header = read_frame(&mut input, MAX_HEADER)?.ok_or(CarError::Truncated("no header"))?;
        if header == CARV2_PRAGMA[1..] {
            return Self::v2(input);
        }
        let h = decode_header(&header)?;
        if h.version != 1 {
            return Err(CarError::Malformed(format!(
                "CAR version {} (1 and 2 are supported)",
                h.version
            )));
        }
        Ok(CarReader {
            input,
            roots: h.roots,
            remaining: None,
        })
    }

    /// CARv2: a fixed header says where the inner CARv1 starts and how long it is.
    fn v2(mut input: R) -> Result<Self, CarError> {
        let mut fixed = [0u8; 40];
        input
            .read_exact(&mut fixed)
            .map_err(eof_as("CARv2 header"))?;
        let offset = u64::from_le_bytes(fixed[16..24].try_into().expect("8 bytes"));
        let size = u64::from_le_bytes(fixed[24..32].try_into().expect("8 bytes"));
        let consumed = CARV2_PRAGMA.len() as u64 + 40;
        let skip = offset
            .checked_sub(consumed)
            .ok_or_else(|| CarError::Malformed("CARv2 data offset inside its header".into()))?;
        io::copy(&mut (&mut input).take(skip), &mut io::sink())?;
        let mut payload = (&mut input).take(size);
        let header = read_frame(&mut payload, MAX_HEADER)?
            .ok_or(CarError::Truncated("no CARv1 header inside the CARv2"))?;
        let remaining = payload.limit();
        let h = decode_header(&header)?;
        if h.version != 1 {
            return Err(CarError::Malformed(format!(
                "CARv2 payload has version {}",
                h.version
            )));
        }
        Ok(CarReader {
            input,
            roots: h.roots,
            remaining: Some(remaining),
        })
    }

    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next verified block, or `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<Block>, CarError> {
        let frame = match self.remaining {
            Some(0) => return Ok(None),
            Some(left) => {
                let mut limited = (&mut self.input).take(left);
                let f = read_frame(&mut limited, MAX_FRAME)?;
                self.remaining = Some(limited.limit());
                f
            }
            None => read_frame(&mut self.input, MAX_FRAME)?,
        };
        let Some(frame) = frame else { return Ok(None) };
        let mut cursor = io::Cursor::new(&frame[..]);
        let cid = Cid::read_bytes(&mut cursor)
            .map_err(|e| CarError::Malformed(format!("block frame without a CID: {e}")))?;
        let data = frame[cursor.position() as usize..].to_vec();
        match Block::verified(cid, data) {
            Ok(b) => Ok(Some(b)),
            Err(BlockError::HashMismatch { cid }) => Err(CarError::BadBlock(cid)),
            Err(e) => Err(CarError::Malformed(e.to_string())),
        }
    }
}

fn decode_header(bytes: &[u8]) -> Result<Header, CarError> {
    serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| CarError::Malformed(format!("header is not a CAR header: {e}")))
}

fn eof_as(what: &'static str) -> impl FnOnce(io::Error) -> CarError {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            CarError::Truncated(what)
        } else {
            CarError::Io(e)
        }
    }
}

/// One varint-prefixed frame; `None` at a clean end of input.
fn read_frame(r: &mut dyn Read, limit: u64) -> Result<Option<Vec<u8>>, CarError> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(0) if i == 0 => return Ok(None),
            Ok(0) => return Err(CarError::Truncated("a frame length is cut off")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            if len > limit {
                return Err(CarError::Malformed(format!(
                    "frame of {len} bytes is over the {limit}-byte limit"
                )));
            }
            let mut buf = vec![0u8; len as usize];
            r.read_exact(&mut buf)
                .map_err(eof_as("a block is cut off"))?;
            return Ok(Some(buf));
        }
    }
    Err(CarError::Malformed(
        "frame length varint is too long".into(),
    ))
}

/// What an import brought in.
pub struct Imported {
    pub roots: Vec<Cid>,
    pub blocks: u64,
}

/// Imports every block of a CAR. All or nothing: on any error the blocks this import
/// added are removed again, so a bad CAR leaves the store as it was.
pub fn import<R: Read>(
    store: &dyn Blocks,
    input: R,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, CarError> {
    let mut added = Vec::new();
    let result = write_behind(store, |sink| {
        let mut reader = CarReader::new(input)?;
        let mut count = 0;
        while let Some(block) = reader.next_block()? {
            count += 1;
            progress(block.len());
            match store.holding(block.cid())? {
                None => {
                    added.push(*block.cid());
                    sink.put(block)?;
                }
                // Only cache (fetched for a peer's drive): the import's pin makes it
                // ours, or eviction would take it from under the pin.
                Some(Holding::Fetched(_)) => sink.put(block)?,
                Some(Holding::Own) => {}
            }
        }
        Ok::<_, CarError>(Imported {
            roots: reader.roots().to_vec(),
            blocks: count,
        })
    });
    if result.is_err() {
        store.delete_many(&added)?;
    }
    result
}
