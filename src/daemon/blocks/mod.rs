//! Blocks over the control socket, so that `add`, `cat`, `ls`, `get`, `export` and
//! `import` work while the daemon holds the repo. A `{"op":"blocks"}` request switches
//! the connection to length-prefixed binary frames: a JSON line per megabyte block
//! would cost more than the block.
//!
//! - this module: the wire format and its bounds, shared by both sides.
//! - [`serve`]: the daemon's side: the store, fetching what is not here.
//! - [`client`]: the CLI's side, a [`crate::store::Blocks`] over the connection.
//!
//! Each request is one frame `[op u8][len u32 BE][payload]`, answered by one frame
//! `[status u8][len u32 BE][payload]`, in order.

pub mod client;
pub mod serve;

use std::io::{self, Read, Write};

use cid::Cid;

use crate::store::{StoreError, Unavailable};

/// Longest frame payload either side accepts: a batch of blocks of a bulk write, and
/// room for any single block (a CAR's blocks may be up to 4 MiB).
pub const MAX_FRAME: u32 = 8 << 20;
/// Most blocks in one `Put` frame: small blocks cost more to hold than their bytes.
pub const MAX_PUT_BLOCKS: usize = 8192;
/// Blocks sessions served at once; more are refused, so that clients cannot make the
/// daemon hold more than this many frames.
pub const MAX_SESSIONS: usize = 16;

/// The answers to `Op::Has`.
pub const HELD_NOT: u8 = 0;
pub const HELD_OWN: u8 = 1;
pub const HELD_FETCHED: u8 = 2;

/// What a request frame asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Payload: a CID. Answer: the block, fetched from peers if it is not here.
    Get = 1,
    /// Payload: a CID. Answer: one byte, whose the block is: `HELD_NOT` (not here),
    /// `HELD_OWN` or `HELD_FETCHED` (fetched for a peer's drive).
    Has = 2,
    /// Payload: blocks, each `[cid len u32][cid][data len u32][data]`. Written as the
    /// drive's own, like a bulk import: durable at `Finish`.
    Put = 3,
    /// Makes every block put so far durable.
    Finish = 4,
    /// Payload: `[cid len u32][cid][label]`. Pins a root that is here under a label.
    Pin = 5,
}

impl Op {
    fn from_byte(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Get,
            2 => Op::Has,
            3 => Op::Put,
            4 => Op::Finish,
            5 => Op::Pin,
            _ => return None,
        })
    }
}

/// How an answer frame begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Done; the payload is the answer.
    Ok = 0,
    /// Failed; the payload is a [`Failure`].
    Failed = 1,
}

/// Why a request failed, as sent in a `Failed` frame: `[kind u8][detail]`.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The block asked for is not here and no peer delivered it. Detail: one byte.
    Unavailable(Unavailable),
    /// The daemon's disk is full. Detail: its message.
    DiskFull(String),
    /// Anything else. Detail: its message.
    Other(String),
}

const UNAVAILABLE: [Unavailable; 4] = [
    Unavailable::NoPeer,
    Unavailable::Refused,
    Unavailable::Timeout,
    Unavailable::Stopped,
];

impl Failure {
    fn of(e: &StoreError) -> Failure {
        match e {
            StoreError::Unavailable { why, .. } => Failure::Unavailable(*why),
            StoreError::DiskFull(m) => Failure::DiskFull(m.clone()),
            other => Failure::Other(other.to_string()),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Failure::Unavailable(why) => {
                let code = UNAVAILABLE.iter().position(|u| u == why).unwrap_or(0);
                vec![0, code as u8]
            }
            Failure::DiskFull(m) => [&[1u8][..], m.as_bytes()].concat(),
            Failure::Other(m) => [&[2u8][..], m.as_bytes()].concat(),
        }
    }

    fn decode(bytes: &[u8]) -> Failure {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match bytes {
            [0, code] => match UNAVAILABLE.get(usize::from(*code)) {
                Some(why) => Failure::Unavailable(*why),
                None => Failure::Other(format!("unknown reason {code}")),
            },
            [1, m @ ..] => Failure::DiskFull(text(m)),
            [2, m @ ..] => Failure::Other(text(m)),
            _ => Failure::Other("a malformed failure".into()),
        }
    }
}

/// Writes one frame: a header byte (op or status), the length, the payload parts.
fn write_frame(out: &mut impl Write, head: u8, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut header = [0u8; 5];
    header[0] = head;
    header[1..].copy_from_slice(&len.to_be_bytes());
    out.write_all(&header)?;
    for p in parts {
        out.write_all(p)?;
    }
    out.flush()
}

/// A frame header read: its first byte and payload length (at most `MAX_FRAME`).
/// `None` at a clean end of the stream.
fn read_header(input: &mut impl Read) -> io::Result<Option<(u8, u32)>> {
    let mut header = [0u8; 5];
    match input.read(&mut header[..1])? {
        0 => return Ok(None),
        _ => input.read_exact(&mut header[1..])?,
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    Ok(Some((header[0], len)))
}

/// Reads a payload of `len` bytes. The buffer grows with the bytes that arrive, not
/// with what the header claims.
fn read_payload(input: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    let mut payload = Vec::new();
    input.take(u64::from(len)).read_to_end(&mut payload)?;
    if payload.len() != len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(payload)
}

/// Appends `[len u32 BE][bytes]`.
fn put_part(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Splits `[len u32 BE][bytes]` off the front of `input`.
fn take_part<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = input.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (part, rest) = rest.split_at(len);
    *input = rest;
    Some(part)
}

/// Bytes a block takes in a `Put` payload.
fn put_size(cid: &Cid, data: &[u8]) -> usize {
    8 + cid.encoded_len() + data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_round_trip() {
        for f in [
            Failure::Unavailable(Unavailable::Timeout),
            Failure::Unavailable(Unavailable::Stopped),
            Failure::DiskFull("full".into()),
            Failure::Other("x".into()),
        ] {
            assert_eq!(Failure::decode(&f.encode()), f);
        }
        assert_eq!(
            Failure::decode(&[]),
            Failure::Other("a malformed failure".into())
        );
    }

    #[test]
    fn a_claimed_length_past_the_limit_is_refused_before_reading() {
        let mut input: &[u8] = &[3, 0xff, 0xff, 0xff, 0xff];
        let err = read_header(&mut input).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut short: &[u8] = &[1, 2, 3];
        assert!(read_payload(&mut short, 1000).is_err());
    }

    #[test]
    fn parts_split_and_refuse_short_input() {
        let mut buf = Vec::new();
        put_part(&mut buf, b"abc");
        put_part(&mut buf, b"");
        let mut input = &buf[..];
        assert_eq!(take_part(&mut input), Some(&b"abc"[..]));
        assert_eq!(take_part(&mut input), Some(&b""[..]));
        assert_eq!(take_part(&mut input), None);
        let mut lying: &[u8] = &[0, 0, 0, 9, 1];
        assert_eq!(take_part(&mut lying), None);
    }
}
