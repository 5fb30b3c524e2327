//! `/peerfs/replica/1.0.0`: a mirror tells a drive's owner which head of it it holds in
//! full. One signed statement per stream, one answer back. The statement is signed by
//! the mirror with the key its peer ID names, and names the owner, so that a statement
//! sent by another in the mirror's name, or replayed to another owner, is refused.
//! Messages are length-prefixed DAG-CBOR (see `net::protocol`).

use std::io;

use cid::Cid;
use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};

use crate::net::protocol::{encode, read_message};
use crate::signed::{self, SignedError};

pub const REPLICA_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/replica/1.0.0");
/// A follower asks an owner for its mirrors' statements (it writes one empty message,
/// the owner answers with `MirrorList`), so that it can fetch from them while the
/// owner is away.
pub const MIRRORS_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/mirrors/1.0.0");
/// Statements in one `MirrorList`, at most.
pub const MAX_LISTED: usize = 16;
/// Addresses one statement carries, at most, and their length.
const MAX_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 256;
/// A statement's bytes at most: two peer IDs, a CID, numbers, a few addresses and a
/// signature.
const MAX_STATEMENT: usize = 4096;
const MAX_LIST: usize = MAX_LISTED * (MAX_STATEMENT + 16) + 64;
/// Readers one answer names, at most: a drive read by more peers is passed on by its
/// mirrors to the first this many only.
pub const MAX_READERS: usize = 1024;
/// An answer's bytes at most: a reason, or the readers' peer IDs (up to 42 bytes each,
/// with their framing).
const MAX_ANSWER: usize = MAX_READERS * 48 + 1024;

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("malformed statement: {0}")]
    Malformed(String),
    #[error("the statement's signature does not match its mirror {0}")]
    BadSignature(PeerId),
    #[error("the statement is from {claimed}, but {actual} sent it")]
    WrongSender { claimed: String, actual: String },
    #[error("the statement is about {0}'s drive, not this node's")]
    NotMine(PeerId),
}

/// "I, `mirror`, hold head `seq` (root `root`) of `owner`'s drive in full."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub mirror: PeerId,
    pub owner: PeerId,
    pub seq: u64,
    pub root: Cid,
    pub time_ms: u64,
    /// Where the mirror listens, as it says: readers dial it there.
    pub addrs: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(with = "serde_bytes")]
    mirror: Vec<u8>,
    #[serde(with = "serde_bytes")]
    owner: Vec<u8>,
    seq: u64,
    #[serde(with = "serde_bytes")]
    root: Vec<u8>,
    time_ms: u64,
    #[serde(default)]
    addrs: Vec<String>,
}

/// The owner's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// Taken. `readers`: when the drive is restricted, the peers that may read it, to
    /// whom the mirror may pass its blocks (its head says when it is open to everyone).
    /// The stream is the owner's own, so the list needs no signature of its own.
    Noted {
        #[serde(default)]
        readers: Vec<serde_bytes::ByteBuf>,
    },
    Refused {
        reason: String,
    },
}

impl Answer {
    /// "Taken", telling a mirror it may pass the drive on to `readers`.
    pub fn noted(readers: impl IntoIterator<Item = PeerId>) -> Answer {
        Answer::Noted {
            readers: readers
                .into_iter()
                .take(MAX_READERS)
                .map(|p| serde_bytes::ByteBuf::from(p.to_bytes()))
                .collect(),
        }
    }

