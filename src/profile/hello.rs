//! `/peerfs/hello/1.0.0`: two peers introduce themselves on connect. The one that
//! opens the stream writes its HELLO, the other answers with its own; one message each
//! way, length-prefixed DAG-CBOR under `MAX_HELLO` (see `net::protocol`).
//!
//! A HELLO carries the sender's signed profile, what it offers others (capabilities),
//! and, when it shares them (`share_following`), the peers it follows. What a peer
//! sends is bounded here when read: a profile not signed by the sender is dropped,
//! lists are cut to their caps, and entries out of bounds are left out.

use std::io;

use libp2p::futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};

use super::{check_name, SignedProfile};
use crate::net::protocol::{encode, read_message};

pub const HELLO_PROTOCOL: StreamProtocol = StreamProtocol::new("/peerfs/hello/1.0.0");
/// Followed peers one HELLO lists, at most.
pub const MAX_FOLLOWING: usize = 200;
/// Addresses per listed peer, at most, and their length.
pub const MAX_ADDRS: usize = 4;
const MAX_ADDR_LEN: usize = 256;
/// Capabilities, at most, and their length.
const MAX_CAPABILITIES: usize = 16;
const MAX_CAPABILITY_LEN: usize = 32;
/// A HELLO's bytes at most: a profile and `MAX_FOLLOWING` entries of a peer ID, a name
/// and `MAX_ADDRS` addresses each.
pub const MAX_HELLO: usize = 256 * 1024;

/// What this node offers others, as its HELLO names it.
pub mod capability {
    /// It relays for others (`relay_server` on, or `auto` and publicly reachable).
    pub const RELAY: &str = "relay";
    /// It passes on the blocks of others' open drives it holds (they are open to all).
    pub const HOLDER: &str = "holder";
    /// It takes items into its inbox (`/peerfs/offer/1.0.0`).
    pub const INBOX: &str = "inbox";
    /// It keeps followed drives in full (`peerfs mirror add`).
    pub const MIRROR: &str = "mirror";
    /// It answers searches of its drive (`peerfs find --remote`).
    pub const FIND: &str = "find";
    /// It serves IPFS's Bitswap.
    pub const BITSWAP: &str = "bitswap";
    /// It runs an HTTP gateway.
    pub const GATEWAY: &str = "gateway";
}

/// The wire form.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Hello {
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<u8>>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub following: Vec<Known>,
}

/// A peer the sender follows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Known {
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// Its profile name, as the sender knows it.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// A HELLO as read from `sender`, checked and bounded.
#[derive(Clone, Debug, Default)]
pub struct Heard {
    pub profile: Option<SignedProfile>,
    pub capabilities: Vec<String>,
    pub following: Vec<Friend>,
}

/// A peer the sender said it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Friend {
    pub peer: PeerId,
    pub name: Option<String>,
    pub addrs: Vec<String>,
}

impl Hello {
    /// Keeps what is within bounds and signed by `sender`.
    pub fn check(self, sender: PeerId) -> Heard {
        let profile = self
            .profile
            .and_then(|b| SignedProfile::verify(&b).ok())
            .filter(|p| p.profile().peer == sender);
        let mut capabilities: Vec<String> = self
            .capabilities
            .into_iter()
            .filter(|c| {
                !c.is_empty()
                    && c.len() <= MAX_CAPABILITY_LEN
                    && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .take(MAX_CAPABILITIES)
            .collect();
        capabilities.sort();
        capabilities.dedup();
        let following = self
            .following
            .into_iter()
            .take(MAX_FOLLOWING)
            .filter_map(|k| {
                let peer = PeerId::from_bytes(&k.peer).ok()?;
                Some(Friend {
                    peer,
                    name: k.name.filter(|n| !n.is_empty() && check_name(n).is_ok()),
                    addrs: k
                        .addrs
                        .into_iter()
                        .filter(|a| a.len() <= MAX_ADDR_LEN)
                        .take(MAX_ADDRS)
                        .collect(),
                })
            })
            .collect();
        Heard {
            profile,
            capabilities,
            following,
        }
    }
}

/// Opens the exchange: writes `mine`, reads the other's.
pub async fn ask<S>(io: &mut S, mine: &Hello) -> io::Result<Hello>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    io.write_all(&encode(mine, MAX_HELLO)?).await?;
    io.flush().await?;
    read_message(io, MAX_HELLO).await
}

/// Answers an exchange: reads the other's HELLO, writes `mine`.
pub async fn answer<S>(io: &mut S, mine: &Hello) -> io::Result<Hello>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let theirs = read_message(io, MAX_HELLO).await?;
    io.write_all(&encode(mine, MAX_HELLO)?).await?;
    io.flush().await?;
    io.close().await?;
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;
    use libp2p_identity::Keypair;

    #[test]
    fn what_a_peer_says_is_bounded_and_its_own() {
        let key = Keypair::generate_ed25519();
        let sender = key.public().to_peer_id();
        let profile = Profile {
            peer: sender,
            seq: 1,
            time_ms: 1,
            name: "Alice".into(),
            about: String::new(),
            avatar: None,
        }
        .sign(&key)
        .unwrap();
        let known = |name: &str| Known {
            peer: PeerId::random().to_bytes(),
            name: Some(name.into()),
            addrs: vec!["/ip4/1.2.3.4/tcp/1".into(); 9],
        };
        let hello = Hello {
            profile: Some(profile.encoded().to_vec()),
            capabilities: vec!["relay".into(), "x".repeat(100), "bad cap".into()],
            following: (0..500)
                .map(|i| known(if i == 0 { "a\u{1}" } else { "Dan" }))
                .collect(),
        };
        let heard = hello.clone().check(sender);
        assert_eq!(heard.profile.as_ref(), Some(&profile));
        assert_eq!(heard.capabilities, vec!["relay".to_string()]);
        assert_eq!(heard.following.len(), MAX_FOLLOWING);
        assert_eq!(heard.following[0].name, None);
        assert_eq!(heard.following[1].addrs.len(), MAX_ADDRS);
        // Alice's profile passed on by someone else is not theirs.
        assert!(hello.check(PeerId::random()).profile.is_none());
    }

    #[test]
    fn an_oversize_hello_is_refused_before_it_is_read() {
        let mut framed = ((MAX_HELLO + 1) as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&[0; 64]);
        let mut io = libp2p::futures::io::Cursor::new(framed);
        let got = libp2p::futures::executor::block_on(read_message::<Hello, _>(&mut io, MAX_HELLO));
        assert!(got.is_err());
    }
}
