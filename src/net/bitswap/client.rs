//! Fetching over Bitswap: a want-block (with send-DONT_HAVE) to every connected peer
//! that speaks it; the first block that hashes to the CID wins, and a DONT_HAVE from
//! every peer asked ends the wait early. With a `Route` (the IPFS DHT), the providers
//! it names are asked too, once the connected peers have said no or a moment has
//! passed without the block (as IPFS nodes wait before they search). Blocks arrive on streams the peers open, which
//! the server reads and hands here (`received`); one that nobody waits for, or that
//! does not hash to its CID, is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use libp2p::PeerId;
use libp2p_stream::Control;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tracing::debug;

use super::wire::{self, Entry, Message, PresenceType, WantType, Wantlist};
use super::{Version, MAX_FETCHING, ROUTE_AFTER};
use crate::block::{Block, DAG_PB};

/// What a peer said about a wanted block.
enum Heard {
    Block(Vec<u8>),
    DontHave,
}

/// Why a Bitswap fetch gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no connected peer speaks Bitswap")]
    NoPeers,
    #[error("every Bitswap peer asked ({0}) said it does not have it")]
    NobodyHas(usize),
    #[error("no Bitswap peer delivered it in time ({0} asked)")]
    TimedOut(usize),
    #[error("too many Bitswap fetches at once")]
    Busy,
}

/// Starts a provider lookup for the CID being fetched: the providers come on the
/// receiver once connected, and it closes when the lookup is over.
pub type Route = Box<dyn FnOnce() -> mpsc::Receiver<PeerId> + Send>;

/// Peers from a lookup, if one runs; never, if none does.
async fn next_provider(lookup: &mut Option<mpsc::Receiver<PeerId>>) -> Option<PeerId> {
    match lookup {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Cloneable; shared with the server, which hands it what arrives.
#[derive(Clone)]
pub struct Fetcher {
    control: Control,
    waiting: Arc<Mutex<HashMap<Cid, mpsc::Sender<Heard>>>>,
}

/// A wait registered for a CID, removed when dropped.
struct Registered<'a> {
    fetcher: &'a Fetcher,
    cid: Cid,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.fetcher.lock().remove(&self.cid);
    }
}

