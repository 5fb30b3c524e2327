//! Peers introduce themselves: my profile set and carried in my heads, the HELLO
//! exchanged with each followed peer on connect (and answered for anyone who asks),
//! what `peers` shows of each peer's profile and capabilities, and the peers my friends
//! follow, offered as suggestions.
//!
//! What is heard is kept for followed peers only, one HELLO each, so it is bounded by
//! the peer book; a HELLO itself is bounded by `profile::hello`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::futures::StreamExt;
use libp2p::PeerId;
use libp2p_identity::Keypair;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::mirror::Mirroring;
use crate::drive::Drive;
use crate::head::SignedHead;
use crate::net::nat::{Reachability, RelayServer};
use crate::net::peerbook::PeerBook;
use crate::net::{NetHandle, PeerInfo};
use crate::profile::hello::{self, capability, Heard, Hello, Known, HELLO_PROTOCOL};
use crate::profile::{self, Change, ProfileError, SignedProfile};
use crate::store::rocks::RocksStore;
use crate::store::{Blocks, HeadStore};

/// One exchange, opening the stream included, at most.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// HELLOs answered at once; a peer asking beyond it finds the stream closed.
const ANSWERING_AT_ONCE: usize = 16;
/// How often connected followed peers are asked again: what they offer and whom they
/// follow change while a connection lasts (a relay once AutoNAT says public).
const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// The pin label of my avatar's block.
const AVATAR_PIN: &str = "profile avatar";

/// One peer my friends follow and I do not (`peerfs suggestions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    pub peer_id: String,
    /// Its profile name, as a friend told it or its own profile says.
    pub profile_name: Option<String>,
    /// The local names of the followed peers that follow it.
    pub through: Vec<String>,
    /// Where the friends reach it (full multiaddrs ending in /p2p/PEERID).
    pub addresses: Vec<String>,
}

/// What `Introductions::start` needs.
pub(super) struct Parts {
    pub repo: PathBuf,
    pub key: Keypair,
    pub drive: Arc<Drive>,
    pub net: NetHandle,
    pub store: Arc<RocksStore>,
    pub book: Arc<Mutex<PeerBook>>,
    pub mirroring: Weak<Mirroring>,
    pub share_following: bool,
    pub relay_server: RelayServer,
    /// What this node offers whatever else happens (inbox, find, bitswap, gateway).
    pub fixed: Vec<&'static str>,
}

/// What this node offers whatever else happens, by its config.
pub(super) fn offered(config: &crate::repo::Config) -> Vec<&'static str> {
    let mut caps = vec![capability::INBOX, capability::FIND];
    if config.bitswap {
        caps.push(capability::BITSWAP);
    }
    if config.gateway.is_some() {
        caps.push(capability::GATEWAY);
    }
    caps
}

