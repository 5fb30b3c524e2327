//! A drive's head: `{peer, seq, root, time}` signed with the owner's ed25519 key. A
//! `SignedHead` can only be made by signing or by verifying, so holding one means the
//! signature matched the peer ID it names.

use cid::Cid;
use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};

use crate::profile::SignedProfile;
use crate::signed::{self, SignedError};

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
    /// The owner's signed profile, so that it goes wherever the head goes. Absent in
    /// heads written before profiles, and in heads of owners who set none.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    profile: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct SignedHead {
    head: Head,
    encoded: Vec<u8>,
    /// The owner's profile it carries, if any and if it verified (boxed: most heads
    /// travel as events and in maps, and most are read for their fields).
    profile: Option<Box<SignedProfile>>,
}

impl Head {
    fn payload(&self, profile: Option<&SignedProfile>) -> Payload {
        Payload {
            peer: self.peer.to_bytes(),
            seq: self.seq,
            root: self.root.to_bytes(),
            time_ms: self.time_ms,
            open: self.open,
            profile: profile.map(|p| p.encoded().to_vec()),
        }
    }

    /// Signs the head with `key`, which must be the key of `self.peer`.
    pub fn sign(self, key: &Keypair) -> SignedHead {
        self.sign_with_profile(key, None)
    }

    /// Signs the head with `key`, carrying `profile` (which must be `self.peer`'s).
    pub fn sign_with_profile(self, key: &Keypair, profile: Option<&SignedProfile>) -> SignedHead {
        debug_assert_eq!(key.public().to_peer_id(), self.peer);
        let profile = profile.filter(|p| p.profile().peer == self.peer);
        let encoded = signed::sign(&self.payload(profile), key)
            .expect("a plain struct always encodes and ed25519 signing cannot fail");
        SignedHead {
            head: self,
            encoded,
            profile: profile.cloned().map(Box::new),
        }
    }
}

impl SignedHead {
    /// Decodes a record and checks its signature against the peer ID inside it.
    pub fn verify(bytes: &[u8]) -> Result<SignedHead, HeadError> {
        let malformed = |e: &dyn std::fmt::Display| HeadError::Malformed(e.to_string());
        let p: Payload = signed::open(bytes, |p: &Payload| {
            PeerId::from_bytes(&p.peer).map_err(|e| e.to_string())
        })
        .map_err(|e| match e {
            SignedError::BadSignature(peer) => HeadError::BadSignature(peer),
            SignedError::Malformed(why) => HeadError::Malformed(why),
        })?;
        let peer = PeerId::from_bytes(&p.peer).map_err(|e| malformed(&e))?;
        let root = Cid::try_from(p.root.as_slice()).map_err(|e| malformed(&e))?;
        // A profile that does not verify, or is another's, is left out: the head
        // itself is good.
        let profile = p
            .profile
            .and_then(|b| SignedProfile::verify(&b).ok())
            .filter(|pr| pr.profile().peer == peer)
            .map(Box::new);
        Ok(SignedHead {
            head: Head {
                peer,
                seq: p.seq,
                root,
                time_ms: p.time_ms,
                open: p.open,
            },
            encoded: bytes.to_vec(),
            profile,
        })
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The owner's profile the head carries.
    pub fn profile(&self) -> Option<&SignedProfile> {
        self.profile.as_deref()
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
        let bytes = signed::sign(&forged.payload(None), &other).unwrap();
        assert!(matches!(
            SignedHead::verify(&bytes),
            Err(HeadError::BadSignature(_))
        ));
        assert!(SignedHead::verify(b"\x00junk").is_err());
    }

    #[test]
    fn a_head_carries_its_owners_profile_only() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let profile = |peer| crate::profile::Profile {
            peer,
            seq: 3,
            time_ms: 1,
            name: "Alice".into(),
            about: String::new(),
            avatar: None,
        };
        let head = Head {
            peer: me,
            seq: 1,
            root: cid_of(cid::Version::V1, RAW, b"x"),
            time_ms: 1,
            open: false,
        };
        let mine = profile(me).sign(&key).unwrap();
        let signed = head.clone().sign_with_profile(&key, Some(&mine));
        let back = SignedHead::verify(signed.encoded()).unwrap();
        assert_eq!(back.head(), &head);
        assert_eq!(back.profile(), Some(&mine));
        // Without a profile the record is what it was before profiles existed.
        let plain = head.clone().sign(&key);
        assert!(SignedHead::verify(plain.encoded())
            .unwrap()
            .profile()
            .is_none());
        let old = serde_ipld_dagcbor::to_vec(
            &serde_ipld_dagcbor::from_slice::<signed::Envelope>(plain.encoded()).unwrap(),
        )
        .unwrap();
        assert_eq!(old, plain.encoded());
        // Another's profile is not carried.
        let other = Keypair::generate_ed25519();
        let theirs = profile(other.public().to_peer_id()).sign(&other).unwrap();
        let signed = head.sign_with_profile(&key, Some(&theirs));
        assert!(SignedHead::verify(signed.encoded())
            .unwrap()
            .profile()
            .is_none());
    }
}
