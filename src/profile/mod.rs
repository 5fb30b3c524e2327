//! How a peer introduces itself: a profile (display name, a short "about", an avatar
//! image's CID) signed by its owner, and what it tells peers on connect.
//!
//! - here: the profile record, its bounds and signature, and the repo file it is kept in.
//! - [`names`]: a profile name made into a safe, unique folder name for `peers/`.
//! - [`hello`]: `/peerfs/hello/1.0.0`, the HELLO peers exchange on connect: the
//!   profile, capabilities, and (when shared) whom the node follows.
//!
//! A profile travels inside the owner's signed head too (`head::SignedHead::profile`),
//! so followers learn it from any copy of the head while the owner is offline.

pub mod hello;
pub mod names;

use std::path::Path;

use cid::Cid;
use libp2p::PeerId;
use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::signed::{self, SignedError};

/// A display name's bytes at most (UTF-8).
pub const MAX_NAME: usize = 64;
/// An "about" text's bytes at most.
pub const MAX_ABOUT: usize = 1024;
/// An avatar image's bytes at most: one block.
pub const MAX_AVATAR: usize = 256 * 1024;
/// A signed profile's bytes at most: the name, the about text, a CID, a peer ID, a
/// signature and a few numbers, with room to spare.
pub const MAX_ENCODED: usize = 2048;
/// The file in the repo that holds my signed profile.
pub const FILE: &str = "profile.cbor";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("the name is {0} bytes; at most {MAX_NAME} are allowed")]
    NameTooLong(usize),
    #[error("the name has a control character")]
    NameControl,
    #[error("the about text is {0} bytes; at most {MAX_ABOUT} are allowed")]
    AboutTooLong(usize),
    #[error("the about text has a control character other than a newline or tab")]
    AboutControl,
    #[error("the avatar is {0} bytes; at most {MAX_AVATAR} are allowed")]
    AvatarTooLarge(usize),
    #[error("the avatar is not a PNG, JPEG, GIF or WebP image")]
    NotAnImage,
    #[error("the signed profile is {0} bytes; at most {MAX_ENCODED} are allowed")]
    TooLarge(usize),
    #[error(transparent)]
    Signed(#[from] SignedError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What a peer says of itself. A newer `seq` replaces an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub peer: PeerId,
    pub seq: u64,
    /// When it was set, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Empty when none was set.
    pub name: String,
    pub about: String,
    /// A PNG, JPEG, GIF or WebP image of at most `MAX_AVATAR` bytes, as one raw block.
    pub avatar: Option<Cid>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(with = "serde_bytes")]
    peer: Vec<u8>,
    seq: u64,
    time_ms: u64,
    name: String,
    #[serde(default)]
    about: String,
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    avatar: Option<Vec<u8>>,
}

/// A profile whose signature matched its peer (or that we signed), and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedProfile {
    profile: Profile,
    encoded: Vec<u8>,
}

/// Refuses a name over `MAX_NAME` bytes or with control characters.
pub fn check_name(name: &str) -> Result<(), ProfileError> {
    if name.len() > MAX_NAME {
        return Err(ProfileError::NameTooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(ProfileError::NameControl);
    }
    Ok(())
}

/// Refuses an about text over `MAX_ABOUT` bytes or with control characters other
/// than newlines and tabs.
pub fn check_about(about: &str) -> Result<(), ProfileError> {
    if about.len() > MAX_ABOUT {
        return Err(ProfileError::AboutTooLong(about.len()));
    }
    if about
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ProfileError::AboutControl);
    }
    Ok(())
}