pub(super) struct Introductions {
    me: PeerId,
    parts: Parts,
    /// The last HELLO of each followed peer.
    heard: Mutex<HashMap<PeerId, Heard>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is one insert or read.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Changes my profile in the repo: the avatar's block stored and pinned (the old one
/// unpinned), the signed profile written. The daemon then carries it in a new head.
pub fn update_profile(
    repo: &Path,
    key: &Keypair,
    store: &RocksStore,
    change: &Change,
) -> Result<SignedProfile, ProfileError> {
    let me = key.public().to_peer_id();
    let old = profile::load(repo, &me);
    let (new, avatar) = change.apply(old.as_ref().map(|o| o.profile()), key, now_ms())?;
    let db = |e: crate::store::StoreError| ProfileError::Io {
        path: repo.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    if let Some(block) = &avatar {
        store
            .put_many(std::slice::from_ref(block), true)
            .map_err(db)?;
        store.pin(block.cid(), AVATAR_PIN).map_err(db)?;
    }
    profile::save(repo, &new)?;
    let old_avatar = old.and_then(|o| o.profile().avatar);
    if let Some(cid) = old_avatar.filter(|c| Some(*c) != new.profile().avatar) {
        store.unpin_label(&cid, AVATAR_PIN).map_err(db)?;
    }
    Ok(new)
}

impl Introductions {
    /// Puts my profile in my heads (a new head when the last one lacks it), and
    /// answers HELLOs on the node's runtime.
    pub(super) fn start(parts: Parts) -> Result<Arc<Introductions>, String> {
        let me = parts.key.public().to_peer_id();
        let mine = profile::load(&parts.repo, &me);
        let carried = parts.drive.head().and_then(|h| h.profile().cloned());
        parts.drive.set_profile(mine.clone());
        if mine.is_some() && mine != carried {
            // Set while no daemon ran.
            match parts.drive.republish() {
                Ok(Some(c)) => parts.net.publish(c.head),
                Ok(None) => {}
                Err(e) => return Err(format!("publishing my profile: {e}")),
            }
        }
        let incoming = parts
            .net
            .streams()
            .accept(HELLO_PROTOCOL)
            .map_err(|e| format!("cannot serve {HELLO_PROTOCOL}: {e}"))?;
        let intro = Arc::new(Introductions {
            me,
            parts,
            heard: Mutex::default(),
        });
        intro
            .parts
            .net
            .runtime()
            .spawn(answer(Arc::downgrade(&intro), incoming));
        let weak = Arc::downgrade(&intro);
        std::thread::spawn(move || refresh(weak));
        Ok(intro)
    }

    /// `profile set`: the new profile kept, and carried in a new head at once.
    pub(super) fn set(&self, change: &Change) -> Result<SignedProfile, String> {
        let p = &self.parts;
        let new = update_profile(&p.repo, &p.key, &p.store, change).map_err(|e| e.to_string())?;
        p.drive.set_profile(Some(new.clone()));
        match p.drive.republish() {
            Ok(Some(c)) => p.net.publish(c.head),
            Ok(None) => {}
            Err(e) => return Err(format!("publishing the profile: {e}")),
        }
        info!(seq = new.profile().seq, "profile set");
        Ok(new)
    }

    /// My profile.
    pub(super) fn mine(&self) -> Option<SignedProfile> {
        self.parts.drive.profile()
    }

    fn followed(&self, peer: &PeerId) -> bool {
        lock(&self.parts.book).by_id(peer).is_some()
    }

    /// What I offer others now.
    fn capabilities(&self) -> Vec<String> {
        let p = &self.parts;
        let mut caps: Vec<String> = p.fixed.iter().map(|c| c.to_string()).collect();
        let relaying = match p.relay_server {
            RelayServer::On => true,
            RelayServer::Off => false,
            RelayServer::Auto => p.net.reachability() == Reachability::Public,
        };
        if relaying {
            caps.push(capability::RELAY.into());
        }
        // Blocks of the open drives I follow are passed on to whoever asks.
        if !lock(&p.book).entries().is_empty() {
            caps.push(capability::HOLDER.into());
        }
        if p.mirroring.upgrade().is_some_and(|m| !m.list().is_empty()) {
            caps.push(capability::MIRROR.into());
        }
        caps.sort();
        caps
    }

    /// My HELLO: my profile, what I offer, and whom I follow when I share it.
    fn hello(&self) -> Hello {
        let following = if self.parts.share_following {
            let entries = lock(&self.parts.book).entries().to_vec();
            entries
                .iter()
                .filter_map(|e| Some((e.peer_id()?, e)))
                .take(hello::MAX_FOLLOWING)
                .map(|(peer, e)| Known {
                    peer: peer.to_bytes(),
                    name: self
                        .profile_of(&peer)
                        .map(|p| p.profile().name.clone())
                        .filter(|n| !n.is_empty()),
                    addrs: e.addrs.iter().take(hello::MAX_ADDRS).cloned().collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Hello {
            profile: self.mine().map(|p| p.encoded().to_vec()),
            capabilities: self.capabilities(),
            following,
        }
    }

    /// Keeps what a followed peer said; a stranger's HELLO is answered, not kept.
    fn heard(&self, peer: PeerId, heard: Heard) {
        if !self.followed(&peer) {
            return;
        }
        // Its avatar, cached here while it is online, for when it is not.
        if let Some(cid) = heard.profile.as_ref().and_then(|p| p.profile().avatar) {
            if !self.parts.store.has(&cid).unwrap_or(true) {
                self.parts.net.prefetch(&cid, Some(peer));
            }
        }
        let mut all = lock(&self.heard);
        all.insert(peer, heard);
        // Peers no longer followed go.
        let book = lock(&self.parts.book);
        all.retain(|p, _| book.by_id(p).is_some());
    }

    /// Exchanges HELLOs with `peer` now; blocks the calling thread (never one of the
    /// node's runtime) for at most `EXCHANGE_TIMEOUT`.
    pub(super) fn ask(&self, peer: PeerId) -> Option<Heard> {
        let mine = self.hello();
        let mut control = self.parts.net.streams();
        let exchange = async move {
            let mut stream = control
                .open_stream(peer, HELLO_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            hello::ask(&mut stream, &mine)
                .await
                .map_err(|e| e.to_string())
        };
        let got = self
            .parts
            .net
            .runtime()
            .block_on(async { tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await })
            .unwrap_or_else(|_| Err("no answer in time".into()));
        match got {
            Ok(theirs) => {
                let heard = theirs.check(peer);
                self.heard(peer, heard.clone());
                Some(heard)
            }
            Err(e) => {
                debug!("hello to {peer}: {e}");
                None
            }
        }
    }

    /// A followed peer connected: HELLOs are exchanged in the background.
    pub(super) fn connected(self: &Arc<Self>, peer: PeerId) {
        let me = Arc::downgrade(self);
        std::thread::spawn(move || {
            if let Some(me) = me.upgrade() {
                me.ask(peer);
            }
        });
    }

    /// The newest profile of `peer` I know: from its HELLO or from its stored head.
    pub(super) fn profile_of(&self, peer: &PeerId) -> Option<SignedProfile> {
        let said = lock(&self.heard).get(peer).and_then(|h| h.profile.clone());
        let carried = self
            .parts
            .store
            .head(&peer.to_string())
            .ok()
            .flatten()
            .and_then(|b| SignedHead::verify(&b).ok())
            .and_then(|h| h.profile().cloned());
        match (said, carried) {
            (Some(s), c) => Some(s.newer(c)),
            (None, c) => c,
        }
    }

    /// Adds to `peers` what each says of itself.
    pub(super) fn describe(&self, peers: &mut [PeerInfo]) {
        for p in peers {
            let Ok(id) = p.id.parse::<PeerId>() else {
                continue;
            };
            if let Some(profile) = self.profile_of(&id) {
                let pr = profile.profile();
                p.profile_name = Some(pr.name.clone()).filter(|n| !n.is_empty());
                p.about = Some(pr.about.clone()).filter(|a| !a.is_empty());
                p.avatar = pr.avatar.map(|c| c.to_string());
            }
            if let Some(h) = lock(&self.heard).get(&id) {
                p.capabilities = h.capabilities.clone();
            }
        }
    }

    /// Peers my followed peers follow (those that share it), but I do not, nor am.
    pub(super) fn suggestions(&self) -> Vec<Suggestion> {
        let entries = lock(&self.parts.book).entries().to_vec();
        let heard = lock(&self.heard).clone();
        let mut found: BTreeMap<PeerId, Suggestion> = BTreeMap::new();
        for friend in &entries {
            let Some(h) = friend.peer_id().and_then(|id| heard.get(&id)) else {
                continue;
            };
            for f in &h.following {
                let id = f.peer.to_string();
                if f.peer == self.me || entries.iter().any(|e| e.id == id) {
                    continue;
                }
                let s = found.entry(f.peer).or_insert_with(|| Suggestion {
                    peer_id: id.clone(),
                    profile_name: None,
                    through: Vec::new(),
                    addresses: Vec::new(),
                });
                s.profile_name = s.profile_name.take().or_else(|| f.name.clone());
                s.through.push(friend.name.clone());
                for a in &f.addrs {
                    let full = format!("{a}/p2p/{id}");
                    if s.addresses.len() < hello::MAX_ADDRS && !s.addresses.contains(&full) {
                        s.addresses.push(full);
                    }
                }
            }
        }
        let mut list: Vec<Suggestion> = found.into_values().collect();
        list.sort_by(|a, b| (&a.profile_name, &a.peer_id).cmp(&(&b.profile_name, &b.peer_id)));
        list
    }
}

/// Asks the connected followed peers again every `REFRESH_EVERY`, one at a time,
/// until the introductions are dropped.
fn refresh(intro: Weak<Introductions>) {
    loop {
        std::thread::sleep(REFRESH_EVERY);
        let Some(i) = intro.upgrade() else {
            return;
        };
        let connected: Vec<PeerId> = i
            .parts
            .net
            .peers()
            .into_iter()
            .filter(|p| p.connected)
            .filter_map(|p| p.id.parse().ok())
            .collect();
        for peer in connected {
            i.ask(peer);
        }
    }
}

/// Answers HELLOs from anyone, `ANSWERING_AT_ONCE` at a time. Making my HELLO and
/// keeping theirs ask the node and read the disk: off the runtime's workers.
async fn answer(intro: Weak<Introductions>, mut incoming: libp2p_stream::IncomingStreams) {
    let at_once = Arc::new(Semaphore::new(ANSWERING_AT_ONCE));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(permit) = Arc::clone(&at_once).try_acquire_owned() else {
            debug!("hello from {peer} dropped: answering others");
            continue;
        };
        let intro = intro.clone();
        tokio::spawn(async move {
            let made = intro.clone();
            let Ok(Some(mine)) =
                tokio::task::spawn_blocking(move || made.upgrade().map(|i| i.hello())).await
            else {
                return;
            };
            let got =
                tokio::time::timeout(EXCHANGE_TIMEOUT, hello::answer(&mut stream, &mine)).await;
            match got {
                Ok(Ok(theirs)) => {
                    let heard = theirs.check(peer);
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Some(i) = intro.upgrade() {
                            i.heard(peer, heard);
                        }
                    })
                    .await;
                }
                Ok(Err(e)) => debug!("hello from {peer}: {e}"),
                Err(_) => debug!("hello from {peer}: timed out"),
            }
            drop(permit);
        });
    }
}
