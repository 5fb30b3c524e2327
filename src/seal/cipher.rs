//! Sealing one block: XChaCha20-Poly1305 under the folder key of a generation, with a
//! nonce derived (HKDF-SHA-256) from that key and the plaintext block's CID, so the same
//! block always seals to the same bytes inside one folder and generation. The plaintext
//! CID is also the associated data: a sealed block opens only as the block its parent
//! names, and what it opens to is checked against that CID besides.
//!
//! A sealed payload is `generation (4 bytes, big-endian) | nonce (24) | ciphertext`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use cid::Cid;
use hkdf::Hkdf;
use sha2_11::Sha256;

use super::keys::FolderKey;
use super::SealError;
use crate::block;

const NONCE_LEN: usize = 24;
const GEN_LEN: usize = 4;
/// Generation and nonce before the ciphertext; the tag (16 bytes) after it.
pub const OVERHEAD: usize = GEN_LEN + NONCE_LEN + 16;
const NONCE_INFO: &[u8] = b"peerfs/nonce/v1";

fn nonce(key: &FolderKey, plain: &Cid) -> [u8; NONCE_LEN] {
    let mut info = NONCE_INFO.to_vec();
    info.extend_from_slice(&plain.to_bytes());
    let mut out = [0u8; NONCE_LEN];
    // 24 bytes is always a valid HKDF-SHA-256 output length.
    let _ = Hkdf::<Sha256>::new(None, key.as_bytes()).expand(&info, &mut out);
    out
}

fn aad(gen: u32, plain: &Cid) -> Vec<u8> {
    let mut aad = gen.to_be_bytes().to_vec();
    aad.extend_from_slice(&plain.to_bytes());
    aad
}

/// Seals the block `plain` (whose bytes are `data`) with generation `gen`'s key.
pub fn seal(key: &FolderKey, gen: u32, plain: &Cid, data: &[u8]) -> Vec<u8> {
    seal_bound(key, gen, plain, data)
}

/// Seals `data`, bound to `bound` (its nonce and associated data come from it): a block
/// bound to its plaintext CID, or an envelope's pointer bound to the sealed CID it
/// names.
pub fn seal_bound(key: &FolderKey, gen: u32, bound: &Cid, data: &[u8]) -> Vec<u8> {
    let nonce = nonce(key, bound);
    let aad = aad(gen, bound);
    let mut out = Vec::with_capacity(data.len() + OVERHEAD);
    out.extend_from_slice(&gen.to_be_bytes());
    out.extend_from_slice(&nonce);
    // Encryption fails only past XChaCha20's 256 GiB per message, far above a block.
    let ct = XChaCha20Poly1305::new(key.as_bytes().into())
        .encrypt(
            &nonce.into(),
            Payload {
                msg: data,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    out.extend_from_slice(&ct);
    out
}

/// Which generation's key sealed `payload`.
pub fn generation(payload: &[u8]) -> Option<u32> {
    let g: [u8; GEN_LEN] = payload.get(..GEN_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(g))
}

/// Opens `payload` as the block `plain`: the plaintext bytes, which hash to `plain`.
/// A wrong key, tampered bytes or another block's ciphertext are all `Tampered`.
pub fn open(key: &FolderKey, plain: &Cid, payload: &[u8]) -> Result<Vec<u8>, SealError> {
    let data = open_bound(key, plain, payload)?;
    block::verify(plain, &data).map_err(|_| SealError::Tampered(*plain))?;
    Ok(data)
}

/// Opens what `seal_bound` sealed bound to `bound`.
pub fn open_bound(key: &FolderKey, bound: &Cid, payload: &[u8]) -> Result<Vec<u8>, SealError> {
    let malformed = |why| SealError::Malformed { cid: *bound, why };
    let gen = generation(payload).ok_or(malformed("shorter than its header"))?;
    let nonce: [u8; NONCE_LEN] = payload
        .get(GEN_LEN..GEN_LEN + NONCE_LEN)
        .and_then(|n| n.try_into().ok())
        .ok_or(malformed("shorter than its header"))?;
    let aad = aad(gen, bound);
    XChaCha20Poly1305::new(key.as_bytes().into())
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &payload[GEN_LEN + NONCE_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Tampered(*bound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{cid_of, RAW};
    use cid::Version;

    fn block(data: &[u8]) -> Cid {
        cid_of(Version::V1, RAW, data)
    }

    #[test]
    fn a_sealed_block_opens_to_its_bytes_and_seals_the_same_way_twice() {
        let key = FolderKey::random().unwrap();
        let data = b"the plaintext of one leaf".to_vec();
        let cid = block(&data);
        let sealed = seal(&key, 2, &cid, &data);
        assert_eq!(sealed.len(), data.len() + OVERHEAD);
        assert!(!sealed.windows(9).any(|w| w == b"plaintext"));
        assert_eq!(generation(&sealed), Some(2));
        assert_eq!(open(&key, &cid, &sealed).unwrap(), data);
        // Deterministic: an unchanged block keeps its ciphertext, hence its CID.
        assert_eq!(seal(&key, 2, &cid, &data), sealed);
        // Another key, another block: other bytes.
        assert_ne!(seal(&FolderKey::random().unwrap(), 2, &cid, &data), sealed);
        let other = b"another leaf".to_vec();
        assert_ne!(seal(&key, 2, &block(&other), &other)[4..28], sealed[4..28]);
    }

    #[test]
    fn tampering_a_wrong_key_or_another_cid_is_an_error_never_bytes() {
        let key = FolderKey::random().unwrap();
        let data = vec![7u8; 4096];
        let cid = block(&data);
        let sealed = seal(&key, 0, &cid, &data);
        for at in [0, 3, 4, 27, 28, 100, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x40;
            assert!(
                matches!(open(&key, &cid, &bad), Err(SealError::Tampered(_))),
                "byte {at} flipped"
            );
        }
        let wrong = FolderKey::random().unwrap();
        assert!(matches!(
            open(&wrong, &cid, &sealed),
            Err(SealError::Tampered(_))
        ));
        let elsewhere = block(b"not this one");
        assert!(matches!(
            open(&key, &elsewhere, &sealed),
            Err(SealError::Tampered(_))
        ));
        assert!(matches!(
            open(&key, &cid, &sealed[..10]),
            Err(SealError::Malformed { .. })
        ));
    }

    #[test]
    fn a_key_that_seals_wrong_bytes_for_a_cid_is_caught_by_the_hash() {
        // Whoever holds the key (a reader) can seal any bytes under any CID: the opened
        // bytes must still hash to the CID the parent names.
        let key = FolderKey::random().unwrap();
        let cid = block(b"real");
        let forged = seal(&key, 0, &cid, b"forged");
        assert!(matches!(
            open(&key, &cid, &forged),
            Err(SealError::Tampered(_))
        ));
    }
}
