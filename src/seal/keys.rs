//! Keys: a folder's key per generation, each reader's X25519 key pair derived from its
//! libp2p Ed25519 identity (so a peer ID is all an owner needs to share with it), and
//! recipient stanzas in the style of age's X25519 recipients: an ephemeral X25519 key,
//! and the folder key sealed with a key HKDF-SHA-256 derives from the shared secret.
//! Stanzas do not name their reader; a reader tries each.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize};
use sha2_11::Sha256;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use super::SealError;

pub const KEY_LEN: usize = 32;
/// Domain of the HKDF that turns a stanza's shared secret into its wrapping key.
const STANZA_INFO: &[u8] = b"peerfs/stanza/v1";

/// One generation's key of one folder.
#[derive(Clone, PartialEq, Eq)]
pub struct FolderKey([u8; KEY_LEN]);

impl FolderKey {
    /// A fresh key from the operating system's randomness.
    pub fn random() -> Result<FolderKey, SealError> {
        Ok(FolderKey(random_bytes()?))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> FolderKey {
        FolderKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for FolderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FolderKey(..)")
    }
}

fn random_bytes() -> Result<[u8; KEY_LEN], SealError> {
    let mut b = [0u8; KEY_LEN];
    getrandom::fill(&mut b).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(b)
}

/// A reader's X25519 secret: the scalar of its Ed25519 identity, so the public half is
/// the Montgomery form of the key its peer ID carries.
pub struct ReaderKey(StaticSecret);

impl ReaderKey {
    pub fn from_identity(key: &Keypair) -> Result<ReaderKey, SealError> {
        let ed = key
            .clone()
            .try_into_ed25519()
            .map_err(|_| SealError::NotEd25519(key.public().to_peer_id().to_string()))?;
        let secret: [u8; 32] = ed
            .secret()
            .as_ref()
            .try_into()
            .map_err(|_| SealError::NotEd25519(key.public().to_peer_id().to_string()))?;
        let scalar = ed25519_dalek::SigningKey::from_bytes(&secret).to_scalar_bytes();
        Ok(ReaderKey(StaticSecret::from(scalar)))
    }

    pub fn public(&self) -> XPublic {
        XPublic::from(&self.0)
    }
}

/// The X25519 key of the peer `peer`, from the Ed25519 key its ID carries inline.
pub fn recipient_of(peer: &PeerId) -> Result<XPublic, SealError> {
    let not = || SealError::NotEd25519(peer.to_string());
    let mh: &multihash::Multihash<64> = peer.as_ref();
    // Ed25519 peer IDs are the identity multihash of the protobuf public key.
    if mh.code() != 0 {
        return Err(not());
    }
    let public = PublicKey::try_decode_protobuf(mh.digest()).map_err(|_| not())?;
    let ed = public.try_into_ed25519().map_err(|_| not())?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&ed.to_bytes()).map_err(|_| not())?;
    Ok(XPublic::from(vk.to_montgomery().to_bytes()))
}

/// One folder key of generation `gen`, wrapped to one reader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stanza {
    pub gen: u32,
    #[serde(with = "serde_bytes")]
    pub ephemeral: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub wrapped: Vec<u8>,
}

/// The key that seals one stanza's body: HKDF over the shared secret, salted with both
/// public keys (as age does), bound to the generation.
fn wrapping_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    gen: u32,
) -> [u8; 32] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut info = STANZA_INFO.to_vec();
    info.extend_from_slice(&gen.to_be_bytes());
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA-256 output length.
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared).expand(&info, &mut out);
    out
}

/// Wraps `key` (generation `gen`) to the reader whose X25519 key is `recipient`.
pub fn wrap(key: &FolderKey, gen: u32, recipient: &XPublic) -> Result<Stanza, SealError> {
    let eph = StaticSecret::from(random_bytes()?);
    let eph_pub = XPublic::from(&eph);
    let shared = eph.diffie_hellman(recipient);
    let k = wrapping_key(
        shared.as_bytes(),
        eph_pub.as_bytes(),
        recipient.as_bytes(),
        gen,
    );
    // Each wrapping key seals exactly one message, so a zero nonce is safe (as in age).
    let wrapped = ChaCha20Poly1305::new((&k).into())
        .encrypt(&[0u8; 12].into(), key.as_bytes().as_slice())
        .map_err(|_| SealError::Random("stanza encryption failed".into()))?;
    Ok(Stanza {
        gen,
        ephemeral: eph_pub.as_bytes().to_vec(),
        wrapped,
    })
}

/// The folder key in `stanza`, if it was wrapped to `reader`.
pub fn unwrap(stanza: &Stanza, reader: &ReaderKey) -> Option<FolderKey> {
    let eph: [u8; 32] = stanza.ephemeral.as_slice().try_into().ok()?;
    let eph = XPublic::from(eph);
    let shared = reader.0.diffie_hellman(&eph);
    if !shared.was_contributory() {
        return None;
    }
    let k = wrapping_key(
        shared.as_bytes(),
        eph.as_bytes(),
        reader.public().as_bytes(),
        stanza.gen,
    );
    let plain = ChaCha20Poly1305::new((&k).into())
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: &stanza.wrapped,
                aad: &[],
            },
        )
        .ok()?;
    Some(FolderKey(plain.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stanza_opens_for_its_reader_only() {
        let bob = Keypair::generate_ed25519();
        let carol = Keypair::generate_ed25519();
        let key = FolderKey::random().unwrap();
        let to_bob = recipient_of(&bob.public().to_peer_id()).unwrap();
        let bob_key = ReaderKey::from_identity(&bob).unwrap();
        // The key derived from the peer ID is the one the identity's secret makes.
        assert_eq!(to_bob, bob_key.public());
        let stanza = wrap(&key, 3, &to_bob).unwrap();
        assert_eq!(unwrap(&stanza, &bob_key), Some(key.clone()));
        assert_eq!(
            unwrap(&stanza, &ReaderKey::from_identity(&carol).unwrap()),
            None
        );
        // A generation changed, or a flipped byte, opens nothing.
        let mut other_gen = stanza.clone();
        other_gen.gen = 4;
        assert_eq!(unwrap(&other_gen, &bob_key), None);
        let mut flipped = stanza;
        flipped.wrapped[5] ^= 1;
        assert_eq!(unwrap(&flipped, &bob_key), None);
    }

    #[test]
    fn a_peer_id_without_an_ed25519_key_is_no_recipient() {
        let hashed = PeerId::random();
        assert!(matches!(
            recipient_of(&hashed),
            Err(SealError::NotEd25519(_))
        ));
    }
}