    /// The readers a `Noted` names, those that parse, at most `MAX_READERS`.
    pub fn readers(&self) -> Vec<PeerId> {
        match self {
            Answer::Noted { readers } => readers
                .iter()
                .take(MAX_READERS)
                .filter_map(|b| PeerId::from_bytes(b).ok())
                .collect(),
            Answer::Refused { .. } => Vec::new(),
        }
    }
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Statement {
    /// The signed, encoded form. `key` must be the key of `self.mirror`.
    pub fn sign(&self, key: &Keypair) -> io::Result<Vec<u8>> {
        let payload = Payload {
            mirror: self.mirror.to_bytes(),
            owner: self.owner.to_bytes(),
            seq: self.seq,
            root: self.root.to_bytes(),
            time_ms: self.time_ms,
            addrs: self.addrs.clone(),
        };
        signed::sign(&payload, key).map_err(invalid)
    }

    /// Decodes a statement and checks its signature; `sender`, when given, must be
    /// the mirror that signed it, and `me` the owner it is about.
    pub fn verify(
        bytes: &[u8],
        sender: Option<PeerId>,
        me: Option<PeerId>,
    ) -> Result<Statement, StatementError> {
        let malformed = |e: &dyn std::fmt::Display| StatementError::Malformed(e.to_string());
        let p: Payload = signed::open(bytes, |p: &Payload| {
            PeerId::from_bytes(&p.mirror).map_err(|e| e.to_string())
        })
        .map_err(|e| match e {
            SignedError::BadSignature(mirror) => StatementError::BadSignature(mirror),
            SignedError::Malformed(why) => StatementError::Malformed(why),
        })?;
        let mirror = PeerId::from_bytes(&p.mirror).map_err(|e| malformed(&e))?;
        let owner = PeerId::from_bytes(&p.owner).map_err(|e| malformed(&e))?;
        let root = Cid::try_from(p.root.as_slice()).map_err(|e| malformed(&e))?;
        if let Some(actual) = sender.filter(|s| *s != mirror) {
            return Err(StatementError::WrongSender {
                claimed: mirror.to_string(),
                actual: actual.to_string(),
            });
        }
        if me.is_some_and(|m| m != owner) {
            return Err(StatementError::NotMine(owner));
        }
        Ok(Statement {
            mirror,
            owner,
            seq: p.seq,
            root,
            time_ms: p.time_ms,
            addrs: p
                .addrs
                .into_iter()
                .filter(|a| a.len() <= MAX_ADDR_LEN)
                .take(MAX_ADDRS)
                .collect(),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Framed(#[serde(with = "serde_bytes")] Vec<u8>);

/// An owner's answer on `MIRRORS_PROTOCOL`: its mirrors' signed statements.
#[derive(Default, Serialize, Deserialize)]
pub struct MirrorList {
    pub statements: Vec<serde_bytes::ByteBuf>,
}

/// Asks for an owner's mirrors on `io`: the statements' signed bytes, not yet verified.
pub async fn ask_list<S>(io: &mut S) -> io::Result<MirrorList>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    io.write_all(&encode(&MirrorList::default(), 64)?).await?;
    io.flush().await?;
    read_message(io, MAX_LIST).await
}

/// Reads the (empty) question and answers it with `list`.
pub async fn answer_list<S>(io: &mut S, list: &MirrorList) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _asked: MirrorList = read_message(io, 64).await?;
    io.write_all(&encode(list, MAX_LIST)?).await?;
    io.flush().await?;
    io.close().await
}

/// Sends a signed statement on `io` and reads the answer.
pub async fn send<S>(io: &mut S, signed: Vec<u8>) -> io::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    io.write_all(&encode(&Framed(signed), MAX_STATEMENT + 64)?)
        .await?;
    io.flush().await?;
    read_message(io, MAX_ANSWER).await
}

/// Reads a statement's signed bytes from `io` (not yet verified).
pub async fn read<S>(io: &mut S) -> io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let framed: Framed = read_message(io, MAX_STATEMENT + 64).await?;
    Ok(framed.0)
}

/// Writes the answer to a statement.
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

    fn statement(mirror: &Keypair, owner: PeerId) -> Statement {
        Statement {
            mirror: mirror.public().to_peer_id(),
            owner,
            seq: 7,
            root: crate::block::cid_of(cid::Version::V1, crate::block::RAW, b"x"),
            time_ms: 1,
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        }
    }

    #[test]
    fn a_statement_verifies_only_from_its_mirror_and_for_its_owner() {
        let (c, owner, other) = (
            Keypair::generate_ed25519(),
            PeerId::random(),
            PeerId::random(),
        );
        let s = statement(&c, owner);
        let signed = s.sign(&c).unwrap();
        let me = Some(owner);
        assert_eq!(Statement::verify(&signed, Some(s.mirror), me).unwrap(), s);
        assert!(matches!(
            Statement::verify(&signed, Some(other), me),
            Err(StatementError::WrongSender { .. })
        ));
        assert!(matches!(
            Statement::verify(&signed, Some(s.mirror), Some(other)),
            Err(StatementError::NotMine(_))
        ));
        // Signed by another key in C's name.
        let forged = s.sign(&Keypair::generate_ed25519()).unwrap();
        assert!(matches!(
            Statement::verify(&forged, Some(s.mirror), me),
            Err(StatementError::BadSignature(_))
        ));
        // A seq changed after signing.
        let mut env: signed::Envelope = serde_ipld_dagcbor::from_slice(&signed).unwrap();
        let last = env.payload.len() - 1;
        env.payload[last] ^= 1;
        let bent = serde_ipld_dagcbor::to_vec(&env).unwrap();
        assert!(Statement::verify(&bent, Some(s.mirror), me).is_err());
        assert!(Statement::verify(b"junk", None, None).is_err());
    }

    #[test]
    fn an_answer_names_at_most_max_readers_and_fits_its_limit() {
        let many: Vec<PeerId> = (0..MAX_READERS + 5).map(|_| PeerId::random()).collect();
        let answer = Answer::noted(many.iter().copied());
        let bytes = encode(&answer, MAX_ANSWER).unwrap();
        // After the 4-byte length prefix.
        let back: Answer = serde_ipld_dagcbor::from_slice(&bytes[4..]).unwrap();
        assert_eq!(back.readers(), many[..MAX_READERS]);
    }
}
