//! A drive's head: `{peer, seq, root, time}` signed with the owner's ed25519 key. A
//! `SignedHead` can only be made by signing or by verifying, so holding one means the
//! signature matched the peer ID it names.

use cid::Cid;
use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize};

/// The key of my own drive's head in the store's heads table.
pub const OWN_HEAD: &str = "self";
/// My drive's plaintext root, when it has private folders: `OWN_HEAD` names the
/// published root (private folders sealed), this one what my own mount shows.
pub const PLAIN_HEAD: &str = "self-plain";

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("malformed head record: {0}")]
    Malformed(String),
    #[error("head signature does not match peer {0}")]
    BadSignature(PeerId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub peer: PeerId,
    /// Grows by one with every commit of the drive.
    pub seq: u64,
    pub root: Cid,
    /// Commit time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The owner lets everyone read the drive (`readers = ["*"]`), so peers holding its
    /// blocks may pass them on. A restricted drive is served by its owner only.
    pub open: bool,
}

/// What is signed: the head's fields, DAG-CBOR encoded.
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(with = "serde_bytes")]
    peer: Vec<u8>,
    seq: u64,
    #[serde(with = "serde_bytes")]
    root: Vec<u8>,
    time_ms: u64,
    /// Absent in heads written before it existed: those count as restricted.
    #[serde(default)]
    open: bool,
}

/// The stored and transmitted form: the payload and its signature.
#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct SignedHead {
    head: Head,
    encoded: Vec<u8>,
}

impl Head {
    fn payload(&self) -> Vec<u8> {
        let p = Payload {
            peer: self.peer.to_bytes(),
            seq: self.seq,
            root: self.root.to_bytes(),
            time_ms: self.time_ms,
            open: self.open,
        };
        serde_ipld_dagcbor::to_vec(&p).expect("a plain struct always encodes")
    }

    /// Signs the head with `key`, which must be the key of `self.peer`.
    pub fn sign(self, key: &Keypair) -> SignedHead {
        debug_assert_eq!(key.public().to_peer_id(), self.peer);
        let payload = self.payload();
        let signature = key.sign(&payload).expect("ed25519 signing cannot fail");
        let encoded = serde_ipld_dagcbor::to_vec(&Envelope { payload, signature })
            .expect("a plain struct always encodes");
        SignedHead {
            head: self,
            encoded,
        }
    }
}

impl SignedHead {
    /// Decodes a record and checks its signature against the peer ID inside it.
    pub fn verify(bytes: &[u8]) -> Result<SignedHead, HeadError> {
        let malformed = |e: &dyn std::fmt::Display| HeadError::Malformed(e.to_string());
        let env: Envelope = serde_ipld_dagcbor::from_slice(bytes).map_err(|e| malformed(&e))?;
        let p: Payload = serde_ipld_dagcbor::from_slice(&env.payload).map_err(|e| malformed(&e))?;
        let peer = PeerId::from_bytes(&p.peer).map_err(|e| malformed(&e))?;
        let root = Cid::try_from(p.root.as_slice()).map_err(|e| malformed(&e))?;
        // An ed25519 peer ID is the public key itself (identity multihash).
        let key = PublicKey::try_decode_protobuf(peer.as_ref().digest())
            .map_err(|_| HeadError::BadSignature(peer))?;
        if !key.verify(&env.payload, &env.signature) {
            return Err(HeadError::BadSignature(peer));
        }
        Ok(SignedHead {
            head: Head {
                peer,
                seq: p.seq,
                root,
                time_ms: p.time_ms,
                open: p.open,
            },
            encoded: bytes.to_vec(),
        })
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{cid_of, RAW};

    #[test]
    fn signed_heads_verify_and_tampering_is_caught() {
        let key = Keypair::generate_ed25519();
        let head = Head {
            peer: key.public().to_peer_id(),
            seq: 7,
            root: cid_of(cid::Version::V1, RAW, b"x"),
            time_ms: 1,
            open: true,
        };
        let signed = head.clone().sign(&key);
        assert_eq!(SignedHead::verify(signed.encoded()).unwrap().head(), &head);

        let other = Keypair::generate_ed25519();
        let forged = Head {
            peer: key.public().to_peer_id(),
            ..head
        };
        let mut bytes = forged.payload();
        let sig = other.sign(&bytes).unwrap();
        bytes = serde_ipld_dagcbor::to_vec(&Envelope {
            payload: bytes,
            signature: sig,
        })
        .unwrap();
        assert!(matches!(
            SignedHead::verify(&bytes),
            Err(HeadError::BadSignature(_))
        ));
        assert!(SignedHead::verify(b"\x00junk").is_err());
    }
}
