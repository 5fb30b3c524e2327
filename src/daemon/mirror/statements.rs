//! Statements between a mirror and the owner: as a mirror, telling the owner which head
//! is held (and keeping the readers it names back, to pass its drive on to them); as an
//! owner, taking statements from peers in my book and naming my readers in the answer.

use super::*;

impl Mirroring {
    /// Tells `peer` which head of its drive is held, unless it took that a moment ago
    /// (asked again now and then for its readers) or did not take it a moment ago.
    pub(super) fn tell(&self, id: &str, peer: PeerId) {
        let held = lock(&self.mirrors).get(id).and_then(|m| m.held.clone());
        let Some(held) = held else { return };
        let Ok(root) = held.root.parse::<Cid>() else {
            return;
        };
        let now = Instant::now();
        let due = self.live(id, |l| {
            let told = l.told.is_some_and(|(seq, at)| {
                seq == held.seq && now.duration_since(at) < ASK_READERS_AGAIN
            });
            !told && l.tell_at.is_none_or(|t| t <= now)
        });
        if !due {
            return;
        }
        self.live(id, |l| l.tell_at = Some(now + TELL_AGAIN));
        let statement = Statement {
            mirror: self.me,
            owner: peer,
            seq: held.seq,
            root,
            time_ms: now_ms(),
            addrs: self
                .net
                .listen_addrs()
                .iter()
                .map(|a| a.to_string())
                .collect(),
        };
        let signed = match statement.sign(&self.key) {
            Ok(s) => s,
            Err(e) => return warn!("cannot sign a mirror statement: {e}"),
        };
        let mut control = self.net.streams();
        let exchange = async {
            let mut stream = control
                .open_stream(peer, REPLICA_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            statement::send(&mut stream, signed)
                .await
                .map_err(|e| e.to_string())
        };
        let answer = self
            .net
            .runtime()
            .block_on(async { tokio::time::timeout(TELL_TIMEOUT, exchange).await })
            .unwrap_or_else(|_| Err("no answer in time".into()));
        match answer {
            Ok(answer @ Answer::Noted { .. }) => {
                debug!("{peer} knows head {} is held here", held.seq);
                self.live(id, |l| l.told = Some((held.seq, Instant::now())));
                self.keep_readers(id, peer, answer.readers());
            }
            Ok(Answer::Refused { reason }) => {
                info!(
                    "{peer} did not take the statement that head {} is held: {reason}",
                    held.seq
                )
            }
            Err(e) => debug!("telling {peer} head {} is held: {e}", held.seq),
        }
    }

    /// Keeps the readers `owner` named for its drive, and passes its blocks on to them.
    fn keep_readers(&self, id: &str, owner: PeerId, readers: Vec<PeerId>) {
        let named: Vec<String> = readers.iter().map(|p| p.to_string()).collect();
        let mut mirrors = lock(&self.mirrors);
        let Some(m) = mirrors.get_mut(id) else { return };
        if m.readers != named {
            m.readers = named;
            if let Err(e) = mirrors.save() {
                warn!("keeping the readers {owner} named: {e}");
            }
        }
        drop(mirrors);
        self.net.pass_on(owner, readers.into_iter().collect());
    }

    /// A statement that `sender` sent: kept if it verifies and `sender` is in my book.
    fn statement(&self, sender: PeerId, bytes: Vec<u8>) -> Answer {
        let s = match Statement::verify(&bytes, Some(sender), Some(self.me)) {
            Ok(s) => s,
            Err(e) => {
                return Answer::Refused {
                    reason: e.to_string(),
                }
            }
        };
        let name = lock(&self.book).by_id(&sender).map(|e| e.name.clone());
        let Some(name) = name else {
            return Answer::Refused {
                reason: "this node does not know you (not in its peer book)".into(),
            };
        };
        match lock(&self.replicas).note(s.clone(), bytes) {
            Ok(true) => info!("{name} holds head {} of my drive in full", s.seq),
            Ok(false) => {}
            Err(e) => {
                warn!("keeping {name}'s mirror statement: {e}");
                return Answer::Refused {
                    reason: "the owner could not keep it".into(),
                };
            }
        }
        // The mirror passes my blocks on to my readers only, as I would.
        let followed: Vec<PeerId> = lock(&self.book)
            .entries()
            .iter()
            .filter_map(|e| e.peer_id())
            .collect();
        Answer::noted(self.net.readers().named(followed))
    }
}

/// Reads statements from the streams mirrors open, `STATEMENTS_AT_ONCE` at a time.
pub(super) async fn serve_statements(m: Weak<Mirroring>, incoming: libp2p_stream::IncomingStreams) {
    let serving = Serving {
        at_once: STATEMENTS_AT_ONCE,
        limit: TELL_TIMEOUT,
        what: "mirror statement",
    };
    serve_streams(incoming, m, serving, |m, peer, mut stream| async move {
        let bytes = statement::read(&mut stream).await?;
        let answer = tokio::task::spawn_blocking(move || m.statement(peer, bytes))
            .await
            .unwrap_or(Answer::Refused {
                reason: "the owner failed to read it".into(),
            });
        statement::answer(&mut stream, &answer).await
    })
    .await
}
