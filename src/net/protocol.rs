//! Our own libp2p protocols and their wire format.
//!
//! - `/peerfs/block/2`: "send me these blocks" → the blocks I have, the CIDs I lack, a
//!   refusal, or "busy" (too many requests being served: ask elsewhere, or me again a
//!   little later). The asker checks every block against the CID it asked for.
//!   `/peerfs/block/1` is the same without "busy": a busy node closes a `/1` stream
//!   without an answer, which an older asker takes as a failed source.
//! - `/peerfs/head/1`: "the newest heads you know for these peers" → signed heads, which
//!   the asker verifies.
//!
//! A message is a 4-byte big-endian length and a DAG-CBOR body. The length is checked
//! against the protocol's limit before anything is allocated, and decoding errors are
//! `InvalidData` errors, so hostile bytes end one stream and nothing else.
//!
//! A block response is such a message (the head: each block's CID and length, the
//! missing CIDs, or a refusal) followed by the blocks' bytes, raw and in order: a
//! megabyte leaf goes from the store to the stream, and from the stream into its own
//! buffer, without being copied into and out of a CBOR body.

use std::io;
use std::marker::PhantomData;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const BLOCK_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/block/2");
/// The block protocol before "busy"; still answered.
pub const BLOCK_PROTOCOL_V1: StreamProtocol = StreamProtocol::new("/peerfs/block/1");
pub const HEAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/head/1");

/// Most CIDs one block request may name.
pub const MAX_WANT: usize = 64;
/// Block bytes one response carries at most; what does not fit is asked for again.
pub const RESPONSE_BUDGET: usize = 4 << 20;
/// The largest block we send or accept (Bitswap's limit too).
pub const MAX_BLOCK: usize = 2 << 20;
/// Most heads one head request may name.
pub const MAX_HEADS: usize = 256;

const MAX_BLOCK_REQUEST: usize = MAX_WANT * 80 + 64;
/// The head of a block response: up to `MAX_WANT` CIDs, each sent or missing.
const MAX_BLOCK_RESPONSE_HEAD: usize = MAX_WANT * 96 + 1024;
/// A response's block bytes, at most: the budget, overrun by the last block.
const MAX_BLOCK_RESPONSE_DATA: usize = RESPONSE_BUDGET + MAX_BLOCK;
const MAX_HEAD_REQUEST: usize = MAX_HEADS * 48 + 64;
/// Each head's fields (512 bytes), and the owner's signed profile it may carry.
const MAX_HEAD_RESPONSE: usize = MAX_HEADS * (512 + crate::profile::MAX_ENCODED) + 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    /// CIDs in their binary form.
    pub want: Vec<serde_bytes::ByteBuf>,
    /// Whose drive the blocks are of (a peer ID); absent means the answerer's own.
    pub owner: Option<serde_bytes::ByteBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockResponse {
    Blocks {
        /// (CID, bytes) for each block sent.
        blocks: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
        /// CIDs the sender does not have. CIDs in neither list did not fit.
        missing: Vec<serde_bytes::ByteBuf>,
    },
    /// The sender does not let us read.
    Refused { reason: String },
    /// The sender serves too many requests now; nothing was looked up.
    Busy,
}

