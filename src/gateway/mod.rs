//! An IPFS HTTP gateway over this node's store: the trustless answers IPFS clients
//! verify (`?format=raw`, `?format=car`, as the trustless gateway spec says), and files
//! and directory listings for a person with a browser. It serves what strangers may
//! read (see `access`) and only what is here: it fetches nothing from peers.

mod body;
mod listing;
mod request;
mod respond;
mod verifiable;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

// The rule lives beside the store: Bitswap serves by it too.
use crate::access;
pub use crate::access::{Access, StoreAccess};

/// Where `peerfs gateway` listens unless told otherwise: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// A client gets this long to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, access: Arc<dyn Access>) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("gateway: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let access = access.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond::handle(req, access.clone()));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("gateway: a connection ended: {e}");
            }
            drop(slot);
        });
    }
}
