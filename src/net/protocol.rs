//! Our own libp2p protocols and their wire format.
//!
//! - `/peerfs/block/1`: "send me these blocks" → the blocks I have, the CIDs I lack, or
//!   a refusal. The asker checks every block against the CID it asked for.
//! - `/peerfs/head/1`: "the newest heads you know for these peers" → signed heads, which
//!   the asker verifies.
//!
//! A message is a 4-byte big-endian length and a DAG-CBOR body. The length is checked
//! against the protocol's limit before anything is allocated, and decoding errors are
//! `InvalidData` errors, so hostile bytes end one stream and nothing else.

use std::io;
use std::marker::PhantomData;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const BLOCK_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/block/1");
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
const MAX_BLOCK_RESPONSE: usize = RESPONSE_BUDGET + MAX_BLOCK + MAX_WANT * 96 + 1024;
const MAX_HEAD_REQUEST: usize = MAX_HEADS * 48 + 64;
const MAX_HEAD_RESPONSE: usize = MAX_HEADS * 512 + 64;

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

pub struct BlockMessages;
impl Messages for BlockMessages {
    type Request = BlockRequest;
    type Response = BlockResponse;
    const MAX_REQUEST: usize = MAX_BLOCK_REQUEST;
    const MAX_RESPONSE: usize = MAX_BLOCK_RESPONSE;
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
    let body = serde_ipld_dagcbor::to_vec(message).map_err(invalid)?;
    if body.len() > limit {
        return Err(invalid(format!(
            "message of {} bytes is over the limit of {limit}",
            body.len()
        )));
    }
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

async fn read_message<T, R>(io: &mut R, limit: usize) -> io::Result<T>
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

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::request_response::Codec as _;

    fn read_request(bytes: &[u8]) -> io::Result<BlockRequest> {
        let mut codec = Codec::<BlockMessages>::default();
        block_on(codec.read_request(&BLOCK_PROTOCOL, &mut &bytes[..]))
    }

    #[test]
    fn a_request_survives_the_wire() {
        let req = BlockRequest {
            want: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3])],
            owner: None,
        };
        let framed = encode(&req, BlockMessages::MAX_REQUEST).unwrap();
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
}
