//! Fetching over Bitswap, for the fetch scheduler: the node's loop says which CIDs to
//! want of which peer (want-block, with send-DONT_HAVE), and hears back, on one bounded
//! channel, the blocks and DONT_HAVEs that peer sent for them and the wants that could
//! not be sent. Blocks arrive on streams the peers open, which the server reads and
//! hands here (`received`): only what was asked of the peer that sends it is passed on
//! (unverified: the loop checks it off the loop, as it does our protocol's blocks);
//! the rest is dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use libp2p::PeerId;
use libp2p_stream::Control;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::wire::{self, Entry, Message, PresenceType, WantType, Wantlist};
use super::{Version, MAX_ASKED};
use crate::block::DAG_PB;

/// What the client tells the node's loop.
#[derive(Debug)]
pub enum Heard {
    /// `peer` sent blocks (not verified yet) and DONT_HAVEs for what it was asked.
    Answer {
        peer: PeerId,
        blocks: Vec<(Cid, Vec<u8>)>,
        dont_have: Vec<Cid>,
    },
    /// The wants for `cids` could not be sent to `peer`.
    Unsent { peer: PeerId, cids: Vec<Cid> },
}

/// A want list must be written within this.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Cloneable; shared with the server, which hands it what arrives, and the node.
#[derive(Clone)]
pub struct Client {
    control: Control,
    /// What each peer was asked for and has not answered: what is passed on.
    asked: Arc<Mutex<HashSet<(PeerId, Cid)>>>,
    heard: mpsc::Sender<Heard>,
}

impl Client {
    /// A client that opens streams with `control` and tells `heard` what it heard.
    pub fn new(control: Control, heard: mpsc::Sender<Heard>) -> Client {
        Client {
            control,
            asked: Arc::default(),
            heard,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(PeerId, Cid)>> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks `peer` for `cids` (want-block, send-DONT_HAVE) in one message, in the
    /// background: wants past `MAX_ASKED` out at once are not sent (and reported
    /// unsent), nor is a message that cannot be written.
    pub fn want(&self, peer: PeerId, cids: Vec<Cid>) {
        let (ok, over): (Vec<Cid>, Vec<Cid>) = {
            let mut asked = self.lock();
            cids.into_iter().partition(|c| {
                asked.len() < MAX_ASKED && {
                    asked.insert((peer, *c));
                    true
                }
            })
        };
        let this = self.clone();
        tokio::spawn(async move {
            let sent = !ok.is_empty() && this.send(peer, &message(&ok, false)).await;
            let unsent: Vec<Cid> = if sent { over } else { [ok, over].concat() };
            if !unsent.is_empty() {
                this.forget(peer, &unsent);
                let _ = this.heard.send(Heard::Unsent { peer, cids: unsent }).await;
            }
        });
    }

    /// Tells `peer` to stop sending `cids` (best effort, in the background).
    pub fn cancel(&self, peer: PeerId, cids: Vec<Cid>) {
        let this = self.clone();
        tokio::spawn(async move { this.send(peer, &message(&cids, true)).await });
    }

    /// What `peer` sends for `cids` is no longer passed on.
    pub fn forget(&self, peer: PeerId, cids: &[Cid]) {
        let mut asked = self.lock();
        for c in cids {
            asked.remove(&(peer, *c));
        }
    }

    /// Nothing `peer` sends is passed on (it left).
    pub fn forget_peer(&self, peer: PeerId) {
        self.lock().retain(|(p, _)| *p != peer);
    }

    /// Sends one message on a stream of its own; whether it went.
    async fn send(&self, peer: PeerId, message: &Message) -> bool {
        let mut control = self.control.clone();
        let sent = timeout(SEND_TIMEOUT, async {
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

    /// A message arrived from `peer`: its blocks and DONT_HAVEs for what it was asked
    /// go to the loop (waiting while the loop is behind).
    pub async fn received(&self, peer: PeerId, message: &Message) {
        if message.payload.is_empty()
            && message.blocks.is_empty()
            && message.block_presences.is_empty()
        {
            return;
        }
        let (blocks, dont_have) = {
            let asked = self.lock();
            if asked.is_empty() {
                return;
            }
            let wanted = |cid: &Cid| asked.contains(&(peer, *cid));
            let mut blocks = Vec::new();
            for b in &message.payload {
                if let Some(cid) = cid_of(&b.prefix, &b.data).filter(wanted) {
                    blocks.push((cid, b.data.clone()));
                }
            }
            for data in &message.blocks {
                let cid = Cid::new_v0(crate::block::sha256_multihash(data)).ok();
                if let Some(cid) = cid.filter(wanted) {
                    blocks.push((cid, data.clone()));
                }
            }
            let dont_have: Vec<Cid> = message
                .block_presences
                .iter()
                .filter(|p| p.r#type == PresenceType::DontHave as i32)
                .filter_map(|p| Cid::try_from(p.cid.as_slice()).ok())
                .filter(wanted)
                .collect();
            (blocks, dont_have)
        };
        if blocks.is_empty() && dont_have.is_empty() {
            return;
        }
        let heard = Heard::Answer {
            peer,
            blocks,
            dont_have,
        };
        let _ = self.heard.send(heard).await;
    }
}

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

/// Want-blocks (with send-DONT_HAVE) for `cids`, or their cancels.
fn message(cids: &[Cid], cancel: bool) -> Message {
    let entries = cids
        .iter()
        .map(|cid| Entry {
            block: cid.to_bytes(),
            priority: 1,
            cancel,
            want_type: WantType::Block as i32,
            send_dont_have: true,
        })
        .collect();
    Message {
        wantlist: Some(Wantlist {
            entries,
            full: false,
        }),
        ..Message::default()
    }
}
