//! The IPFS DHT, opt-in (config `ipfs_dht`): content routing as IPFS nodes do it. Two
//! Kademlias beside our own `/peerfs/kad/1.0.0`: the public one on `/ipfs/kad/1.0.0`,
//! whose routing table takes only public addresses, and the LAN one on
//! `/ipfs/lan/kad/1.0.0`, which IPFS nodes speak between private addresses and which
//! takes only those (libp2p's kad speaks one protocol per behaviour, so each is a
//! behaviour of its own). We provide the roots of what we serve under their multihash,
//! as IPFS nodes look them up, and ask for the providers of CIDs we fetch.
//!
//! Here: the protocols, the behaviours' settings, the provider key, and the status line;
//! the node's side is `node::ipfs_routing`.

use std::time::Duration;

use cid::Cid;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};

pub const IPFS_KAD: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
pub const IPFS_LAN_KAD: StreamProtocol = StreamProtocol::new("/ipfs/lan/kad/1.0.0");

/// How long others keep our provider records (IPFS: 48 h) ...
pub const PROVIDER_TTL: Duration = Duration::from_secs(48 * 3600);
/// ... and how often we announce them again (IPFS: every 22 h): kad republishes what
/// we provide on this timer; the daemon provides everything once at start.
pub const REPROVIDE_EVERY: Duration = Duration::from_secs(22 * 3600);
/// Roots we provide at most (the drive's and the pins', first come); more are logged.
pub const MAX_PROVIDED: usize = 65_536;
/// Keys of other nodes' provider records we keep at most: they share the store with
/// ours, and a stranger must not fill it so that ours no longer fit.
pub const MAX_FOREIGN_KEYS: usize = 8_192;
/// Providers dialled per lookup at most.
pub const PROVIDERS_DIALLED: usize = 16;

/// The key IPFS nodes provide and look up a CID under: its multihash, so that a CIDv0
/// and a CIDv1 of the same bytes (any codec) meet.
pub fn provider_key(cid: &Cid) -> kad::RecordKey {
    kad::RecordKey::new(&cid.hash().to_bytes())
}

/// Which of the two IPFS DHTs a behaviour is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dht {
    /// `/ipfs/kad/1.0.0`: public addresses.
    Wan,
    /// `/ipfs/lan/kad/1.0.0`: private, loopback and link-local addresses.
    Lan,
}

impl Dht {
    pub fn protocol(self) -> StreamProtocol {
        match self {
            Dht::Wan => IPFS_KAD,
            Dht::Lan => IPFS_LAN_KAD,
        }
    }

    /// Whether `addr` belongs in this DHT's routing table.
    pub fn takes(self, addr: &Multiaddr) -> bool {
        is_lan(addr) == (self == Dht::Lan)
    }
}

/// A Kademlia for one of the IPFS DHTs. Peers enter its routing table only as the node
/// adds them (by address, `Dht::takes`), and what others store with us is judged by
/// the node (`StoreInserts::FilterBoth`): provider records within a bound, no values.
pub fn behaviour(me: PeerId, dht: Dht, server: bool) -> kad::Behaviour<MemoryStore> {
    let mut config = kad::Config::new(dht.protocol());
    config
        .set_provider_record_ttl(Some(PROVIDER_TTL))
        .set_provider_publication_interval(Some(REPROVIDE_EVERY))
        .set_kbucket_inserts(kad::BucketInserts::Manual)
        .set_record_filtering(kad::StoreInserts::FilterBoth);
    let store = MemoryStore::with_config(
        me,
        MemoryStoreConfig {
            max_provided_keys: MAX_PROVIDED + MAX_FOREIGN_KEYS,
            ..MemoryStoreConfig::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(me, store, config);
    kad.set_mode(Some(if server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
    kad
}

/// Whether `addr` is one IPFS nodes reach over the LAN DHT: loopback, private (RFC 1918,
/// shared 100.64/10, ULA) or link-local. DNS names count as public.
pub fn is_lan(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => {
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || (ip.octets()[0] == 100 && ip.octets()[1] & 0xc0 == 64)
        }
        Some(Protocol::Ip6(ip)) => {
            let first = ip.segments()[0];
            ip.is_loopback() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
        _ => false,
    }
}

/// `ipfs_dht` in `peerfs status --json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpfsDhtStatus {
    pub enabled: bool,
    /// Peers in the public and LAN routing tables.
    pub routing_table_peers: usize,
    pub lan_routing_table_peers: usize,
    /// Roots we provide.
    pub provided: usize,
    /// Provider records of others we keep (as a DHT server).
    pub stored_provider_keys: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cidv0_and_a_cidv1_of_the_same_bytes_share_a_provider_key() {
        let mh = crate::block::sha256_multihash(b"some bytes");
        let v0 = Cid::new_v0(mh).unwrap();
        let v1 = Cid::new_v1(crate::block::DAG_PB, mh);
        let raw = Cid::new_v1(crate::block::RAW, mh);
        assert_eq!(provider_key(&v0), provider_key(&v1));
        assert_eq!(provider_key(&v0), provider_key(&raw));
        // The multihash itself, as Kubo and Helia look it up.
        assert_eq!(provider_key(&raw).to_vec(), mh.to_bytes());
        let other = Cid::new_v1(crate::block::RAW, crate::block::sha256_multihash(b"other"));
        assert_ne!(provider_key(&raw), provider_key(&other));
    }

    #[test]
    fn addresses_go_to_the_dht_of_their_kind() {
        let lan = [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/10.0.0.1/udp/1/quic-v1",
            "/ip4/100.64.1.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
        ];
        let wan = [
            "/ip4/8.8.8.8/tcp/1",
            "/ip6/2001:db8::1/tcp/1",
            "/dns4/example.org/tcp/1",
        ];
        for a in lan {
            let a: Multiaddr = a.parse().unwrap();
            assert!(Dht::Lan.takes(&a) && !Dht::Wan.takes(&a), "{a}");
        }
        for a in wan {
            let a: Multiaddr = a.parse().unwrap();
            assert!(Dht::Wan.takes(&a) && !Dht::Lan.takes(&a), "{a}");
        }
    }
}
