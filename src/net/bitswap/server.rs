//! Serving Bitswap: each peer that sends us a wantlist gets a session, a task that
//! keeps its ledger, looks its wants up on the blocking pool (RocksDB reads never run
//! on the network's tasks) and writes the answers on a stream it opens to the peer,
//! several at once (a peer slow to read one answer gets the next ones meanwhile).
//! Readers, one per stream the peer opened, hand the session each message they read.
//! Every bound is in `super`: sessions, streams per peer, bytes being read, answers
//! being made, wants queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cid::Cid;
use libp2p::futures::stream::{self, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::Control;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::client::Client;
use super::ledger::Ledger;
use super::wire::{self, Want, Wants, WireError};
use super::{
    Version, ANSWERS_AT_ONCE, ANSWERS_PER_PEER, ANSWER_BUDGET, ANSWER_WANTS, HAVE_AS_BLOCK, IDLE,
    IO_TIMEOUT, MAX_BLOCK_SENT, MAX_SESSIONS, READ_BUDGET_KIB, STREAMS_PER_PEER,
};
use crate::access::Access;
use crate::car::links;
use crate::store::StoreError;

/// A message read from a peer, with the version its stream spoke.
type Inbound = (Version, Wants);

/// What every session shares.
struct Shared {
    access: Option<Arc<dyn Access>>,
    /// Tests only: every block sent has a byte flipped, like a lying peer's.
    corrupt: bool,
    control: Control,
    /// Where blocks and presences for what we fetch go.
    client: Client,
    sessions: Mutex<HashMap<PeerId, SessionHandle>>,
    /// Bytes of messages being read, in KiB.
    reading: Arc<Semaphore>,
    /// Answers being looked up or written.
    answering: Arc<Semaphore>,
}

#[derive(Clone)]
struct SessionHandle {
    messages: mpsc::Sender<Inbound>,
    /// The peer's streams being read.
    streams: Arc<Semaphore>,
}

/// Reads Bitswap on the streams `control` accepts, on the current tokio runtime until
/// it ends: wants are served by `access` (none without it: every answer DONT_HAVE),
/// blocks and DONT_HAVEs go to `client`.
pub fn start(mut control: Control, access: Option<Arc<dyn Access>>, corrupt: bool, client: Client) {
    let mut incoming = Vec::new();
    for version in Version::ALL {
        match control.accept(version.protocol()) {
            Ok(streams) => incoming.push(streams.map(move |(peer, s)| (peer, s, version))),
            Err(e) => warn!("bitswap: {}: {e}", version.protocol()),
        }
    }
    let shared = Arc::new(Shared {
        access,
        corrupt,
        control,
        client,
        sessions: Mutex::new(HashMap::new()),
        reading: Arc::new(Semaphore::new(READ_BUDGET_KIB as usize)),
        answering: Arc::new(Semaphore::new(ANSWERS_AT_ONCE)),
    });
    tokio::spawn(async move {
        let mut incoming = stream::select_all(incoming);
        while let Some((peer, s, version)) = incoming.next().await {
            accept(&shared, peer, s, version);
        }
    });
}

/// Starts reading a stream `peer` opened, if it has room for one more.
fn accept(shared: &Arc<Shared>, peer: PeerId, s: Stream, version: Version) {
    let Some(session) = session_for(shared, peer) else {
        debug!("bitswap: a stream from {peer} refused: {MAX_SESSIONS} peers are served");
        return;
    };
    let Ok(slot) = Arc::clone(&session.streams).try_acquire_owned() else {
        debug!("bitswap: a stream from {peer} refused: {STREAMS_PER_PEER} are open");
        return;
    };
    let reading = Arc::clone(&shared.reading);
    let client = shared.client.clone();
    tokio::spawn(async move {
        let from = (peer, &client);
        if let Err(e) = read(s, version, &session.messages, &reading, from).await {
            debug!("bitswap: a message from {peer} refused: {e}");
        }
        drop(slot);
    });
}

/// `peer`'s session, started if it has none (or its last one ended).
fn session_for(shared: &Arc<Shared>, peer: PeerId) -> Option<SessionHandle> {
    let mut sessions = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = sessions.get(&peer).filter(|s| !s.messages.is_closed()) {
        return Some(s.clone());
    }
    sessions.retain(|_, s| !s.messages.is_closed());
    if sessions.len() >= MAX_SESSIONS {
        return None;
    }
    let (tx, rx) = mpsc::channel(STREAMS_PER_PEER);
    let handle = SessionHandle {
        messages: tx,
        streams: Arc::new(Semaphore::new(STREAMS_PER_PEER)),
    };
    sessions.insert(peer, handle.clone());
    tokio::spawn(Session::new(Arc::clone(shared), peer).run(rx));
    Some(handle)
}

/// Reads messages off one stream until it ends; a malformed one ends it (the peer
/// sees its stream closed).
async fn read(
    mut s: Stream,
    version: Version,
    to: &mpsc::Sender<Inbound>,
    budget: &Arc<Semaphore>,
    (peer, client): (PeerId, &Client),
) -> Result<(), WireError> {
    // A stream may stay open between messages for as long as the connection does.
    while let Some(len) = wire::read_len(&mut s).await? {
        let kib = (len / 1024 + 1) as u32;
        let timed_out = || WireError::Io(std::io::ErrorKind::TimedOut.into());
        let room = timeout(IO_TIMEOUT, budget.acquire_many(kib))
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| timed_out())?;
        let message = timeout(IO_TIMEOUT, wire::read_body(&mut s, len))
            .await
            .map_err(|_| timed_out())??;
        // The budget is held until the loop took the blocks: it bounds them too.
        client.received(peer, &message).await;
        drop(room);
        let wants = Wants::of(&message)?;
        if to.send((version, wants)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// What a want is answered with.
enum Answer {
    Block(Vec<u8>),
    Have,
    DontHave,
    /// Not here, and the peer did not ask to be told.
    Nothing,
}

/// One answer message's worth of looked-up wants.
struct Looked {
    answers: Vec<(Cid, Answer)>,
    /// Taken but left for the next message (no room in this one).
    rest: Vec<Want>,
}

struct Session {
    shared: Arc<Shared>,
    peer: PeerId,
    ledger: Ledger,
    version: Version,
}

impl Session {
    fn new(shared: Arc<Shared>, peer: PeerId) -> Session {
        Session {
            shared,
            peer,
            ledger: Ledger::default(),
            version: Version::V120,
        }
    }

    async fn run(mut self, mut messages: mpsc::Receiver<Inbound>) {
        let mut writing = JoinSet::new();
        loop {
            while let Some(written) = writing.try_join_next() {
                self.written(written);
            }
            if self.ledger.is_idle() {
                let next = if writing.is_empty() {
                    timeout(IDLE, messages.recv()).await.ok().flatten()
                } else {
                    tokio::select! {
                        m = messages.recv() => m,
                        Some(written) = writing.join_next() => {
                            self.written(written);
                            continue;
                        }
                    }
                };
                match next {
                    Some(m) => self.take_in(m),
                    None if writing.is_empty() => return,
                    None => {}
                }
            }
            // Cancels and new wants first, so the answer reflects them.
            while let Ok(m) = messages.try_recv() {
                self.take_in(m);
            }
            if self.ledger.is_idle() {
                continue;
            }
            // Its answers being written fill its share: the oldest ends first.
            if writing.len() >= ANSWERS_PER_PEER {
                if let Some(written) = writing.join_next().await {
                    self.written(written);
                }
                continue;
            }
            if let Some(write) = self.answer().await {
                writing.spawn(write);
            }
        }
    }

    /// An answer's write ended: a peer we cannot write to gets nothing more until it
    /// asks again.
    fn written(&mut self, written: Result<std::io::Result<()>, tokio::task::JoinError>) {
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!("bitswap: answering {}: {e}", self.peer);
                self.ledger.forget_wants();
            }
            Err(e) => warn!("bitswap: an answer to {} failed: {e}", self.peer),
        }
    }

    fn take_in(&mut self, (version, wants): Inbound) {
        self.version = version;
        let dropped = self.ledger.apply(wants);
        if dropped > 0 {
            debug!(
                "bitswap: {} has too many wants; {dropped} ignored",
                self.peer
            );
        }
    }

    /// Looks up the oldest wants for one message; returns its write, to run beside
    /// the session (holding its room among all answers) while the next answer is
    /// looked up. What the blocks link to is granted before the write starts, so the
    /// peer's wants for it, sent once the block arrives, find the grant.
    async fn answer(&mut self) -> Option<impl std::future::Future<Output = std::io::Result<()>>> {
        let turn = Arc::clone(&self.shared.answering)
            .acquire_owned()
            .await
            .ok()?;
        let taken = self.ledger.take(ANSWER_WANTS);
        let access = self.shared.access.clone();
        let corrupt = self.shared.corrupt;
        let peer = self.peer;
        let looked =
            tokio::task::spawn_blocking(move || look_up(access.as_deref(), taken, corrupt)).await;
        let looked = match looked {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                warn!("bitswap: reading the store for {peer}: {e}");
                return None;
            }
            Err(e) => {
                warn!("bitswap: a lookup for {peer} failed: {e}");
                return None;
            }
        };
        self.ledger.put_back(looked.rest);
        let mut blocks = Vec::new();
        let mut presences = Vec::new();
        for (cid, answer) in looked.answers {
            match answer {
                Answer::Block(data) => {
                    // What it links to is the peer's to ask for next.
                    if let Ok(l) = links(&cid, &data) {
                        self.ledger.grant(l);
                    }
                    blocks.push((cid, data));
                }
                Answer::Have => presences.push((cid, true)),
                Answer::DontHave => presences.push((cid, false)),
                Answer::Nothing => {}
            }
        }
        if self.version != Version::V120 && blocks.is_empty() {
            return None;
        }
        if blocks.is_empty() && presences.is_empty() {
            return None;
        }
        let message = wire::answer(self.version, blocks, &presences);
        let (control, protocol) = (self.shared.control.clone(), self.version.protocol());
        Some(async move {
            let sent = send(control, peer, protocol, &message).await;
            drop(turn);
            sent
        })
    }
}

