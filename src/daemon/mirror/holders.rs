//! Readers finding mirrors: the statements of my mirrors, answered to peers that may
//! read my drive (`/peerfs/mirrors/1.0.0`), and, as a follower, asking owners for theirs
//! and dialling those mirrors while the owner is away.

use super::*;

impl Mirroring {
    /// The statements of my mirrors, for a peer that asks: one that may read my drive.
    fn list_for(&self, peer: &PeerId) -> MirrorList {
        let followed = lock(&self.book).by_id(peer).is_some();
        if !self.net.readers().allows(peer, followed) {
            return MirrorList::default();
        }
        MirrorList {
            statements: lock(&self.replicas)
                .signed(MAX_LISTED)
                .into_iter()
                .map(serde_bytes::ByteBuf::from)
                .collect(),
        }
    }

    /// Asks followed peers online for their mirrors now and then; dials the mirrors of
    /// those away, so that their blocks come from the mirrors.
    fn holders_round(&self) {
        let now = Instant::now();
        for p in self.net.peers() {
            let Ok(owner) = p.id.parse::<PeerId>() else {
                continue;
            };
            if p.connected {
                let due = lock(&self.known)
                    .get(&owner)
                    .is_none_or(|(at, _)| now.duration_since(*at) >= ASK_AGAIN);
                if due {
                    self.ask_mirrors(owner, now);
                }
                continue;
            }
            let mirrors = lock(&self.known)
                .get(&owner)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            for s in mirrors {
                let mut dialled = lock(&self.dialled);
                if dialled
                    .get(&s.mirror)
                    .is_some_and(|t| now.duration_since(*t) < DIAL_AGAIN)
                {
                    continue;
                }
                dialled.insert(s.mirror, now);
                drop(dialled);
                let addrs = s.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                self.net.dial_holder(s.mirror, addrs);
            }
        }
        // Forgotten after a while, so that the map stays small.
        lock(&self.dialled).retain(|_, t| now.duration_since(*t) < DIAL_AGAIN * 6);
    }

    /// Asks `owner` for its mirrors' statements; keeps those that verify.
    fn ask_mirrors(&self, owner: PeerId, now: Instant) {
        let mut control = self.net.streams();
        let exchange = async {
            let mut stream = control
                .open_stream(owner, MIRRORS_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            statement::ask_list(&mut stream)
                .await
                .map_err(|e| e.to_string())
        };
        let list = self
            .net
            .runtime()
            .block_on(async { tokio::time::timeout(TELL_TIMEOUT, exchange).await })
            .unwrap_or_else(|_| Err("no answer in time".into()));
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                debug!("asking {owner} for its mirrors: {e}");
                // Asked again after a while all the same.
                lock(&self.known)
                    .entry(owner)
                    .or_insert_with(|| (now, Vec::new()))
                    .0 = now;
                return;
            }
        };
        let statements: Vec<Statement> = list
            .statements
            .iter()
            .take(MAX_LISTED)
            .filter_map(|b| Statement::verify(b, None, Some(owner)).ok())
            .filter(|s| s.mirror != self.me)
            .collect();
        lock(&self.known).insert(owner, (now, statements));
    }

    /// Fills in each followed peer's mirrors, as it listed them.
    pub(in crate::daemon) fn name_mirrors(&self, peers: &mut [PeerInfo]) {
        let known = lock(&self.known);
        for p in peers {
            if let Some((_, list)) = p.id.parse().ok().and_then(|o: PeerId| known.get(&o)) {
                p.mirrors = list.iter().map(|s| s.mirror.to_string()).collect();
            }
        }
    }
}

/// Followed peers' mirrors, looked at every `HOLDERS_EVERY`.
pub(super) fn find_holders(m: Weak<Mirroring>) {
    loop {
        std::thread::sleep(HOLDERS_EVERY);
        let Some(m) = m.upgrade() else { return };
        m.holders_round();
    }
}

/// Answers followed peers that ask for my mirrors.
pub(super) async fn serve_lists(m: Weak<Mirroring>, incoming: libp2p_stream::IncomingStreams) {
    let serving = Serving {
        at_once: STATEMENTS_AT_ONCE,
        limit: TELL_TIMEOUT,
        what: "mirrors asked",
    };
    serve_streams(incoming, m, serving, |m, peer, mut stream| async move {
        let list = tokio::task::spawn_blocking(move || m.list_for(&peer))
            .await
            .unwrap_or_default();
        statement::answer_list(&mut stream, &list).await
    })
    .await
}
