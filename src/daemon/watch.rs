//! `peerfs watch`: a control connection that streams the feed's events, as lines, from
//! the moment it is answered until the client closes it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::control::Response;
use super::feed::{Feed, FeedEvent, What};

/// How often a quiet watch looks whether its client is still there.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long an event may wait for a client that does not read.
const STALLED: Duration = Duration::from_secs(30);

/// Streams `feed` to `conn`: a `watching` event first (everything after it is
/// delivered, or counted as missed), then the events about `peers` (all, when none
/// are named).
pub(super) fn serve(conn: &UnixStream, feed: &Feed, peers: &[String]) -> std::io::Result<()> {
    let (mut at, _watching) = feed.watch();
    // A client that stops reading is given up on, not waited for.
    conn.set_write_timeout(Some(STALLED))?;
    let gone = Arc::new(AtomicBool::new(false));
    // The client sends nothing after its request: its end closing ends the watch.
    let reader = conn.try_clone()?;
    reader.set_read_timeout(None)?;
    let flag = Arc::clone(&gone);
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while matches!((&reader).read(&mut buf), Ok(n) if n > 0) {}
        flag.store(true, Ordering::Relaxed);
    });
    send(conn, FeedEvent::now(What::Watching))?;
    while !gone.load(Ordering::Relaxed) {
        let (events, next) = feed.read_from(at, CHECK_EVERY);
        at = next;
        let wanted = |e: &FeedEvent| match e.what.peer() {
            Some(p) => peers.is_empty() || peers.iter().any(|n| n == p),
            None => true,
        };
        for event in events.into_iter().filter(wanted) {
            send(conn, event)?;
        }
    }
    Ok(())
}

fn send(conn: &UnixStream, event: FeedEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_string(&Response::Event(event)).expect("events always encode");
    line.push('\n');
    (&*conn).write_all(line.as_bytes())
}
