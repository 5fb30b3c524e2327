//! Serving a protocol's incoming streams off the event loop (the inbox's letters, the
//! mirrors' statements and lists): at most `at_once` exchanges at a time (a stream past
//! that is dropped, and its peer tries again later), each bounded in time, for as long
//! as the service behind them lives.

use std::future::Future;
use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::{PeerId, Stream};
use tokio::sync::Semaphore;
use tracing::debug;

/// How streams of one protocol are served.
pub struct Serving {
    /// Exchanges at once, at most.
    pub at_once: usize,
    /// One exchange's time, at most.
    pub limit: Duration,
    /// What the exchange is, for the log ("letter", "mirror statement").
    pub what: &'static str,
}

/// Runs `exchange(service, peer, stream)` for each stream `incoming` brings, until
/// `service` is gone.
pub async fn serve_streams<T, F, Fut>(
    mut incoming: libp2p_stream::IncomingStreams,
    service: Weak<T>,
    serving: Serving,
    exchange: F,
) where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, PeerId, Stream) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let room = Arc::new(Semaphore::new(serving.at_once));
    while let Some((peer, stream)) = incoming.next().await {
        let Ok(permit) = Arc::clone(&room).try_acquire_owned() else {
            continue;
        };
        let Some(service) = service.upgrade() else {
            return;
        };
        let exchange = exchange(service, peer, stream);
        let (what, limit) = (serving.what, serving.limit);
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(limit, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("{what} from {peer}: {e}"),
                Err(_) => debug!("{what} from {peer}: timed out"),
            }
        });
    }
}
