//! The requests of one dispatch: which CIDs go to which source, batched into
//! requests as each way carries them (leaves one a request, nodes many), and what they
//! add to each source's load while the dispatch is planned.

use std::collections::HashMap;

use cid::Cid;
use libp2p::PeerId;

use super::sources::{LEAF_GUESS, NODE_GUESS};
use super::Action;
use crate::block::RAW;
use crate::net::protocol::MAX_WANT;

/// Leaves are large: one per request, so several stream in parallel.
const LEAVES_PER_REQUEST: usize = 1;
/// Nodes in one Bitswap request at most: with at most 48 requests out to a peer, it
/// holds at most 768 of our wants (ours keep 1,024 a peer; others have limits too).
const BITSWAP_NODES_PER_REQUEST: usize = 16;

/// How a source is asked for blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Way {
    /// Our protocol (`/peerfs/blocks`).
    Ours,
    /// Bitswap (an IPFS node, or any peer that speaks it and not ours): for blocks of
    /// no drive only.
    Bitswap,
}

impl Way {
    /// Nodes one request carries at most.
    pub(super) fn nodes_per_request(self) -> usize {
        match self {
            Way::Ours => MAX_WANT,
            Way::Bitswap => BITSWAP_NODES_PER_REQUEST,
        }
    }
}

/// A block's guessed size, before it comes.
pub(super) fn guess(cid: &Cid) -> u64 {
    if cid.codec() == RAW {
        LEAF_GUESS
    } else {
        NODE_GUESS
    }
}

/// The requests of one dispatch, and what they add to each source's load.
#[derive(Default)]
pub(super) struct Round {
    batches: HashMap<(PeerId, Option<PeerId>, Way), Vec<Cid>>,
    /// Per peer: bytes and requests added in this round.
    added: HashMap<PeerId, (u64, usize)>,
}

impl Round {
    pub(super) fn added(&self, peer: &PeerId) -> (u64, usize) {
        self.added.get(peer).copied().unwrap_or_default()
    }

    /// The requests the round adds up to.
    pub(super) fn into_requests<W>(self) -> Vec<Action<W>> {
        requests(self.batches)
    }

    pub(super) fn assign(&mut self, peer: PeerId, owner: Option<PeerId>, way: Way, cid: Cid) {
        let batch = self.batches.entry((peer, owner, way)).or_default();
        let nodes = batch.iter().filter(|c| c.codec() != RAW).count();
        // Leaves go one per request; nodes share one per `nodes_per_request`.
        let new_request = cid.codec() == RAW || nodes % way.nodes_per_request() == 0;
        batch.push(cid);
        let added = self.added.entry(peer).or_default();
        added.0 += guess(&cid);
        added.1 += usize::from(new_request);
    }
}

/// Requests for batches of CIDs: raw leaves one per request, nodes up to the way's
/// `nodes_per_request`.
fn requests<W>(batches: HashMap<(PeerId, Option<PeerId>, Way), Vec<Cid>>) -> Vec<Action<W>> {
    let mut out = Vec::new();
    for ((peer, owner, way), cids) in batches {
        let (leaves, nodes): (Vec<Cid>, Vec<Cid>) =
            cids.into_iter().partition(|c| c.codec() == RAW);
        for group in leaves
            .chunks(LEAVES_PER_REQUEST)
            .chain(nodes.chunks(way.nodes_per_request()))
        {
            out.push(Action::Request {
                peer,
                owner,
                cids: group.to_vec(),
                way,
            });
        }
    }
    out
}
