//! Private folders: a folder's subtree published as ciphertext that only its readers
//! can open (README, "Private folders").
//!
//! - [`keys`]: folder keys, readers' X25519 keys derived from their libp2p identity,
//!   and recipient stanzas (a folder key wrapped to one reader).
//! - [`cipher`]: sealing and opening one block, deterministically, with XChaCha20-Poly1305.
//! - [`tree`]: sealing a plaintext subtree into walkable sealed blocks, with a memo so
//!   unchanged blocks keep their sealed CID, and the envelope that carries the stanzas.
//! - [`unseal`]: a `Blocks` that shows a reader the plaintext of sealed folders.
//! - [`folders`]: the owner's private folders: paths, readers, key generations.
//! - [`publish`]: the drive's root as published, each private folder replaced by its
//!   envelope.
//!
//! Arrows: `seal` uses `unixfs` and `store`, never FUSE or the network.

pub mod cipher;
pub mod folders;
pub mod keys;
pub mod publish;
pub mod tree;
pub mod unseal;

use cid::Cid;

use crate::store::StoreError;

/// Why a sealed block could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {0} is not in the store")]
    Missing(Cid),
    #[error(transparent)]
    Format(Box<crate::unixfs::Error>),
    #[error("sealed block {0}: wrong key or tampered ciphertext")]
    Tampered(Cid),
    #[error("sealed block {cid}: {why}")]
    Malformed { cid: Cid, why: &'static str },
    #[error("peer {0} has no Ed25519 key in its ID: it cannot be a reader")]
    NotEd25519(String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("{0}: a private folder cannot be the drive itself, nor inside or above another")]
    Nested(String),
    #[error("saving the private folders: {0}")]
    Save(String),
    #[error("at most {max} recipient stanzas per folder (readers x generations); {wanted} wanted")]
    TooManyStanzas { max: usize, wanted: usize },
}

#[cfg(test)]
mod tests;

impl From<crate::unixfs::Error> for SealError {
    fn from(e: crate::unixfs::Error) -> Self {
        SealError::Format(Box::new(e))
    }
}
