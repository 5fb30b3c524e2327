//! The daemon's side of a blocks session: reads from the store, fetching what is not
//! here from peers; writes what the CLI adds or imports as the drive's own blocks,
//! each checked against its CID; pins the roots it is told.
//!
//! Each session runs on its control connection's own thread, never on the FUSE
//! session's. What a client can make the daemon hold is bounded: one frame of at most
//! `MAX_FRAME` per session (its buffer grows with bytes that arrive, not with the
//! length a header claims), `MAX_SESSIONS` sessions.

use std::io::{self, BufRead, BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;

use super::{
    read_header, read_payload, take_part, write_frame, Failure, Op, Status, HELD_FETCHED, HELD_NOT,
    HELD_OWN, MAX_PUT_BLOCKS, MAX_SESSIONS,
};
use crate::block::{Block, DAG_PB};
use crate::net::NetHandle;
use crate::store::rocks::RocksStore;
use crate::store::{Blocks, Holding, StoreError};
use crate::unixfs::dagpb::PbNode;

/// A frame that has begun must arrive, and an answer be taken, within this long. The
/// wait for the next frame is not bounded: `peerfs cat | less` may pause for a long
/// time, and `MAX_SESSIONS` bounds how many wait.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Links of a fetched node asked for ahead at most: a reader of a file or a directory
/// reads its children next.
const PREFETCH_LINKS: usize = 1024;

/// What blocks sessions share: the store, the network, the count of open sessions.
pub struct Server {
    store: Arc<RocksStore>,
    net: NetHandle,
    open: AtomicUsize,
}

impl Server {
    pub fn new(store: Arc<RocksStore>, net: NetHandle) -> Server {
        Server {
            store,
            net,
            open: AtomicUsize::new(0),
        }
    }

    /// A session slot, or `None` when `MAX_SESSIONS` are open.
    pub fn admit(&self) -> Option<Session<'_>> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SESSIONS).then_some(n + 1)
            });
        taken.ok().map(|_| Session { server: self })
    }
}

