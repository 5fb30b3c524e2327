//! Response bodies: bytes in memory, or a stream that a blocking task writes (files and
//! CARs are read from the store block by block, never held whole).

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Chunks a stream keeps queued ahead of the client: with `CHUNK`, 1 MiB per response.
const QUEUED: usize = 4;
const CHUNK: usize = 256 << 10;

type Producer = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

pub enum Body {
    Full(Option<Bytes>),
    /// Not polled yet: nothing has been read (a `HEAD` answer drops it as it is).
    Pending(Option<Producer>),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }

    pub fn bytes(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }

    /// A body that `produce` writes from a blocking task, started when the body is first
    /// polled. An error it returns, or a panic, ends the response early, so the client
    /// sees it cut short, never whole.
    pub fn stream<F>(produce: F) -> Body
    where
        F: FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
    {
        Body::Pending(Some(Box::new(produce)))
    }
}

/// Starts `produce` on the blocking pool; its output arrives on the receiver.
fn start(produce: Producer) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(QUEUED);
    tokio::task::spawn_blocking(move || {
        let mut out = Sender {
            tx: tx.clone(),
            buf: BytesMut::new(),
        };
        let done = produce(&mut out).and_then(|()| out.send());
        if let Err(e) = done {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!("gateway: a response stopped early: {e}");
            }
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Gathers written bytes into chunks and hands each to the response without another
/// copy; fails with `BrokenPipe` once the client left.
struct Sender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl Sender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for Sender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf.reserve(CHUNK.max(buf.len()));
        }
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let body = self.get_mut();
        if let Body::Pending(produce) = body {
            let Some(produce) = produce.take() else {
                return Poll::Ready(None);
            };
            *body = Body::Stream(start(produce));
        }
        match body {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Pending(_) => Poll::Ready(None),
            Body::Stream(rx) => rx
                .poll_recv(cx)
                .map(|next| next.map(|chunk| chunk.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Pending(_) | Body::Stream(_) => SizeHint::default(),
        }
    }
}
