//! How a session comes to its end: SIGINT/SIGTERM, `peerfs unmount` (plain or lazy),
//! or the mount going away, all arriving as `Event`s on one channel; the main thread
//! serves them until every write a program was told succeeded can be committed.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use tracing::{error, info};

use super::control::Response;
use super::session::Mounted;
use crate::drive::Drive;

/// How often a detached session checks whether its last open file has closed.
const DETACHED_POLL: Duration = Duration::from_millis(100);

/// How the main thread answers a control request: with the response, and a sender the
/// connection's thread signals once the response is written, so that the process does
/// not exit between the two (the client would read EOF).
pub(super) struct Answer(pub(super) mpsc::Sender<(Response, mpsc::Sender<()>)>);

/// How long the daemon waits, as it exits, for an answer to be written.
pub(super) const ANSWER_WRITTEN_TIMEOUT: Duration = Duration::from_secs(2);

impl Answer {
    pub(super) fn send(&self, response: Response) -> Option<mpsc::Receiver<()>> {
        let (written, is_written) = mpsc::channel();
        self.0.send((response, written)).ok()?;
        Some(is_written)
    }
}

/// What the main thread waits for while the session runs.
pub(super) enum Event {
    Signal(&'static str),
    /// `peerfs unmount`; `lazy` detaches even while files are open.
    Unmount {
        reply: Answer,
        lazy: bool,
    },
    SessionEnded,
}

/// Serves until the session is over: the mount was unmounted (by us or from outside),
/// or it was detached and its last open file has closed, so that every write a program
/// was told succeeded is in the final commit. Returns who asked for the unmount.
pub(super) fn serve_until_done(
    inbox: &mpsc::Receiver<Event>,
    mounted: &mut Mounted,
    drive: &Drive,
) -> Vec<Answer> {
    let mut requesters = Vec::new();
    loop {
        match inbox.recv_timeout(DETACHED_POLL) {
            Ok(Event::SessionEnded) | Err(RecvTimeoutError::Disconnected) => {
                info!("the mount is gone");
                mounted.unmounted_elsewhere();
                return requesters;
            }
            Ok(Event::Signal(name)) => {
                info!("{name}: detaching; the daemon stops once no file is open");
                mounted.detach();
            }
            Ok(Event::Unmount { reply, lazy: true }) => {
                mounted.detach();
                let _ = reply.send(Response::Detached {
                    open_files: drive.status().open_files,
                });
            }
            Ok(Event::Unmount { reply, lazy: false }) => match mounted.unmount() {
                Ok(()) => requesters.push(reply),
                Err(busy) => {
                    info!("unmount refused: {busy}");
                    let _ = reply.send(Response::Error {
                        message: busy.to_string(),
                    });
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
        }
        if mounted.is_detached() && drive.status().open_files == 0 {
            return requesters;
        }
    }
}

pub(super) fn watch_signals(events: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return error!("cannot watch signals: {e}"),
        };
        runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return error!("cannot watch signals");
            };
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                if events.send(Event::Signal(name)).is_err() {
                    return;
                }
            }
        });
    });
}