/// One client's blocks session; gives its slot back when dropped.
pub struct Session<'a> {
    server: &'a Server,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.server.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Session<'_> {
    /// Answers frames until the client closes the connection. A frame that breaks the
    /// framing (too long, cut short) gets an error answer when it can and ends the
    /// session; a request that fails gets its error and the session goes on.
    pub fn run(self, input: &mut BufReader<&UnixStream>, conn: &UnixStream) -> io::Result<()> {
        match self.serve(input, conn) {
            // The client went away, as `peerfs cat | head -1` does: nothing to report.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn serve(&self, input: &mut BufReader<&UnixStream>, conn: &UnixStream) -> io::Result<()> {
        conn.set_write_timeout(Some(FRAME_TIMEOUT))?;
        let mut out = BufWriter::new(conn);
        let mut hold = None;
        loop {
            conn.set_read_timeout(None)?;
            if input.fill_buf()?.is_empty() {
                return Ok(());
            }
            conn.set_read_timeout(Some(FRAME_TIMEOUT))?;
            let (op, len) = match read_header(input) {
                Ok(Some(header)) => header,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let failure = Failure::Other(e.to_string()).encode();
                    let _ = write_frame(&mut out, Status::Failed as u8, &[&failure]);
                    return Err(e);
                }
            };
            let payload = read_payload(input, len)?;
            // What a client puts is reachable from nothing until it pins its root
            // (add and import pin last): no sweep until the session ends.
            if op == Op::Put as u8 && hold.is_none() {
                hold = Some(self.server.store.hold_off_sweeps());
            }
            match self.handle(op, &payload) {
                Ok(answer) => write_frame(&mut out, Status::Ok as u8, &[&answer])?,
                Err(failure) => write_frame(&mut out, Status::Failed as u8, &[&failure.encode()])?,
            }
        }
    }

    fn handle(&self, op: u8, payload: &[u8]) -> Result<Vec<u8>, Failure> {
        let store = |e: StoreError| Failure::of(&e);
        match Op::from_byte(op) {
            Some(Op::Get) => self.get(&parse_cid(payload)?).map_err(store),
            Some(Op::Has) => {
                let held = self.server.store.holding(&parse_cid(payload)?);
                Ok(vec![match held.map_err(store)? {
                    None => HELD_NOT,
                    Some(Holding::Own) => HELD_OWN,
                    Some(Holding::Fetched(_)) => HELD_FETCHED,
                }])
            }
            Some(Op::Put) => {
                let blocks = parse_blocks(payload)?;
                self.server.store.put_bulk(&blocks).map_err(store)?;
                Ok(Vec::new())
            }
            Some(Op::Finish) => {
                self.server.store.finish_bulk().map_err(store)?;
                Ok(Vec::new())
            }
            Some(Op::Pin) => {
                let mut rest = payload;
                let cid = take_part(&mut rest).ok_or_else(|| malformed("a pin"))?;
                let cid = parse_cid(cid)?;
                // Labels are stored NUL-separated.
                let label = std::str::from_utf8(rest)
                    .ok()
                    .filter(|l| !l.contains('\0'))
                    .ok_or_else(|| malformed("a pin label"))?;
                // Only a root that is here: a pin promises its blocks stay.
                if !self.server.store.has(&cid).map_err(store)? {
                    return Err(Failure::Other(format!(
                        "pinning {cid}: the block is not here"
                    )));
                }
                self.server.store.pin(&cid, label).map_err(store)?;
                Ok(Vec::new())
            }
            None => Err(Failure::Other(format!("unknown request {op}"))),
        }
    }

    /// The block `cid`: from the store, else from the network within the fetch
    /// timeout. The links of a block that came from the network are asked for ahead.
    fn get(&self, cid: &Cid) -> Result<Vec<u8>, StoreError> {
        let Server { store, net, .. } = self.server;
        if let Some(data) = net.take_prefetched(cid) {
            self.prefetch_links(cid, &data);
            return Ok(data);
        }
        if let Some(data) = store.get(cid)? {
            return Ok(data);
        }
        let data = net
            .fetch(cid, None)
            .map_err(|why| StoreError::Unavailable { cid: *cid, why })?;
        self.prefetch_links(cid, &data);
        Ok(data)
    }

    fn prefetch_links(&self, cid: &Cid, data: &[u8]) {
        if cid.codec() != DAG_PB {
            return;
        }
        let Ok(node) = PbNode::decode(data) else {
            return;
        };
        for link in node.links.iter().take(PREFETCH_LINKS) {
            if !self.server.store.has(&link.cid).unwrap_or(true) {
                self.server.net.prefetch(&link.cid, None);
            }
        }
    }
}

fn malformed(what: &str) -> Failure {
    Failure::Other(format!("malformed {what}"))
}

fn parse_cid(bytes: &[u8]) -> Result<Cid, Failure> {
    Cid::try_from(bytes).map_err(|e| Failure::Other(format!("not a CID: {e}")))
}

/// The blocks of a `Put` payload, each checked against its CID: the daemon stores
/// nothing that is not what its name says.
fn parse_blocks(mut payload: &[u8]) -> Result<Vec<Block>, Failure> {
    let mut blocks = Vec::new();
    while !payload.is_empty() {
        if blocks.len() == MAX_PUT_BLOCKS {
            return Err(Failure::Other(format!(
                "more than {MAX_PUT_BLOCKS} blocks in one frame"
            )));
        }
        let cid = take_part(&mut payload).ok_or_else(|| malformed("blocks"))?;
        let data = take_part(&mut payload).ok_or_else(|| malformed("blocks"))?;
        let cid = parse_cid(cid)?;
        let block =
            Block::verified(cid, data.to_vec()).map_err(|e| Failure::Other(e.to_string()))?;
        blocks.push(block);
    }
    Ok(blocks)
}
