//! Bitswap's wire format: one protobuf `Message` per frame, each frame prefixed by its
//! length as an unsigned varint, on a stream the sender opened. The protobuf codec is
//! prost's (derived from the schema below, as `bitswap.proto` has it); here is only the
//! framing, the limits, and the typed view the server works with.

use cid::Cid;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::Message as _;

use super::{Version, MAX_ENTRIES, MAX_MESSAGE};

/// `bitswap.proto`'s `Message`, all three versions' fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(message, optional, tag = "1")]
    pub wantlist: Option<Wantlist>,
    /// 1.0.0: blocks as bare bytes (CIDv0, dag-pb).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub blocks: Vec<Vec<u8>>,
    /// 1.1.0 and later: blocks with their CID's prefix.
    #[prost(message, repeated, tag = "3")]
    pub payload: Vec<PayloadBlock>,
    /// 1.2.0: HAVE and DONT_HAVE.
    #[prost(message, repeated, tag = "4")]
    pub block_presences: Vec<BlockPresence>,
    #[prost(int32, tag = "5")]
    pub pending_bytes: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Wantlist {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    /// The entries replace the whole wantlist, rather than add to it.
    #[prost(bool, tag = "2")]
    pub full: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// The CID's bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub block: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub priority: i32,
    #[prost(bool, tag = "3")]
    pub cancel: bool,
    #[prost(enumeration = "WantType", tag = "4")]
    pub want_type: i32,
    #[prost(bool, tag = "5")]
    pub send_dont_have: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WantType {
    Block = 0,
    Have = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PayloadBlock {
    /// CID version, codec, multihash code and digest length, each a varint.
    #[prost(bytes = "vec", tag = "1")]
    pub prefix: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockPresence {
    #[prost(bytes = "vec", tag = "1")]
    pub cid: Vec<u8>,
    #[prost(enumeration = "PresenceType", tag = "2")]
    pub r#type: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PresenceType {
    Have = 0,
    DontHave = 1,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("a message of {0} bytes is over the limit of {max}", max = MAX_MESSAGE)]
    TooLong(u64),
    #[error("the length prefix is not a varint")]
    BadLength,
    #[error("a message with more than {max} entries", max = MAX_ENTRIES)]
    TooManyEntries,
    #[error("not a Bitswap message: {0}")]
    Malformed(&'static str),
    #[error("not a Bitswap message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("a wantlist entry names no valid CID")]
    BadCid,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What a peer wants, as a wantlist entry says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub cid: Cid,
    /// Only whether I have it (1.2.0), not the block.
    pub have: bool,
    /// Say DONT_HAVE when I do not (1.2.0); otherwise say nothing.
    pub send_dont_have: bool,
}

/// A received message's wantlist, checked.
#[derive(Debug, Default, PartialEq)]
pub struct Wants {
    pub full: bool,
    pub wants: Vec<Want>,
    pub cancels: Vec<Cid>,
}

impl Wants {
    /// The wantlist of `message`; a CID that does not parse refuses the whole message.
    pub fn of(message: &Message) -> Result<Wants, WireError> {
        let Some(list) = &message.wantlist else {
            return Ok(Wants::default());
        };
        let mut wants = Wants {
            full: list.full,
            ..Wants::default()
        };
        for e in &list.entries {
            let cid = Cid::try_from(e.block.as_slice()).map_err(|_| WireError::BadCid)?;
            if e.cancel {
                wants.cancels.push(cid);
            } else {
                wants.wants.push(Want {
                    cid,
                    have: e.want_type == WantType::Have as i32,
                    send_dont_have: e.send_dont_have,
                });
            }
        }
        Ok(wants)
    }
}

/// A CID's prefix as 1.1.0 carries it beside a block.
pub fn prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    for v in [
        cid.version() as u64,
        cid.codec(),
        cid.hash().code(),
        u64::from(cid.hash().size()),
    ] {
        prost::encoding::encode_varint(v, &mut out);
    }
    out
}

/// One answer message in `version`'s form: blocks, then HAVEs and DONT_HAVEs (which
/// 1.0.0 and 1.1.0 do not have: their peers get only blocks).
pub fn answer(version: Version, blocks: Vec<(Cid, Vec<u8>)>, presences: &[(Cid, bool)]) -> Message {
    let mut m = Message::default();
    match version {
        Version::V100 => m.blocks = blocks.into_iter().map(|(_, d)| d).collect(),
        Version::V110 | Version::V120 => {
            m.payload = blocks
                .into_iter()
                .map(|(c, data)| PayloadBlock {
                    prefix: prefix(&c),
                    data,
                })
                .collect()
        }
    }
    if version == Version::V120 {
        m.block_presences = presences
            .iter()
            .map(|(cid, have)| BlockPresence {
                cid: cid.to_bytes(),
                r#type: if *have {
                    PresenceType::Have
                } else {
                    PresenceType::DontHave
                } as i32,
            })
            .collect();
    }
    m
}

/// Reads one frame's length, or `None` at a clean end of the stream.
pub async fn read_len<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<usize>, WireError> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8];
        match io.read(&mut byte).await? {
            0 if i == 0 => return Ok(None),
            0 => return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            _ => {}
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > MAX_MESSAGE as u64 {
                return Err(WireError::TooLong(len));
            }
            return Ok(Some(len as usize));
        }
    }
    Err(WireError::BadLength)
}