/// Writes `message` to `peer` on a stream of its own, closed after it. A stream kept
/// open for the next answer could be closed by the peer meanwhile (Helia closes idle
/// ones) and take a message with it unnoticed.
async fn send(
    mut control: Control,
    peer: PeerId,
    protocol: libp2p::StreamProtocol,
    message: &wire::Message,
) -> std::io::Result<()> {
    let opened = timeout(IO_TIMEOUT, control.open_stream(peer, protocol)).await;
    let mut s = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(std::io::Error::other(e.to_string())),
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    write(&mut s, message).await
}

/// Writes one message and closes the stream, within `IO_TIMEOUT`.
async fn write(s: &mut Stream, message: &wire::Message) -> std::io::Result<()> {
    let written = async {
        wire::write(s, message).await?;
        libp2p::futures::AsyncWriteExt::close(s).await
    };
    match timeout(IO_TIMEOUT, written).await {
        Ok(written) => written,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Looks up each want, by the access rule and the peer's grants (`true` beside a
/// want), until the answer's blocks fill a message.
fn look_up(
    access: Option<&dyn Access>,
    wants: Vec<(Want, bool)>,
    corrupt: bool,
) -> Result<Looked, StoreError> {
    let mut answers = Vec::with_capacity(wants.len());
    let mut bytes = 0usize;
    let mut wants = wants.into_iter();
    while let Some((want, granted)) = wants.next() {
        let absent = if want.send_dont_have {
            Answer::DontHave
        } else {
            Answer::Nothing
        };
        let access = match access {
            Some(a) if granted || a.may_serve(&want.cid)? => a,
            _ => {
                answers.push((want.cid, absent));
                continue;
            }
        };
        let answer = if want.have {
            match access.blocks().get(&want.cid)? {
                // The block itself saves the round trip of a want-block after the HAVE.
                Some(data) if data.len() <= HAVE_AS_BLOCK => Answer::Block(data),
                Some(_) => Answer::Have,
                None => absent,
            }
        } else {
            match access.blocks().get(&want.cid)? {
                Some(data) if data.len() <= MAX_BLOCK_SENT => {
                    if bytes > 0 && bytes + data.len() > ANSWER_BUDGET {
                        let rest = std::iter::once(want).chain(wants.map(|(w, _)| w)).collect();
                        return Ok(Looked { answers, rest });
                    }
                    bytes += data.len();
                    Answer::Block(data)
                }
                _ => absent,
            }
        };
        let answer = match answer {
            Answer::Block(mut data) if corrupt => {
                if let Some(last) = data.last_mut() {
                    *last ^= 1;
                }
                Answer::Block(data)
            }
            other => other,
        };
        answers.push((want.cid, answer));
    }
    Ok(Looked {
        answers,
        rest: Vec::new(),
    })
}
