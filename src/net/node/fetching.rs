//! The loop's side of fetching: carries out what the `fetch` scheduler decides (send
//! these requests, over our protocol or Bitswap; deliver these blocks; fail these
//! reads), checks answers off the loop, and asks the DHT for holders when a drive's
//! owner cannot be reached (the IPFS DHT for providers of a block of no drive).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use cid::Cid;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tracing::{debug, info, warn};

use super::following::holders_key;
use super::{Ask, Checked, Node, HOLDER_LOOKUP_EVERY};
use crate::block::Block;
use crate::net::bitswap::ROUTE_AFTER;
use crate::net::fetch::{Action, Answer, Claim, Sent, Way};
use crate::net::ipfs_dht::PROVIDERS_DIALLED;
use crate::net::protocol::{BlockRequest, BlockResponse};
use crate::net::BlockReply;

impl Node {
    pub(super) fn want(
        &mut self,
        cid: Cid,
        owner: Option<PeerId>,
        reply: Option<BlockReply>,
        claim: Option<Claim>,
    ) {
        let actions = self
            .fetch
            .want_for(cid, owner, reply, claim, Instant::now());
        self.act(actions, HashMap::new());
    }

    /// Carries out what the fetch scheduler decided; `arrived` holds the blocks it
    /// may deliver.
    pub(super) fn act(
        &mut self,
        actions: Vec<Action<BlockReply>>,
        mut arrived: HashMap<Cid, Block>,
    ) {
        let now = Instant::now();
        let mut bitswap = Vec::new();
        for action in actions {
            match action {
                Action::Request {
                    peer,
                    cids,
                    way: Way::Bitswap,
                    ..
                } => bitswap.push((peer, cids)),
                Action::Request {
                    peer,
                    owner,
                    cids,
                    way: Way::Ours,
                } => {
                    let request = BlockRequest {
                        want: cids.iter().map(|c| ByteBuf::from(c.to_bytes())).collect(),
                        owner: owner.map(|o| ByteBuf::from(o.to_bytes())),
                    };
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .blocks
                        .send_request(&peer, request);
                    self.fetch
                        .sent(Ask::Ours(id), Sent { peer, owner, cids }, now);
                }
                Action::Deliver { cid, mut waiters } => {
                    let Some(block) = arrived.remove(&cid) else {
                        continue;
                    };
                    let Some(last) = waiters.pop() else {
                        // A prefetch: its reader takes it from memory, not the store.
                        self.prefetched.insert(cid, block.into_data());
                        continue;
                    };
                    for w in waiters {
                        let _ = w.send(Ok(block.data().to_vec()));
                    }
                    let _ = last.send(Ok(block.into_data()));
                }
                Action::Fail {
                    cid,
                    waiters,
                    why,
                    owner,
                    asked,
                    repeat,
                } => {
                    debug!("giving up on {cid}: {why}");
                    if !waiters.is_empty() && !repeat {
                        self.log_failed_read(cid, why, owner, &asked);
                    }
                    for w in waiters {
                        let _ = w.send(Err(why));
                    }
                }
            }
        }
        if !bitswap.is_empty() {
            self.ask_bitswap(bitswap, now);
        }
    }

    /// Takes the blocks in a response that match what we asked for. Hashing a
    /// megabyte takes a while: the blocks are checked off the event loop, then settled.
    pub(super) fn received(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        response: BlockResponse,
    ) {
        let id = Ask::Ours(id);
        let bytes = match &response {
            BlockResponse::Blocks { blocks, .. } => {
                blocks.iter().map(|(_, b)| b.len() as u64).sum()
            }
            _ => 0,
        };
        let Some(sent) = self.fetch.answered(id, bytes, Instant::now()) else {
            return;
        };
        self.seen(peer);
        let (blocks, missing) = match response {
            BlockResponse::Refused { reason } => {
                info!("{peer} refused blocks: {reason}");
                self.fetch.refused(id, &sent, Instant::now());
                self.dispatch();
                return;
            }
            BlockResponse::Busy => {
                debug!("{peer} is busy; asking elsewhere");
                self.fetch.busy(id, &sent, Instant::now());
                self.dispatch();
                return;
            }
            BlockResponse::Blocks { blocks, missing } => (blocks, missing),
        };
        let asked_set: HashSet<Cid> = sent.cids.iter().copied().collect();
        let mut arrived = Vec::with_capacity(blocks.len());
        for (cid, data) in blocks {
            match Cid::try_from(cid.as_slice())
                .ok()
                .filter(|c| asked_set.contains(c))
            {
                Some(cid) => arrived.push((cid, data.into_vec())),
                None => self.bad_block(peer, "a block we did not ask for"),
            }
        }
        let missing = missing
            .iter()
            .filter_map(|c| Cid::try_from(c.as_slice()).ok())
            .filter(|c| asked_set.contains(c))
            .collect();
        self.check(peer, id, sent, arrived, missing);
    }

