//! A DAG-CBOR payload signed by a peer: `{payload, signature}`, the envelope heads,
//! mirror statements and letters also use. The signer is named inside the payload, so
//! opening one takes a function that says who that is; holding the payload returned
//! means that peer's key signed it.

use libp2p::PeerId;
use libp2p_identity::{Keypair, PublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    #[error("malformed signed record: {0}")]
    Malformed(String),
    #[error("the signature does not match {0}")]
    BadSignature(PeerId),
}

/// The stored and transmitted form (visible to the crate's tests, which bend it).
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) signature: Vec<u8>,
}

/// Encodes `payload` and signs it with `key`: the envelope's bytes.
pub fn sign<T: Serialize>(payload: &T, key: &Keypair) -> Result<Vec<u8>, SignedError> {
    let malformed = |e: &dyn std::fmt::Display| SignedError::Malformed(e.to_string());
    let payload = serde_ipld_dagcbor::to_vec(payload).map_err(|e| malformed(&e))?;
    let signature = key.sign(&payload).map_err(|e| malformed(&e))?;
    serde_ipld_dagcbor::to_vec(&Envelope { payload, signature }).map_err(|e| malformed(&e))
}

/// Decodes an envelope and its payload, and checks that the peer `signer` names in the
/// payload signed it.
pub fn open<T: DeserializeOwned>(
    bytes: &[u8],
    signer: impl FnOnce(&T) -> Result<PeerId, String>,
) -> Result<T, SignedError> {
    let env: Envelope =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| SignedError::Malformed(e.to_string()))?;
    let payload: T = serde_ipld_dagcbor::from_slice(&env.payload)
        .map_err(|e| SignedError::Malformed(e.to_string()))?;
    let peer = signer(&payload).map_err(SignedError::Malformed)?;
    // An ed25519 peer ID is the public key itself (identity multihash).
    let key = PublicKey::try_decode_protobuf(peer.as_ref().digest())
        .map_err(|_| SignedError::BadSignature(peer))?;
    if !key.verify(&env.payload, &env.signature) {
        return Err(SignedError::BadSignature(peer));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Note {
        #[serde(with = "serde_bytes")]
        by: Vec<u8>,
        text: String,
    }

    fn by(n: &Note) -> Result<PeerId, String> {
        PeerId::from_bytes(&n.by).map_err(|e| e.to_string())
    }

    #[test]
    fn only_the_named_signer_opens() {
        let key = Keypair::generate_ed25519();
        let note = Note {
            by: key.public().to_peer_id().to_bytes(),
            text: "hi".into(),
        };
        let signed = sign(&note, &key).unwrap();
        assert_eq!(open(&signed, by).unwrap().text, "hi");
        let forged = sign(&note, &Keypair::generate_ed25519()).unwrap();
        assert!(matches!(
            open(&forged, by),
            Err(SignedError::BadSignature(_))
        ));
        assert!(open::<Note>(b"\x00junk", by).is_err());
    }
}
