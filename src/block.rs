//! A block: bytes together with the CID they hash to. The only way to make one is to
//! hash the bytes, or to check them against a CID, so a `Block` is always honest.

use cid::{Cid, Version};
use multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec of DAG-PB nodes.
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw leaves.
pub const RAW: u64 = 0x55;
/// Multihash code of sha2-256, the one hash peerfs writes and accepts.
pub const SHA2_256: u64 = 0x12;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block {cid}: bytes do not hash to the CID")]
    HashMismatch { cid: Cid },
    #[error("block {cid}: unsupported hash function 0x{code:x} (only sha2-256 is accepted)")]
    UnsupportedHash { cid: Cid, code: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    cid: Cid,
    data: Vec<u8>,
}

impl Block {
    /// Hashes `data` and names it with a CID of the given version and codec.
    /// CIDv0 exists only for DAG-PB; asking for v0 with another codec gives v1.
    pub fn hash(version: Version, codec: u64, data: Vec<u8>) -> Block {
        let cid = cid_of(version, codec, &data);
        Block { cid, data }
    }

    /// Accepts `data` as the block `cid` only if it hashes to it.
    pub fn verified(cid: Cid, data: Vec<u8>) -> Result<Block, BlockError> {
        verify(&cid, &data)?;
        Ok(Block { cid, data })
    }

    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Checks that `data` hashes to `cid`.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    let mh = cid.hash();
    if mh.code() != SHA2_256 || mh.size() != 32 {
        return Err(BlockError::UnsupportedHash {
            cid: *cid,
            code: mh.code(),
        });
    }
    if mh.digest() != Sha256::digest(data).as_slice() {
        return Err(BlockError::HashMismatch { cid: *cid });
    }
    Ok(())
}

pub fn sha256_multihash(data: &[u8]) -> Multihash<64> {
    Multihash::wrap(SHA2_256, &Sha256::digest(data))
        .expect("a 32-byte digest fits a 64-byte multihash")
}

pub fn cid_of(version: Version, codec: u64, data: &[u8]) -> Cid {
    let mh = sha256_multihash(data);
    match (version, codec) {
        (Version::V0, DAG_PB) => Cid::new_v0(mh).expect("sha2-256 is valid for CIDv0"),
        _ => Cid::new_v1(codec, mh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_raw_block_has_the_well_known_cid() {
        let b = Block::hash(Version::V1, RAW, Vec::new());
        assert_eq!(
            b.cid().to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }

    #[test]
    fn wrong_bytes_are_refused_naming_the_cid() {
        let good = Block::hash(Version::V1, RAW, b"hello".to_vec());
        let err = Block::verified(*good.cid(), b"hellO".to_vec()).unwrap_err();
        assert!(err.to_string().contains(&good.cid().to_string()));
    }
}
