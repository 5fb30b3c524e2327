//! A raw libp2p client for the tests of hostile input: it writes requests byte for
//! byte as given, on any protocol, and reads whatever comes back.

use std::io;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol};

/// Writes requests byte for byte as given; reads whatever comes back.
#[derive(Clone, Default)]
pub struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut v = Vec::new();
        io.take(16 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

/// Sends each message on `protocol` to the daemon at `addr`; returns, per message, the
/// response bytes or the failure, all within `wait`.
pub fn send_all(
    addr: &Multiaddr,
    protocol: StreamProtocol,
    messages: Vec<Vec<u8>>,
    wait: Duration,
) -> Vec<Result<Vec<u8>, String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| {
                request_response::Behaviour::<Raw>::new(
                    [(protocol, ProtocolSupport::Outbound)],
                    request_response::Config::default().with_request_timeout(wait / 3),
                )
            })
            .unwrap()
            .build();
        let mut addr = addr.clone();
        let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.pop() else {
            panic!("no /p2p/ in {addr}")
        };
        swarm.add_peer_address(peer, addr);
        let mut pending = std::collections::HashMap::new();
        for (i, m) in messages.into_iter().enumerate() {
            pending.insert(swarm.behaviour_mut().send_request(&peer, m), i);
        }
        let mut results: Vec<Option<Result<Vec<u8>, String>>> = vec![None; pending.len()];
        let deadline = tokio::time::Instant::now() + wait;
        while results.iter().any(Option::is_none) {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .expect("the daemon answers or fails every message in time");
            if let SwarmEvent::Behaviour(e) = event {
                match e {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } => results[pending[&request_id]] = Some(Ok(response)),
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } => results[pending[&request_id]] = Some(Err(error.to_string())),
                    _ => {}
                }
            }
        }
        results.into_iter().map(Option::unwrap).collect()
    })
}

/// A length-prefixed message whose prefix says `len`, whatever `body` holds.
pub fn frame(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}