impl Fetcher {
    pub fn new(control: Control) -> Fetcher {
        Fetcher {
            control,
            waiting: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Cid, mpsc::Sender<Heard>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches `cid` from `peers` (the connected ones), and from the providers `route`
    /// finds, within `limit`, verified.
    pub async fn fetch(
        &self,
        cid: Cid,
        peers: &[PeerId],
        limit: Duration,
        mut route: Option<Route>,
    ) -> Result<Block, FetchError> {
        let deadline = Instant::now() + limit;
        let route_at = Instant::now() + ROUTE_AFTER;
        let (tx, mut rx) =
            mpsc::channel(peers.len().max(1) + crate::net::ipfs_dht::PROVIDERS_DIALLED);
        {
            let mut waiting = self.lock();
            if waiting.len() >= MAX_FETCHING || waiting.contains_key(&cid) {
                return Err(FetchError::Busy);
            }
            waiting.insert(cid, tx);
        }
        let _registered = Registered { fetcher: self, cid };
        let want = want_message(&cid, false);
        let mut asked = Vec::new();
        for peer in peers {
            if self.send(*peer, &want, Duration::from_secs(2)).await {
                asked.push(*peer);
            }
        }
        // With no Bitswap peer connected, the DHT is asked after the same moment: our
        // own protocol, asked beside this, often has the block by then.
        if asked.is_empty() && route.is_none() {
            return Err(FetchError::NoPeers);
        }
        let mut lookup = None;
        let mut dont_have = 0;
        let result = loop {
            tokio::select! {
                heard = rx.recv() => match heard {
                    Some(Heard::Block(data)) => match Block::verified(cid, data) {
                        Ok(b) => break Ok(b),
                        Err(e) => debug!("bitswap: {e}"),
                    },
                    Some(Heard::DontHave) => dont_have += 1,
                    None => break Err(FetchError::TimedOut(asked.len())),
                },
                found = next_provider(&mut lookup) => match found {
                    Some(peer) if !asked.contains(&peer) && asked.len() < MAX_ASKED => {
                        if self.send(peer, &want, Duration::from_secs(2)).await {
                            asked.push(peer);
                        }
                    }
                    Some(_) => {}
                    None => lookup = None,
                },
                _ = tokio::time::sleep_until(route_at), if route.is_some() => {
                    lookup = route.take().map(|start| start());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    break Err(FetchError::TimedOut(asked.len()));
                }
            }
            // Everyone asked said no: ask the DHT, or give up once it has no more.
            if dont_have >= asked.len() && (!asked.is_empty() || route.is_none()) {
                if let Some(start) = route.take() {
                    lookup = Some(start());
                } else if lookup.is_none() {
                    break Err(if asked.is_empty() {
                        FetchError::NoPeers
                    } else {
                        FetchError::NobodyHas(asked.len())
                    });
                }
            }
        };
        // The others stop looking for it.
        let cancel = want_message(&cid, true);
        for peer in asked {
            let this = self.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { this.send(peer, &cancel, Duration::from_secs(2)).await });
        }
        result
    }

    /// Sends one message on a stream of its own; whether it went.
    async fn send(&self, peer: PeerId, message: &Message, limit: Duration) -> bool {
        let mut control = self.control.clone();
        let sent = timeout(limit, async {
            let mut s = control
                .open_stream(peer, Version::V120.protocol())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            wire::write(&mut s, message).await?;
            libp2p::futures::AsyncWriteExt::close(&mut s).await
        })
        .await;
        matches!(sent, Ok(Ok(())))
    }

    /// A message arrived from a peer: blocks and DONT_HAVEs for what we wait for.
    pub fn received(&self, message: &Message) {
        if message.payload.is_empty()
            && message.blocks.is_empty()
            && message.block_presences.is_empty()
        {
            return;
        }
        let waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        let hand = |cid: Cid, heard: Heard| {
            if let Some(tx) = waiting.get(&cid) {
                let _ = tx.try_send(heard);
            }
        };
        for b in &message.payload {
            if let Some(cid) = cid_of(&b.prefix, &b.data) {
                hand(cid, Heard::Block(b.data.clone()));
            }
        }
        for data in &message.blocks {
            let cid = Cid::new_v0(crate::block::sha256_multihash(data)).ok();
            if let Some(cid) = cid {
                hand(cid, Heard::Block(data.clone()));
            }
        }
        for p in &message.block_presences {
            if p.r#type == PresenceType::DontHave as i32 {
                if let Ok(cid) = Cid::try_from(p.cid.as_slice()) {
                    hand(cid, Heard::DontHave);
                }
            }
        }
    }
}

/// Peers one fetch asks at most (connected ones and providers found).
const MAX_ASKED: usize = 256;

/// The CID a 1.1.0 block's prefix and bytes make (sha2-256 only, the one we verify).
fn cid_of(prefix: &[u8], data: &[u8]) -> Option<Cid> {
    let mut p = prefix;
    let mut next = || prost::encoding::decode_varint(&mut p).ok();
    let (version, codec, code, len) = (next()?, next()?, next()?, next()?);
    if code != crate::block::SHA2_256 || len != 32 {
        return None;
    }
    let mh = crate::block::sha256_multihash(data);
    match version {
        0 if codec == DAG_PB => Cid::new_v0(mh).ok(),
        1 => Some(Cid::new_v1(codec, mh)),
        _ => None,
    }
}

fn want_message(cid: &Cid, cancel: bool) -> Message {
    Message {
        wantlist: Some(Wantlist {
            entries: vec![Entry {
                block: cid.to_bytes(),
                priority: 1,
                cancel,
                want_type: WantType::Block as i32,
                send_dont_have: true,
            }],
            full: false,
        }),
        ..Message::default()
    }
}
