//! `/peerfs/find/1.0.0`: a search asked of a drive's owner, so that the asker need not
//! fetch the drive's directory blocks to walk them itself.
//!
//! The asker sends one `Ask`; the owner answers with `Hit`s, `Walking` progress between
//! them, and one `End` (or one `Refused`). Messages are length-prefixed DAG-CBOR under
//! their limits (see `net::protocol`), and every hit is checked before it is believed
//! to be a path: hostile answers end the stream, nothing else.

use std::io;

use cid::Cid;
use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use super::{Found, Query, Walked};
use crate::net::protocol::{encode, read_message};

pub const FIND_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/find/1.0.0");
/// Matches one answer carries at most, whatever the asker asks for.
pub const MAX_MATCHES: u64 = 10_000;
/// An ask's bytes at most: a pattern and three tests.
const MAX_ASK: usize = 8 * 1024;
/// One answer message's bytes at most: a hit's path, with room for its CID.
const MAX_ANSWER: usize = 16 * 1024;

/// A search of the answerer's drive, as last published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub query: Query,
    /// Matches wanted at most (the answerer caps it at `MAX_MATCHES`).
    pub limit: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// An entry the query accepts; its path is from the drive's root.
    Hit(Found),
    /// How far the walk is, sent every so many entries.
    Walking(Walked),
    /// The search is over; `truncated` when a cap (matches or time) ended it early.
    End { walked: Walked, truncated: bool },
    /// The answerer will not search for this asker (its `readers`, or it is busy).
    Refused { reason: String },
}

fn invalid(message: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

pub async fn send_ask<S: AsyncWrite + Unpin>(io: &mut S, ask: &Ask) -> io::Result<()> {
    io.write_all(&encode(ask, MAX_ASK)?).await?;
    io.flush().await
}

pub async fn read_ask<S: AsyncRead + Unpin + Send>(io: &mut S) -> io::Result<Ask> {
    read_message(io, MAX_ASK).await
}

/// Writes one answer. A hit whose path is too long for a message is not an error:
/// `Ok(false)`, and the caller goes on without it.
pub async fn send_answer<S: AsyncWrite + Unpin>(io: &mut S, answer: &Answer) -> io::Result<bool> {
    let framed = match encode(answer, MAX_ANSWER) {
        Ok(f) => f,
        Err(_) if matches!(answer, Answer::Hit(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    io.write_all(&framed).await?;
    io.flush().await?;
    Ok(true)
}

/// Reads one answer and checks that a hit names a path inside the drive and a CID.
pub async fn read_answer<S: AsyncRead + Unpin + Send>(io: &mut S) -> io::Result<Answer> {
    let answer: Answer = read_message(io, MAX_ANSWER).await?;
    if let Answer::Hit(hit) = &answer {
        if !inside(&hit.path) {
            return Err(invalid(format!("{:?} is not a path in a drive", hit.path)));
        }
        Cid::try_from(hit.cid.as_str()).map_err(|e| invalid(format!("{}: {e}", hit.cid)))?;
    }
    Ok(answer)
}

/// A relative path of plain names: no `..`, `.`, empty component or NUL, which joined
/// to a mount path could point outside the drive it claims to be in.
fn inside(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unixfs::diff::EntryKind;

    fn hit(path: &str) -> Answer {
        Answer::Hit(Found {
            path: path.into(),
            kind: EntryKind::File,
            size: Some(3),
            mtime: None,
            cid: crate::block::cid_of(cid::Version::V1, crate::block::RAW, b"abc").to_string(),
        })
    }

    fn round_trip(answer: &Answer) -> io::Result<Answer> {
        let bytes = encode(answer, MAX_ANSWER).unwrap();
        libp2p::futures::executor::block_on(read_answer(&mut &bytes[..]))
    }

    #[test]
    fn hits_outside_the_drive_are_refused_as_malformed() {
        assert_eq!(round_trip(&hit("a/b.pdf")).unwrap(), hit("a/b.pdf"));
        for bad in ["", "/etc/passwd", "a/../../b", "./a", "a//b", "a/", "a\0b"] {
            let e = round_trip(&hit(bad)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
        let Answer::Hit(mut f) = hit("a") else {
            unreachable!()
        };
        f.cid = "not a cid".into();
        assert!(round_trip(&Answer::Hit(f)).is_err());
    }

    #[test]
    fn a_hit_too_long_for_a_message_is_skipped_not_an_error() {
        let long = "x/".repeat(MAX_ANSWER) + "y";
        let mut sink = Vec::new();
        let sent = libp2p::futures::executor::block_on(send_answer(&mut sink, &hit(&long)));
        assert!(!sent.unwrap());
        assert!(sink.is_empty());
        let ask = Ask {
            query: Query {
                pattern: Some("*".repeat(MAX_ASK)),
                ..Query::default()
            },
            limit: 1,
        };
        assert!(libp2p::futures::executor::block_on(send_ask(&mut sink, &ask)).is_err());
    }
}