/// What a block response says before its blocks' bytes.
#[derive(Debug, Serialize, Deserialize)]
enum BlockResponseHead {
    Blocks {
        /// (CID, length) of each block sent, in the order of the bytes that follow.
        blocks: Vec<(serde_bytes::ByteBuf, u32)>,
        missing: Vec<serde_bytes::ByteBuf>,
    },
    Refused {
        reason: String,
    },
    Busy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRequest {
    /// Peer IDs in their binary form; the answerer's own is allowed.
    pub peers: Vec<serde_bytes::ByteBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadResponse {
    /// Signed head envelopes, as `SignedHead::encoded`.
    pub heads: Vec<serde_bytes::ByteBuf>,
}

/// Request/response types and size limits of one protocol.
pub trait Messages: Send + 'static {
    type Request: Serialize + DeserializeOwned + Send;
    type Response: Serialize + DeserializeOwned + Send;
    const MAX_REQUEST: usize;
    const MAX_RESPONSE: usize;
}

pub struct HeadMessages;
impl Messages for HeadMessages {
    type Request = HeadRequest;
    type Response = HeadResponse;
    const MAX_REQUEST: usize = MAX_HEAD_REQUEST;
    const MAX_RESPONSE: usize = MAX_HEAD_RESPONSE;
}

/// A request-response codec for the messages `M`: length-prefixed DAG-CBOR.
pub struct Codec<M>(PhantomData<M>);

impl<M> Default for Codec<M> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<M> Clone for Codec<M> {
    fn clone(&self) -> Self {
        Codec(PhantomData)
    }
}

fn invalid(message: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Encodes one message as it goes on the wire.
pub fn encode<T: Serialize>(message: &T, limit: usize) -> io::Result<Vec<u8>> {
    // The body is written after room for its length, which is filled in after.
    let mut framed = vec![0u8; 4];
    serde_ipld_dagcbor::to_writer(&mut framed, message).map_err(invalid)?;
    let len = framed.len() - 4;
    if len > limit {
        return Err(invalid(format!(
            "message of {len} bytes is over the limit of {limit}"
        )));
    }
    framed[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(framed)
}

pub(crate) async fn read_message<T, R>(io: &mut R, limit: usize) -> io::Result<T>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(invalid(format!(
            "message of {len} bytes is over the limit of {limit}"
        )));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    serde_ipld_dagcbor::from_slice(&body).map_err(invalid)
}

/// Reads a block response: its head, then each block's bytes into a buffer of its own.
async fn read_block_response<R>(io: &mut R) -> io::Result<BlockResponse>
where
    R: AsyncRead + Unpin + Send,
{
    let (sizes, missing) = match read_message(io, MAX_BLOCK_RESPONSE_HEAD).await? {
        BlockResponseHead::Refused { reason } => return Ok(BlockResponse::Refused { reason }),
        BlockResponseHead::Busy => return Ok(BlockResponse::Busy),
        BlockResponseHead::Blocks { blocks, missing } => (blocks, missing),
    };
    if sizes.len() > MAX_WANT || missing.len() > MAX_WANT {
        return Err(invalid(format!(
            "a response of {} blocks and {} missing is over the limit of {MAX_WANT}",
            sizes.len(),
            missing.len()
        )));
    }
    let total: usize = sizes.iter().map(|(_, len)| *len as usize).sum();
    if let Some((_, len)) = sizes.iter().find(|(_, len)| *len as usize > MAX_BLOCK) {
        return Err(invalid(format!(
            "a block of {len} bytes is over the limit of {MAX_BLOCK}"
        )));
    }
    if total > MAX_BLOCK_RESPONSE_DATA {
        return Err(invalid(format!(
            "{total} bytes of blocks are over the limit of {MAX_BLOCK_RESPONSE_DATA}"
        )));
    }
    let mut blocks = Vec::with_capacity(sizes.len());
    for (cid, len) in sizes {
        let mut data = vec![0u8; len as usize];
        io.read_exact(&mut data).await?;
        blocks.push((cid, serde_bytes::ByteBuf::from(data)));
    }
    Ok(BlockResponse::Blocks { blocks, missing })
}

/// Writes a block response: its head, then the blocks' bytes as they are.
async fn write_block_response<W>(
    io: &mut W,
    protocol: &StreamProtocol,
    response: BlockResponse,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin + Send,
{
    let (head, data) = match response {
        BlockResponse::Refused { reason } => (BlockResponseHead::Refused { reason }, Vec::new()),
        // `/1` has no word for it: the stream ends unanswered.
        BlockResponse::Busy if *protocol == BLOCK_PROTOCOL_V1 => {
            return Err(io::Error::other("busy"))
        }
        BlockResponse::Busy => (BlockResponseHead::Busy, Vec::new()),
        BlockResponse::Blocks { blocks, missing } => {
            let (sizes, data): (Vec<_>, Vec<_>) = blocks
                .into_iter()
                .map(|(cid, bytes)| ((cid, bytes.len() as u32), bytes))
                .unzip();
            let head = BlockResponseHead::Blocks {
                blocks: sizes,
                missing,
            };
            (head, data)
        }
    };
    io.write_all(&encode(&head, MAX_BLOCK_RESPONSE_HEAD)?)
        .await?;
    for bytes in data {
        io.write_all(&bytes).await?;
    }
    io.close().await
}

async fn write_frame<W>(io: &mut W, framed: Vec<u8>) -> io::Result<()>
where
    W: AsyncWrite + Unpin + Send,
{
    io.write_all(&framed).await?;
    io.close().await
}

impl<M: Messages> libp2p::request_response::Codec for Codec<M> {
    type Protocol = StreamProtocol;
    type Request = M::Request;
    type Response = M::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<M::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, M::MAX_REQUEST).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<M::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, M::MAX_RESPONSE).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: M::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let framed = encode(&req, M::MAX_REQUEST);
        write_frame(io, framed?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: M::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let framed = encode(&res, M::MAX_RESPONSE);
        write_frame(io, framed?).await
    }
}

/// The `/peerfs/block/1` codec: DAG-CBOR requests, responses with raw block bytes.
#[derive(Clone, Default)]
pub struct BlockCodec;

impl libp2p::request_response::Codec for BlockCodec {
    type Protocol = StreamProtocol;
    type Request = BlockRequest;
    type Response = BlockResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlockRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, MAX_BLOCK_REQUEST).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<BlockResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_block_response(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlockRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let framed = encode(&req, MAX_BLOCK_REQUEST);
        write_frame(io, framed?).await
    }

