//! Bitswap, the IPFS block exchange (`/ipfs/bitswap/1.2.0`, and 1.1.0 and 1.0.0 for
//! older peers), so that IPFS nodes can fetch from us and we from them. We serve what `access` lets
//! strangers read: a want for a block is answered when the block is a root the rule
//! allows, or is linked from a block this peer was sent (the gateway's rule along a
//! path, as Bitswap clients walk a DAG one block at a time).
//!
//! - `wire`: the protobuf message (prost), framing, limits.
//! - `ledger`: one peer's wants and grants, capped.
//! - `server`: streams accepted, messages read, answers looked up off the event loop
//!   and sent on a stream of our own, as the protocol has it.
//! - `client`: want-blocks sent for the fetch scheduler, and what comes back for them
//!   handed to the node's loop (Bitswap peers are sources of the same scheduler as
//!   peers of our protocol: `node::bitswap_asks`).
//!
//! The streams come from the swarm's `libp2p_stream` behaviour: nothing here runs on
//! the node's event loop.

mod client;
mod ledger;
mod server;
pub mod wire;

use std::time::Duration;

use libp2p::StreamProtocol;

pub use client::{Client, Heard};
pub use server::start;

/// A message is at most this long, either way (the spec's limit).
pub const MAX_MESSAGE: usize = 4 << 20;
/// Entries of a wantlist, and blocks or presences, in one message at most: a flood of
/// empty entries is refused before it is decoded.
pub const MAX_ENTRIES: usize = 4096;
/// Wants queued per peer at most; more are ignored until some are answered.
pub const MAX_WANTS: usize = 1024;
/// Links a peer was sent and may ask for next, at most (the oldest are forgotten): a
/// client walks a DAG a few levels at a time, and a 256 MiB file has ~1,000 leaves.
pub const MAX_GRANTS: usize = 65_536;
/// The blocks of one answer add up to this at most (a bigger block goes alone): Helia
/// refuses messages over 2 MiB by default.
const ANSWER_BUDGET: usize = (2 << 20) - (16 << 10);
/// A block we send is at most this long: it must fit a message.
const MAX_BLOCK_SENT: usize = MAX_MESSAGE - (16 << 10);
/// A want-have of a block this small is answered with the block (as boxo and Helia do).
const HAVE_AS_BLOCK: usize = 1024;
/// Wants looked up for one answer at most.
const ANSWER_WANTS: usize = 256;
/// Answers being looked up or written at once, over all peers.
const ANSWERS_AT_ONCE: usize = 16;
/// Answers of one peer being written at once: one slow to read holds up none of the
/// others, and one peer takes at most this share of `ANSWERS_AT_ONCE` (each answer
/// holds up to `ANSWER_BUDGET` bytes).
const ANSWERS_PER_PEER: usize = 4;
/// Bytes of incoming messages held at once, over all peers (in KiB).
const READ_BUDGET_KIB: u32 = 32 << 10;
/// Wants out to Bitswap peers at once, over all peers (the scheduler bounds each
/// peer's share); more are not sent, and fail as unsent.
const MAX_ASKED: usize = 8192;
/// Messages of blocks and DONT_HAVEs waiting for the node's loop; a reader waits
/// while they are this many (each is at most `MAX_MESSAGE`).
pub const HEARD_QUEUED: usize = 8;
/// Peers with a session at once; streams from more are refused.
const MAX_SESSIONS: usize = 256;
/// Streams one peer may have open towards us at once.
const STREAMS_PER_PEER: usize = 8;
/// A message's body must arrive within this once its length is read, and an answer
/// be written within it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A block of no drive that a reader waits for is looked up in the IPFS DHT (with
/// `ipfs_dht`) when the connected peers have not sent it within this, or all lack it
/// (Kubo waits a second, too).
pub const ROUTE_AFTER: Duration = Duration::from_secs(1);
/// A session with no message for this long ends, with its grants.
const IDLE: Duration = Duration::from_secs(300);

/// The versions we speak, newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V120,
    V110,
    V100,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V120, Version::V110, Version::V100];

    pub fn protocol(self) -> StreamProtocol {
        StreamProtocol::new(match self {
            Version::V120 => "/ipfs/bitswap/1.2.0",
            Version::V110 => "/ipfs/bitswap/1.1.0",
            Version::V100 => "/ipfs/bitswap/1.0.0",
        })
    }
}