/// The image type of an avatar by its first bytes, if it is one we take.
pub fn image_kind(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

/// Refuses an avatar that is too large or not an image.
pub fn check_avatar(bytes: &[u8]) -> Result<(), ProfileError> {
    if bytes.len() > MAX_AVATAR {
        return Err(ProfileError::AvatarTooLarge(bytes.len()));
    }
    image_kind(bytes).map(drop).ok_or(ProfileError::NotAnImage)
}

impl Profile {
    /// Signs the profile with `key`, the key of `self.peer`, after checking its bounds.
    pub fn sign(self, key: &Keypair) -> Result<SignedProfile, ProfileError> {
        check_name(&self.name)?;
        check_about(&self.about)?;
        let encoded = signed::sign(
            &Payload {
                peer: self.peer.to_bytes(),
                seq: self.seq,
                time_ms: self.time_ms,
                name: self.name.clone(),
                about: self.about.clone(),
                avatar: self.avatar.map(|c| c.to_bytes()),
            },
            key,
        )?;
        if encoded.len() > MAX_ENCODED {
            return Err(ProfileError::TooLarge(encoded.len()));
        }
        Ok(SignedProfile {
            profile: self,
            encoded,
        })
    }
}

impl SignedProfile {
    /// Decodes a profile, checks its bounds and that its peer signed it.
    pub fn verify(bytes: &[u8]) -> Result<SignedProfile, ProfileError> {
        if bytes.len() > MAX_ENCODED {
            return Err(ProfileError::TooLarge(bytes.len()));
        }
        let p: Payload = signed::open(bytes, |p: &Payload| {
            PeerId::from_bytes(&p.peer).map_err(|e| e.to_string())
        })?;
        check_name(&p.name)?;
        check_about(&p.about)?;
        let malformed = |e: &dyn std::fmt::Display| SignedError::Malformed(e.to_string());
        let peer = PeerId::from_bytes(&p.peer).map_err(|e| malformed(&e))?;
        let avatar = match p.avatar {
            Some(b) => Some(Cid::try_from(b.as_slice()).map_err(|e| malformed(&e))?),
            None => None,
        };
        Ok(SignedProfile {
            profile: Profile {
                peer,
                seq: p.seq,
                time_ms: p.time_ms,
                name: p.name,
                about: p.about,
                avatar,
            },
            encoded: bytes.to_vec(),
        })
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The newer of two profiles of one peer (`self` when equal).
    pub fn newer(self, other: Option<SignedProfile>) -> SignedProfile {
        match other {
            Some(o) if o.profile.seq > self.profile.seq => o,
            _ => self,
        }
    }
}

/// What `profile set` changes; what is `None` (or `Keep`) stays as it was.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Change {
    pub name: Option<String>,
    pub about: Option<String>,
    #[serde(default)]
    pub avatar: AvatarChange,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AvatarChange {
    #[default]
    Keep,
    Clear,
    /// The image file to read.
    Set(std::path::PathBuf),
}

/// Reads an avatar image, refusing more than `MAX_AVATAR` bytes (without reading
/// them) and anything that is not an image.
pub fn read_avatar(path: &Path) -> Result<Vec<u8>, ProfileError> {
    use std::io::Read;
    let io = |source| ProfileError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_AVATAR as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    check_avatar(&bytes)?;
    Ok(bytes)
}

impl Change {
    /// The profile after this change to `old` (my last one): its seq one above, the
    /// avatar read and made a raw block (to be stored and pinned by the caller).
    pub fn apply(
        &self,
        old: Option<&Profile>,
        key: &Keypair,
        now_ms: u64,
    ) -> Result<(SignedProfile, Option<Block>), ProfileError> {
        let avatar_block = match &self.avatar {
            AvatarChange::Set(path) => Some(Block::hash(
                cid::Version::V1,
                crate::block::RAW,
                read_avatar(path)?,
            )),
            _ => None,
        };
        let avatar = match (&self.avatar, &avatar_block) {
            (_, Some(b)) => Some(*b.cid()),
            (AvatarChange::Clear, None) => None,
            _ => old.and_then(|o| o.avatar),
        };
        let profile = Profile {
            peer: key.public().to_peer_id(),
            seq: old.map_or(1, |o| o.seq + 1),
            time_ms: now_ms,
            name: self
                .name
                .clone()
                .or_else(|| old.map(|o| o.name.clone()))
                .unwrap_or_default(),
            about: self
                .about
                .clone()
                .or_else(|| old.map(|o| o.about.clone()))
                .unwrap_or_default(),
            avatar,
        };
        Ok((profile.sign(key)?, avatar_block))
    }
}

/// My signed profile, from the repo; `None` when none was ever set (or the file is
/// not one of mine).
pub fn load(repo: &Path, me: &PeerId) -> Option<SignedProfile> {
    let bytes = std::fs::read(repo.join(FILE)).ok()?;
    SignedProfile::verify(&bytes)
        .ok()
        .filter(|p| p.profile.peer == *me)
}

/// Keeps my signed profile in the repo (written aside, then renamed over the old one).
pub fn save(repo: &Path, profile: &SignedProfile) -> Result<(), ProfileError> {
    let path = repo.join(FILE);
    let tmp = repo.join(format!("{FILE}.tmp"));
    let io = |source| ProfileError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&tmp, profile.encoded()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(key: &Keypair, name: &str) -> Profile {
        Profile {
            peer: key.public().to_peer_id(),
            seq: 1,
            time_ms: 5,
            name: name.into(),
            about: "hi\nthere".into(),
            avatar: Some(crate::block::cid_of(
                cid::Version::V1,
                crate::block::RAW,
                b"img",
            )),
        }
    }

    #[test]
    fn a_profile_verifies_and_its_bounds_hold_both_ways() {
        let key = Keypair::generate_ed25519();
        let signed = alice(&key, "Alice").sign(&key).unwrap();
        let back = SignedProfile::verify(signed.encoded()).unwrap();
        assert_eq!(back.profile(), &alice(&key, "Alice"));
        // Another key in Alice's name.
        let forged = alice(&key, "Alice").sign(&Keypair::generate_ed25519());
        assert!(matches!(
            SignedProfile::verify(forged.unwrap().encoded()),
            Err(ProfileError::Signed(SignedError::BadSignature(_)))
        ));
        assert!(matches!(
            alice(&key, &"x".repeat(65)).sign(&key),
            Err(ProfileError::NameTooLong(65))
        ));
        assert!(matches!(
            alice(&key, "a\u{7}b").sign(&key),
            Err(ProfileError::NameControl)
        ));
        // A hostile peer's record that skips the checks when signing is refused when read.
        let payload = Payload {
            peer: key.public().to_peer_id().to_bytes(),
            seq: 1,
            time_ms: 1,
            name: "n".repeat(200),
            about: String::new(),
            avatar: None,
        };
        let bytes = signed::sign(&payload, &key).unwrap();
        assert!(SignedProfile::verify(&bytes).is_err());
        assert!(SignedProfile::verify(&vec![0; MAX_ENCODED + 1]).is_err());
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name_and_counts_up() {
        let key = Keypair::generate_ed25519();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.gif");
        std::fs::write(&img, b"GIF89a....").unwrap();
        let set = Change {
            name: Some("Alice".into()),
            about: Some("hi".into()),
            avatar: AvatarChange::Set(img),
        };
        let (first, block) = set.apply(None, &key, 1).unwrap();
        let block = block.expect("the avatar's block");
        assert_eq!(first.profile().seq, 1);
        assert_eq!(first.profile().avatar, Some(*block.cid()));
        let rename = Change {
            name: Some("Alicia".into()),
            ..Change::default()
        };
        let (second, none) = rename.apply(Some(first.profile()), &key, 2).unwrap();
        assert!(none.is_none());
        let p = second.profile();
        assert_eq!(
            (p.seq, p.name.as_str(), p.about.as_str()),
            (2, "Alicia", "hi")
        );
        assert_eq!(p.avatar, first.profile().avatar);
        let clear = Change {
            avatar: AvatarChange::Clear,
            ..Change::default()
        };
        let (third, _) = clear.apply(Some(p), &key, 3).unwrap();
        assert_eq!(third.profile().avatar, None);
        assert_eq!(third.clone().newer(Some(second.clone())), third);
        assert_eq!(second.clone().newer(Some(third.clone())), third);
    }

    #[test]
    fn avatars_are_images_by_their_magic_bytes() {
        assert_eq!(image_kind(b"\x89PNG\r\n\x1a\nrest"), Some("png"));
        assert_eq!(image_kind(&[0xff, 0xd8, 0xff, 0xe0]), Some("jpeg"));
        assert_eq!(image_kind(b"GIF89a..."), Some("gif"));
        assert_eq!(image_kind(b"RIFF\0\0\0\0WEBPVP8 "), Some("webp"));
        assert!(check_avatar(b"#!/bin/sh\n").is_err());
        let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
        big.resize(MAX_AVATAR + 1, 0);
        assert!(matches!(
            check_avatar(&big),
            Err(ProfileError::AvatarTooLarge(_))
        ));
    }
}