    /// Hashes the blocks `peer` sent for request `id` off the loop, keeps the good ones
    /// as cache, and hands them to `settle`.
    pub(super) fn check(
        &mut self,
        peer: PeerId,
        id: Ask,
        sent: Sent,
        arrived: Vec<(Cid, Vec<u8>)>,
        missing: Vec<Cid>,
    ) {
        let checked = self.checked.clone();
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut blocks = Vec::with_capacity(arrived.len());
            let mut bad = Vec::new();
            for (cid, data) in arrived {
                match Block::verified(cid, data) {
                    Ok(b) => blocks.push(b),
                    Err(e) => bad.push((cid, e.to_string())),
                }
            }
            // Kept (as evictable cache) before anyone is answered, so an asker that
            // looks in the store after this finds it there.
            if let Err(e) = store.put_cached(&blocks, sent.owner) {
                warn!("cannot keep {} fetched blocks: {e}", blocks.len());
            }
            let _ = checked.blocking_send(Checked {
                peer,
                id,
                sent,
                blocks,
                bad,
                missing,
            });
        });
    }

    /// Delivers the verified blocks of a response, and asks elsewhere for the rest.
    pub(super) fn settle(&mut self, c: Checked) {
        let Checked {
            peer,
            id,
            sent,
            blocks,
            bad,
            missing,
        } = c;
        for (_, e) in &bad {
            self.bad_block(peer, e);
        }
        if let Some(s) = self.stats_of(peer) {
            s.blocks_fetched += blocks.len() as u64;
        }
        let bitswap = matches!(id, Ask::Bitswap(_));
        for b in &blocks {
            if let Some(t) = self.fetch.transfer_of(b.cid()) {
                self.transfer_sources
                    .add(t, peer, b.data().len() as u64, bitswap);
            }
        }
        let delivered: Vec<Cid> = blocks.iter().map(|b| *b.cid()).collect();
        if self.asks.len() > 0 {
            self.bitswap_arrived(&delivered, peer);
        }
        let answer = Answer {
            delivered,
            bad: bad.into_iter().map(|(c, _)| c).collect(),
            missing,
        };
        let arrived = blocks.into_iter().map(|b| (*b.cid(), b)).collect();
        let actions = self.fetch.settle(id, &sent, answer, Instant::now());
        self.act(actions, arrived);
        self.dispatch();
    }

    fn bad_block(&mut self, peer: PeerId, what: &str) {
        warn!("{peer} sent a bad block ({what}); asking elsewhere");
        if let Some(s) = self.stats_of(peer) {
            s.bad_blocks += 1;
        }
    }

    /// Sends requests for every want that has no request out.
    pub(super) fn dispatch(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let actions = self.fetch.dispatch(&connected, Instant::now());
        self.act(actions, HashMap::new());
    }

    /// Asks the DHT who holds the blocks of owners whose wants have no source left: a
    /// waiting reader's owner is offline and no connected peer has the block.
    pub(super) fn find_holders(&mut self, now: Instant, connected: &[PeerId]) {
        let owners = self.fetch.stranded_owners(connected, now);
        for owner in owners {
            let recent = self
                .holder_lookups
                .get(&owner)
                .is_some_and(|t| now.duration_since(*t) < HOLDER_LOOKUP_EVERY);
            if !recent {
                debug!("asking the DHT who holds {owner}'s blocks");
                self.holder_lookups.insert(owner, now);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(holders_key(&owner));
            }
        }
    }

    /// Asks the IPFS DHT (with `ipfs_dht`) who provides the blocks of no drive a reader
    /// has waited for a while or no connected peer has; the providers it finds are
    /// dialled, and once connected are sources like any peer. A lookup ends when its
    /// block is no longer wanted.
    pub(super) fn find_providers_of_waiting(&mut self, now: Instant, connected: &[PeerId]) {
        if !self.config.ipfs_dht {
            return;
        }
        let fetch = &self.fetch;
        self.provider_lookups.retain(|cid, found| {
            while found.try_recv().is_ok() {}
            fetch.is_wanted(cid)
        });
        for cid in self.fetch.unowned_waiting(connected, now, ROUTE_AFTER) {
            if !self.provider_lookups.contains_key(&cid) {
                debug!("asking the IPFS DHT who provides {cid}");
                let (found, rx) = tokio::sync::mpsc::channel(PROVIDERS_DIALLED);
                self.find_providers(cid, found);
                self.provider_lookups.insert(cid, rx);
            }
        }
    }

    /// Connects to a holder the daemon knows of (a mirror of a drive whose owner is
    /// away), at `addrs` and those the behaviours know.
    pub(super) fn dial_holder(&mut self, peer: PeerId, addrs: Vec<libp2p::Multiaddr>) {
        if peer == self.me || self.swarm.is_connected(&peer) {
            return;
        }
        debug!("dialling {peer}, a mirror");
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!("dialling mirror {peer}: {e}");
        }
    }

    /// Connects to holders the DHT named; wants go to them once connected. Dialled at
    /// once, while the lookup still knows their addresses.
    pub(super) fn dial_holders(&mut self, holders: HashSet<PeerId>) {
        for peer in holders {
            if peer == self.me || self.swarm.is_connected(&peer) {
                continue;
            }
            debug!("dialling {peer}, a holder found in the DHT");
            // With no addresses given, the swarm takes them from the behaviours.
            if let Err(e) = self.swarm.dial(DialOpts::peer_id(peer).build()) {
                debug!("dialling holder {peer}: {e}");
            }
        }
    }
}
