//! UnixFS, the IPFS file format, exact to the specs and the reference importers.
//!
//! - `wire`: protobuf primitives, checked against hostile input.
//! - `dagpb`: the DAG-PB codec (canonical field order, strict decoding).
//! - `data`: the UnixFS `Data` message, with UnixFS 1.5 mode and mtime.
//! - `profile`: import profiles (`unixfs-v1-2025`, `unixfs-v0-2015`) and overrides.
//! - `node`: a decoded node: file, directory, HAMT shard or symlink.
//! - `build`: streaming file builder (balanced DAG), directories, symlinks.
//! - `hamt`: HAMT-sharded directories: hashing, building, lookup by hash path.
//! - `read`: path resolution, listing, random-access and streaming file reads.
//! - `diff`: what changed between two versions of a tree.
//!
//! The format only knows the `store` traits; it never touches FUSE or the network.

pub mod build;
pub mod dagpb;
pub mod data;
pub mod diff;
pub mod edit;
pub mod hamt;
pub mod node;
pub mod profile;
pub mod read;
#[cfg(test)]
pub(crate) mod testing;
pub mod wire;

use cid::Cid;

pub use build::{build_directory, build_symlink, Built, DirEntry, FileBuilder};
pub use data::{Metadata, Mtime};
pub use node::{FileNode, Node};
pub use profile::{ImportOptions, Overrides, Profile};
pub use read::{list, list_at_most, lookup, resolve, FileReader, LISTING_LIMIT};

use crate::store::{Blocks, StoreError};

/// Bytes that are not a valid DAG-PB / UnixFS node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("malformed protobuf: {0}")]
    Protobuf(&'static str),
    #[error("malformed DAG-PB: {0}")]
    DagPb(&'static str),
    #[error("malformed UnixFS: {0}")]
    UnixFs(&'static str),
    #[error("codec 0x{0:x} is not UnixFS (only dag-pb and raw)")]
    Codec(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {0} is not in the store")]
    Missing(Cid),
    #[error("block {cid}: {source}")]
    Malformed { cid: Cid, source: FormatError },
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: not a regular file")]
    NotAFile(String),
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    #[error("two names in one directory share all 64 bits of their HAMT hash")]
    HashCollision,
    #[error("directory {cid} has more than {max} entries, the most a listing holds")]
    TooManyEntries { cid: Cid, max: usize },
    #[error(transparent)]
    Io(std::io::Error),
}

/// Loads and decodes one node.
pub fn load_node(blocks: &dyn Blocks, cid: &Cid) -> Result<Node, Error> {
    let bytes = blocks.get(cid)?.ok_or(Error::Missing(*cid))?;
    Node::decode(cid, bytes).map_err(|source| Error::Malformed { cid: *cid, source })
}
