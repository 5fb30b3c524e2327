//! `/peerfs/offer/1.0.0`: one signed letter per stream, one answer back.
//!
//! A letter is an offer ("here is ROOT, NAME, SIZE bytes, for you"), a progress note
//! ("I have N% of it"), or a receipt ("delivered", "read", "failed: REASON"). It is signed by its sender
//! with the key its peer ID names, and names its recipient, so a letter replayed to
//! someone else, or sent by another in its name, is refused. Messages are length-
//! prefixed DAG-CBOR under `MAX_LETTER` (see `net::protocol`).

use std::io;

use cid::Cid;
use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::net::protocol::{encode, read_message};
use crate::signed::{self, SignedError};

pub const OFFER_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/offer/1.0.0");
/// A letter's bytes at most: a name, a note and a CID, with room to spare.
pub const MAX_LETTER: usize = 16 * 1024;
/// An answer's bytes at most (a refusal's reason).
const MAX_ANSWER: usize = 2048;
/// An offer's note, in bytes at most.
pub const MAX_NOTE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LetterError {
    #[error("malformed letter: {0}")]
    Malformed(String),
    #[error("the letter's signature does not match its sender {0}")]
    BadSignature(PeerId),
    #[error("the letter is from {claimed}, but {actual} sent it")]
    WrongSender { claimed: String, actual: String },
    #[error("the letter is for {0}, not for this node")]
    NotForMe(PeerId),
}

/// What a letter says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Offer {
        id: String,
        name: String,
        #[serde(with = "serde_bytes")]
        root: Vec<u8>,
        size: u64,
        note: String,
    },
    /// The recipient has `percent` of the item's bytes.
    Progress { id: String, percent: u8 },
    /// All of the item is at the recipient, and shows in its inbox.
    Delivered { id: String },
    /// The recipient read the item's content for the first time.
    Read { id: String },
    /// The recipient gave up on an item it had taken: its blocks did not verify.
    Failed { id: String, reason: String },
}

/// What is signed.
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(with = "serde_bytes")]
    from: Vec<u8>,
    #[serde(with = "serde_bytes")]
    to: Vec<u8>,
    time_ms: u64,
    body: Body,
}

/// A letter whose signature and addresses were checked (or that we signed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    pub from: PeerId,
    pub to: PeerId,
    pub time_ms: u64,
    pub body: Body,
}

/// The recipient's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// An offer taken: its blocks are being fetched.
    Accepted,
    Refused {
        reason: String,
    },
    /// A progress note or receipt taken.
    Noted,
}

impl Letter {
    /// The signed, encoded form. `key` must be the key of `self.from`.
    pub fn sign(&self, key: &Keypair) -> io::Result<Vec<u8>> {
        let payload = Payload {
            from: self.from.to_bytes(),
            to: self.to.to_bytes(),
            time_ms: self.time_ms,
            body: self.body.clone(),
        };
        signed::sign(&payload, key)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Decodes a letter `sender` sent to `me`, and checks who signed it and for whom.
    pub fn verify(bytes: &[u8], sender: PeerId, me: PeerId) -> Result<Letter, LetterError> {
        let malformed = |e: &dyn std::fmt::Display| LetterError::Malformed(e.to_string());
        let p: Payload = signed::open(bytes, |p: &Payload| {
            PeerId::from_bytes(&p.from).map_err(|e| e.to_string())
        })
        .map_err(|e| match e {
            SignedError::BadSignature(from) => LetterError::BadSignature(from),
            SignedError::Malformed(why) => LetterError::Malformed(why),
        })?;
        let from = PeerId::from_bytes(&p.from).map_err(|e| malformed(&e))?;
        let to = PeerId::from_bytes(&p.to).map_err(|e| malformed(&e))?;
        if from != sender {
            return Err(LetterError::WrongSender {
                claimed: from.to_string(),
                actual: sender.to_string(),
            });
        }
        if to != me {
            return Err(LetterError::NotForMe(to));
        }
        if let Body::Offer { root, .. } = &p.body {
            Cid::try_from(root.as_slice()).map_err(|e| malformed(&e))?;
        }
        Ok(Letter {
            from,
            to,
            time_ms: p.time_ms,
            body: p.body,
        })
    }
}

/// The letter's bytes as a framed message.
#[derive(Serialize, Deserialize)]
struct Framed(#[serde(with = "serde_bytes")] Vec<u8>);

/// Sends a signed letter on `io` and reads the answer.
pub async fn send_letter<S>(io: &mut S, signed: Vec<u8>) -> io::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    io.write_all(&encode(&Framed(signed), MAX_LETTER + 64)?)
        .await?;
    io.flush().await?;
    read_message(io, MAX_ANSWER).await
}

/// Reads a letter's signed bytes from `io` (not yet verified).
pub async fn read_letter<S>(io: &mut S) -> io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let framed: Framed = read_message(io, MAX_LETTER + 64).await?;
    Ok(framed.0)
}

/// Writes the answer to a letter.
pub async fn answer<S>(io: &mut S, answer: &Answer) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    io.write_all(&encode(answer, MAX_ANSWER)?).await?;
    io.flush().await?;
    io.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(from: &Keypair, to: PeerId) -> Letter {
        Letter {
            from: from.public().to_peer_id(),
            to,
            time_ms: 5,
            body: Body::Offer {
                id: "x".into(),
                name: "a.txt".into(),
                root: crate::block::cid_of(cid::Version::V1, crate::block::RAW, b"a").to_bytes(),
                size: 1,
                note: String::new(),
            },
        }
    }

    #[test]
    fn a_letter_verifies_only_from_its_signer_and_for_its_recipient() {
        let a = Keypair::generate_ed25519();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        let c = Keypair::generate_ed25519();
        let letter = offer(&a, b);
        let signed = letter.sign(&a).unwrap();
        let from = a.public().to_peer_id();
        assert_eq!(Letter::verify(&signed, from, b).unwrap(), letter);
        let other = c.public().to_peer_id();
        assert!(matches!(
            Letter::verify(&signed, other, b),
            Err(LetterError::WrongSender { .. })
        ));
        assert!(matches!(
            Letter::verify(&signed, from, other),
            Err(LetterError::NotForMe(_))
        ));
        // Signed by c in a's name.
        let forged = letter.sign(&c).unwrap();
        assert!(matches!(
            Letter::verify(&forged, from, b),
            Err(LetterError::BadSignature(_))
        ));
        let mut flipped = signed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(Letter::verify(&flipped, from, b).is_err());
    }
}
