//! The loop's side of the IPFS DHT (`net::ipfs_dht`, config `ipfs_dht`): peers put in
//! the public or the LAN routing table by their addresses, the roots we provide kept in
//! step with the daemon's list, other nodes' provider records kept within a bound, and
//! provider lookups for blocks of no drive that a reader waits for: the providers found
//! are dialled, and once connected are sources of the fetch scheduler like any peer.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use cid::Cid;
use libp2p::kad::{self, store::RecordStore, QueryId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{identify, PeerId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Node;
use crate::net::ipfs_dht::{
    provider_key, Dht, IpfsDhtStatus, MAX_FOREIGN_KEYS, MAX_PROVIDED, PROVIDERS_DIALLED,
    PROVIDER_TTL,
};

/// Provider lookups under way at once at most; a fetch past it asks connected peers only.
const MAX_LOOKUPS: usize = 64;

/// A provider lookup, on one of the DHTs, for one fetch.
struct Lookup {
    found: mpsc::Sender<PeerId>,
    dialled: usize,
}

#[derive(Default)]
pub(super) struct IpfsRouting {
    /// The keys of the roots we provide.
    provided: HashSet<kad::RecordKey>,
    /// Announcements that reached nobody (no peers yet): made again with the next list.
    unannounced: HashSet<(Dht, kad::RecordKey)>,
    lookups: HashMap<(Dht, QueryId), Lookup>,
    /// Providers being dialled, and the fetches waiting for them.
    dialling: HashMap<PeerId, Vec<mpsc::Sender<PeerId>>>,
    /// Keys of other nodes' provider records we keep, and when each last came.
    foreign: HashMap<(Dht, kad::RecordKey), Instant>,
}

type Kad = kad::Behaviour<kad::store::MemoryStore>;

impl Node {
    /// The IPFS DHTs that are on (none without `ipfs_dht`).
    fn ipfs_kads(&mut self) -> impl Iterator<Item = (Dht, &mut Kad)> {
        let b = self.swarm.behaviour_mut();
        [
            (Dht::Wan, b.ipfs_kad.as_mut()),
            (Dht::Lan, b.ipfs_lan_kad.as_mut()),
        ]
        .into_iter()
        .filter_map(|(dht, kad)| Some((dht, kad?)))
    }

    /// Bootstrap nodes go into the DHT their address belongs to, which then looks
    /// itself up.
    pub(super) fn ipfs_join(&mut self) {
        let bootstrap = self.config.bootstrap.clone();
        for (dht, kad) in self.ipfs_kads() {
            for addr in &bootstrap {
                let mut a = addr.clone();
                if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = a.pop() {
                    if dht.takes(&a) {
                        kad.add_address(&peer, a);
                    }
                }
            }
            let _ = kad.bootstrap();
        }
    }

    /// A peer that speaks an IPFS DHT enters its routing table at the addresses of the
    /// DHT's kind; one that speaks only ours stays out of theirs, and theirs out of ours.
    pub(super) fn ipfs_identified(&mut self, peer: PeerId, info: &identify::Info) {
        for (dht, kad) in self.ipfs_kads() {
            if !info.protocols.contains(&dht.protocol()) {
                continue;
            }
            for addr in info.listen_addrs.iter().filter(|a| dht.takes(a)) {
                kad.add_address(&peer, addr.clone());
            }
        }
    }

    /// Provides `roots` (the daemon's whole list) from now on: new ones are announced,
    /// gone ones no longer (others forget them when their records expire), and those
    /// no peer took last time are announced again.
    pub(super) fn provide(&mut self, roots: Vec<Cid>) {
        if roots.len() > MAX_PROVIDED {
            warn!(
                "{} roots to provide in the IPFS DHT; providing the first {MAX_PROVIDED}",
                roots.len()
            );
        }
        let keys: HashSet<kad::RecordKey> =
            roots.iter().take(MAX_PROVIDED).map(provider_key).collect();
        let gone: Vec<kad::RecordKey> = self.ipfs.provided.difference(&keys).cloned().collect();
        let new: Vec<kad::RecordKey> = keys.difference(&self.ipfs.provided).cloned().collect();
        let again: Vec<(Dht, kad::RecordKey)> = self.ipfs.unannounced.drain().collect();
        for (dht, kad) in self.ipfs_kads() {
            for key in &gone {
                kad.stop_providing(key);
            }
            let retried = again.iter().filter(|(d, k)| *d == dht && keys.contains(k));
            for key in new.iter().chain(retried.map(|(_, k)| k)) {
                if let Err(e) = kad.start_providing(key.clone()) {
                    warn!("cannot provide a root in the IPFS DHT: {e}");
                }
            }
        }
        if !new.is_empty() || !gone.is_empty() {
            info!(
                "IPFS DHT: providing {} roots ({} new, {} no longer)",
                keys.len(),
                new.len(),
                gone.len()
            );
        }
        self.ipfs.provided = keys;
    }

    /// Looks up who provides `cid`; each provider, once connected, is sent on `found`.
    /// Dropping the receiver ends the interest.
    pub(super) fn find_providers(&mut self, cid: Cid, found: mpsc::Sender<PeerId>) {
        if self.ipfs.lookups.len() >= MAX_LOOKUPS {
            debug!("too many provider lookups at once; {cid} asks connected peers only");
            return;
        }
        let key = provider_key(&cid);
        let ids: Vec<(Dht, QueryId)> = self
            .ipfs_kads()
            .map(|(dht, kad)| (dht, kad.get_providers(key.clone())))
            .collect();
        for id in ids {
            let lookup = Lookup {
                found: found.clone(),
                dialled: 0,
            };
            self.ipfs.lookups.insert(id, lookup);
        }
    }

    pub(super) fn ipfs_event(&mut self, dht: Dht, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => {
                if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) = result
                {
                    self.found_providers(dht, id, providers);
                } else if let kad::QueryResult::StartProviding(done) = result {
                    let key = match done {
                        Ok(ok) => ok.key,
                        Err(e) => e.into_key(),
                    };
                    // Nobody took it (no peers yet): the next list announces it again.
                    if stats.num_successes() == 0 && self.ipfs.provided.contains(&key) {
                        debug!("IPFS DHT ({dht:?}): a provider record reached no peer");
                        self.ipfs.unannounced.insert((dht, key));
                    }
                }
                if step.last {
                    self.ipfs.lookups.remove(&(dht, id));
                }
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => self.keep_foreign(dht, record),
            _ => {}
        }
    }

    fn found_providers(&mut self, dht: Dht, id: QueryId, providers: HashSet<PeerId>) {
        let me = self.me;
        let Some(lookup) = self.ipfs.lookups.get_mut(&(dht, id)) else {
            return;
        };
        let mut dial = Vec::new();
        for peer in providers.into_iter().filter(|p| *p != me) {
            if self.swarm.is_connected(&peer) {
                let _ = lookup.found.try_send(peer);
            } else if lookup.dialled < PROVIDERS_DIALLED {
                lookup.dialled += 1;
                dial.push((peer, lookup.found.clone()));
            }
        }
        for (peer, found) in dial {
            debug!("dialling {peer}, a provider found in the IPFS DHT");
            self.ipfs.dialling.entry(peer).or_default().push(found);
            // With no addresses given, the swarm takes those the lookup was told.
            match self.swarm.dial(DialOpts::peer_id(peer).build()) {
                // Being dialled already: that dial's outcome settles it.
                Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    debug!("dialling provider {peer}: {e}");
                    self.ipfs.dialling.remove(&peer);
                }
            }
        }
    }

    /// `peer` connected: the fetches waiting for it as a provider may ask it now.
    pub(super) fn provider_connected(&mut self, peer: PeerId) {
        for found in self.ipfs.dialling.remove(&peer).into_iter().flatten() {
            let _ = found.try_send(peer);
        }
    }

    pub(super) fn provider_unreachable(&mut self, peer: PeerId) {
        if !self.swarm.is_connected(&peer) {
            self.ipfs.dialling.remove(&peer);
        }
    }

    /// Keeps another node's provider record, as a DHT server does, while the keys of
    /// others' records are fewer than the bound (a known key always: the store caps
    /// its providers).
    fn keep_foreign(&mut self, dht: Dht, record: kad::ProviderRecord) {
        if record.provider == self.me {
            return;
        }
        let slot = (dht, record.key.clone());
        if !self.ipfs.foreign.contains_key(&slot) && self.ipfs.foreign.len() >= MAX_FOREIGN_KEYS {
            debug!("IPFS DHT ({dht:?}): provider records of others are full; one dropped");
            return;
        }
        let Some((_, kad)) = self.ipfs_kads().find(|(d, _)| *d == dht) else {
            return;
        };
        match kad.store_mut().add_provider(record) {
            Ok(()) => {
                self.ipfs.foreign.insert(slot, Instant::now());
            }
            Err(e) => debug!("IPFS DHT ({dht:?}): a provider record not kept: {e}"),
        }
    }

    /// Forgets lookups and dials nobody waits for, and others' records past their time.
    pub(super) fn ipfs_prune(&mut self, now: Instant) {
        // A lookup whose fetch is over (the block came from elsewhere) stops asking.
        let over: Vec<(Dht, QueryId)> = self
            .ipfs
            .lookups
            .iter()
            .filter(|(_, l)| l.found.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for (dht, id) in over {
            self.ipfs.lookups.remove(&(dht, id));
            if let Some((_, kad)) = self.ipfs_kads().find(|(d, _)| *d == dht) {
                if let Some(mut query) = kad.query_mut(&id) {
                    query.finish();
                }
            }
        }
        let r = &mut self.ipfs;
        r.dialling.retain(|_, waiting| {
            waiting.retain(|w| !w.is_closed());
            !waiting.is_empty()
        });
        let expired: Vec<(Dht, kad::RecordKey)> = r
            .foreign
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= PROVIDER_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        let me = self.me;
        for (dht, key) in expired {
            self.ipfs.foreign.remove(&(dht, key.clone()));
            if let Some((_, kad)) = self.ipfs_kads().find(|(d, _)| *d == dht) {
                let store = kad.store_mut();
                for p in store.providers(&key) {
                    if p.provider != me {
                        store.remove_provider(&key, &p.provider);
                    }
                }
            }
        }
    }

    pub(super) fn ipfs_status(&mut self) -> IpfsDhtStatus {
        let mut status = IpfsDhtStatus {
            provided: self.ipfs.provided.len(),
            stored_provider_keys: self.ipfs.foreign.len(),
            ..IpfsDhtStatus::default()
        };
        for (dht, kad) in self.ipfs_kads() {
            status.enabled = true;
            let peers = kad.kbuckets().map(|b| b.num_entries()).sum();
            match dht {
                Dht::Wan => status.routing_table_peers = peers,
                Dht::Lan => status.lan_routing_table_peers = peers,
            }
        }
        status
    }
}
