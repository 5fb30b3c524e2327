//! `find --remote`: asking a drive's owner to search it, over `/peerfs/find/1.0.0`.
//! The control thread that serves the search waits here for the owner's answers,
//! which a task on the node's runtime reads from the stream.

use std::time::Duration;

use libp2p::futures::AsyncWriteExt;
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::find::wire::{self, Answer, Ask, FIND_PROTOCOL, MAX_MATCHES};
use crate::find::{Found, Next, Query, Walked};
use crate::net::NetHandle;

/// Reaching the owner and hearing its first word, at most.
const OPEN_LIMIT: Duration = Duration::from_secs(10);
/// Silence between two answers, at most (the owner reports progress while it walks).
const STALLED: Duration = Duration::from_secs(30);

/// How a search asked of an owner went.
pub(super) enum Asked {
    /// The owner searched: everything it found was passed on.
    Answered { walked: Walked, truncated: bool },
    /// Nothing came from the owner (it refused, is not reachable, or does not speak
    /// the protocol): the walk is still to do.
    Unanswered(String),
    /// The answer broke off after some matches were passed on.
    Cut(String),
    /// The caller said stop.
    Stopped,
}

/// Asks `owner` to search its drive for `query`. Each match goes to `found` and each
/// progress report to `progress`, both of which may stop the search.
pub(super) fn ask(
    net: &NetHandle,
    owner: PeerId,
    query: &Query,
    mut found: impl FnMut(Found) -> Next,
    mut progress: impl FnMut(&Walked) -> Next,
) -> Asked {
    let (tx, mut rx) = mpsc::channel::<Result<Answer, String>>(64);
    let mut control = net.streams();
    let ask = Ask {
        query: query.clone(),
        limit: MAX_MATCHES,
    };
    net.runtime().spawn(async move {
        let exchange = async {
            let mut stream =
                tokio::time::timeout(OPEN_LIMIT, control.open_stream(owner, FIND_PROTOCOL))
                    .await
                    .map_err(|_| "the owner did not answer in time".to_string())?
                    .map_err(|e| e.to_string())?;
            wire::send_ask(&mut stream, &ask)
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let answer = tokio::time::timeout(STALLED, wire::read_answer(&mut stream))
                    .await
                    .map_err(|_| "the owner went silent".to_string())?
                    .map_err(|e| e.to_string())?;
                let last = matches!(answer, Answer::End { .. } | Answer::Refused { .. });
                if tx.send(Ok(answer)).await.is_err() || last {
                    let _ = stream.close().await;
                    return Ok(());
                }
            }
        };
        if let Err(e) = exchange.await {
            let _ = tx.send(Err(e)).await;
        }
    });
    let mut passed_on = false;
    loop {
        let answer = match rx.blocking_recv() {
            Some(a) => a,
            None => Err("the owner's answer ended early".to_string()),
        };
        match answer {
            Ok(Answer::Hit(hit)) => {
                passed_on = true;
                if let Next::Stop = found(hit) {
                    return Asked::Stopped;
                }
            }
            Ok(Answer::Walking(w)) => {
                if let Next::Stop = progress(&w) {
                    return Asked::Stopped;
                }
            }
            Ok(Answer::End { walked, truncated }) => return Asked::Answered { walked, truncated },
            Ok(Answer::Refused { reason }) | Err(reason) => {
                return if passed_on {
                    Asked::Cut(reason)
                } else {
                    Asked::Unanswered(reason)
                };
            }
        }
    }
}