/// Reads a frame of `len` bytes (checked by `read_len`) and decodes it.
pub async fn read_body<R: AsyncRead + Unpin>(io: &mut R, len: usize) -> Result<Message, WireError> {
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    decode(&buf)
}

/// Decodes one frame's body, after counting its repeated fields: a 4 MiB message of
/// empty entries would decode into ~100 MiB of structs.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    let counted = count_fields(buf)?;
    if counted.top > MAX_ENTRIES || counted.entries > MAX_ENTRIES {
        return Err(WireError::TooManyEntries);
    }
    Ok(Message::decode(buf)?)
}

/// Writes `message` as one frame.
pub async fn write<W: AsyncWrite + Unpin>(io: &mut W, message: &Message) -> std::io::Result<()> {
    let buf = message.encode_length_delimited_to_vec();
    io.write_all(&buf).await?;
    io.flush().await
}

struct Counted {
    /// Top-level fields (blocks, payload, presences: the repeated ones).
    top: usize,
    /// Entries of the wantlist.
    entries: usize,
}

/// Counts fields without decoding them (protobuf's key, varint and length framing).
fn count_fields(buf: &[u8]) -> Result<Counted, WireError> {
    let mut counted = Counted { top: 0, entries: 0 };
    for_each_field(buf, |tag, body| {
        counted.top += 1;
        if tag == 1 {
            if let Some(list) = body {
                for_each_field(list, |tag, _| {
                    counted.entries += usize::from(tag == 1);
                    Ok(())
                })?;
            }
        }
        Ok(())
    })?;
    Ok(counted)
}

/// Calls `each` with every field's tag, and the bytes of length-delimited ones.
fn for_each_field(
    mut buf: &[u8],
    mut each: impl FnMut(u32, Option<&[u8]>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let truncated = || WireError::Malformed("a field runs past the end");
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        let body = match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf)?;
                None
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                buf = buf.get(n..).ok_or_else(truncated)?;
                None
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf)?).map_err(|_| truncated())?;
                let body = buf.get(..len).ok_or_else(truncated)?;
                buf = &buf[len..];
                Some(body)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(WireError::Malformed("protobuf groups"))
            }
        };
        each(tag, body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, RAW};

    fn cid(i: u8) -> Cid {
        *Block::hash(cid::Version::V1, RAW, vec![i]).cid()
    }

    #[test]
    fn a_wantlist_reads_back_as_wants_and_cancels() {
        let m = Message {
            wantlist: Some(Wantlist {
                full: true,
                entries: vec![
                    Entry {
                        block: cid(1).to_bytes(),
                        want_type: WantType::Have as i32,
                        send_dont_have: true,
                        ..Entry::default()
                    },
                    Entry {
                        block: cid(2).to_bytes(),
                        cancel: true,
                        ..Entry::default()
                    },
                ],
            }),
            ..Message::default()
        };
        let back = decode(&m.encode_to_vec()).unwrap();
        let wants = Wants::of(&back).unwrap();
        assert!(wants.full);
        assert_eq!(
            wants.wants,
            vec![Want {
                cid: cid(1),
                have: true,
                send_dont_have: true
            }]
        );
        assert_eq!(wants.cancels, vec![cid(2)]);
    }

    #[test]
    fn garbage_and_floods_of_entries_are_refused() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        // Field 1 claims 100 bytes and has 2.
        assert!(decode(&[0x0a, 100, 1, 2]).is_err());
        // 5,000 empty wantlist entries: small on the wire, many structs decoded.
        let mut list = Vec::new();
        for _ in 0..5_000 {
            list.extend([0x0a, 0]);
        }
        let mut m = vec![0x0a];
        prost::encoding::encode_varint(list.len() as u64, &mut m);
        m.extend(list);
        assert!(matches!(decode(&m), Err(WireError::TooManyEntries)));
        let bad_cid = Message {
            wantlist: Some(Wantlist {
                entries: vec![Entry {
                    block: vec![1, 2, 3],
                    ..Entry::default()
                }],
                full: false,
            }),
            ..Message::default()
        };
        assert!(Wants::of(&bad_cid).is_err());
    }

    #[test]
    fn a_prefix_names_version_codec_and_hash() {
        let c = cid(7);
        assert_eq!(prefix(&c), vec![1, 0x55, 0x12, 32]);
    }

    #[tokio::test]
    async fn a_frame_longer_than_the_limit_is_refused_before_it_is_read() {
        let mut len = Vec::new();
        prost::encoding::encode_varint(MAX_MESSAGE as u64 + 1, &mut len);
        let mut io = len.as_slice();
        assert!(matches!(
            read_len(&mut io).await,
            Err(WireError::TooLong(_))
        ));
        let mut empty: &[u8] = &[];
        assert!(read_len(&mut empty).await.unwrap().is_none());
    }
}