    async fn write_response<T>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        res: BlockResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_block_response(io, protocol, res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::request_response::Codec as _;

    fn read_request(bytes: &[u8]) -> io::Result<BlockRequest> {
        block_on(BlockCodec.read_request(&BLOCK_PROTOCOL, &mut &bytes[..]))
    }

    #[test]
    fn a_request_survives_the_wire() {
        let req = BlockRequest {
            want: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])],
            owner: None,
        };
        let framed = encode(&req, MAX_BLOCK_REQUEST).unwrap();
        assert_eq!(read_request(&framed).unwrap(), req);
    }

    #[test]
    fn hostile_frames_are_errors() {
        // Oversized: refused from the length alone, before any allocation.
        let huge = (u32::MAX).to_be_bytes();
        assert_eq!(
            read_request(&huge).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Truncated body.
        let mut cut = 10u32.to_be_bytes().to_vec();
        cut.extend_from_slice(&[0xa1, 0x64]);
        assert_eq!(
            read_request(&cut).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        // Garbage body.
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend_from_slice(&[0xff, 0x00, 0x13]);
        assert_eq!(
            read_request(&junk).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    fn response_through_the_wire(res: BlockResponse) -> io::Result<BlockResponse> {
        let mut wire = Vec::new();
        block_on(BlockCodec.write_response(&BLOCK_PROTOCOL, &mut wire, res))?;
        block_on(BlockCodec.read_response(&BLOCK_PROTOCOL, &mut &wire[..]))
    }

    /// A response head, framed, followed by `data`.
    fn response_bytes(head: &BlockResponseHead, data: &[u8]) -> Vec<u8> {
        let mut wire = encode(head, MAX_BLOCK_RESPONSE_HEAD).unwrap();
        wire.extend_from_slice(data);
        wire
    }

    fn read_response(bytes: &[u8]) -> io::Result<BlockResponse> {
        block_on(BlockCodec.read_response(&BLOCK_PROTOCOL, &mut &bytes[..]))
    }

    fn buf(b: &[u8]) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(b.to_vec())
    }

    #[test]
    fn a_block_response_survives_the_wire() {
        let blocks = BlockResponse::Blocks {
            blocks: vec![
                (buf(b"cid-a"), buf(&[7u8; 70_000])),
                (buf(b"cid-b"), buf(b"")),
                (buf(b"cid-c"), buf(b"three")),
            ],
            missing: vec![buf(b"cid-d")],
        };
        assert_eq!(response_through_the_wire(blocks.clone()).unwrap(), blocks);
        let refused = BlockResponse::Refused {
            reason: "not a reader".into(),
        };
        assert_eq!(response_through_the_wire(refused.clone()).unwrap(), refused);
        assert_eq!(
            response_through_the_wire(BlockResponse::Busy).unwrap(),
            BlockResponse::Busy
        );
    }

    #[test]
    fn busy_on_the_old_protocol_ends_the_stream_unanswered() {
        let mut wire = Vec::new();
        let written =
            block_on(BlockCodec.write_response(&BLOCK_PROTOCOL_V1, &mut wire, BlockResponse::Busy));
        assert!(written.is_err() && wire.is_empty());
    }

    #[test]
    fn hostile_block_responses_are_errors() {
        let head = |blocks: Vec<(serde_bytes::ByteBuf, u32)>| BlockResponseHead::Blocks {
            blocks,
            missing: Vec::new(),
        };
        // Bytes cut short of the length the head announced.
        let cut = response_bytes(&head(vec![(buf(b"a"), 10)]), b"12345");
        assert_eq!(
            read_response(&cut).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        // A block over the limit, refused before anything is allocated for it.
        let big = response_bytes(&head(vec![(buf(b"a"), MAX_BLOCK as u32 + 1)]), b"");
        assert_eq!(
            read_response(&big).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Blocks that each fit but together do not.
        let many = vec![(buf(b"a"), MAX_BLOCK as u32); MAX_BLOCK_RESPONSE_DATA / MAX_BLOCK + 1];
        assert_eq!(
            read_response(&response_bytes(&head(many), b""))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        // More blocks than a request may ask for.
        let count = vec![(buf(b"a"), 0); MAX_WANT + 1];
        assert_eq!(
            read_response(&response_bytes(&head(count), b""))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
        // A head that is not a response at all.
        let junk = encode(&"hello", MAX_BLOCK_RESPONSE_HEAD).unwrap();
        assert_eq!(
            read_response(&junk).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
