//! The CLI's side of a blocks session: a [`Blocks`] store whose blocks are the running
//! daemon's, so that every command reads and writes the same way whether it opened the
//! repo itself or the daemon holds it.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cid::Cid;

use super::{
    put_part, put_size, read_header, read_payload, write_frame, Failure, Op, Status, HELD_FETCHED,
    HELD_OWN, MAX_FRAME, MAX_PUT_BLOCKS,
};
use crate::block::Block;
use crate::daemon::control::{self, ControlError, Request, Response};
use crate::store::{Blocks, Holding, StoreError};
use crate::unixfs::Profile;

/// A blocks session with the daemon of a repo. Requests from several threads take
/// turns on the one connection.
pub struct DaemonBlocks {
    socket: PathBuf,
    profile: Profile,
    conn: Mutex<Conn>,
}

struct Conn {
    input: BufReader<UnixStream>,
    output: BufWriter<UnixStream>,
    /// Set when an exchange broke off midway: the stream is out of step, so every
    /// later request fails rather than read someone else's answer.
    broken: bool,
}

impl DaemonBlocks {
    /// Opens a blocks session with the daemon of `repo`; `Ok(None)` when no daemon runs.
    pub fn connect(repo: &Path) -> Result<Option<DaemonBlocks>, ControlError> {
        let (stream, mut input) = match control::send(repo, &Request::Blocks) {
            Ok(c) => c,
            Err(ControlError::NotRunning(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let socket = repo.join(control::SOCKET);
        let profile = match control::read_response(repo, &mut input)? {
            Response::Blocks { profile } => profile,
            Response::Error { message } => return Err(ControlError::Refused(message)),
            other => {
                return Err(ControlError::Protocol {
                    path: socket,
                    message: format!("{other:?} to a blocks request"),
                })
            }
        };
        let profile = profile.parse().map_err(|e| ControlError::Protocol {
            path: socket.clone(),
            message: format!("import profile {profile:?}: {e}"),
        })?;
        Ok(Some(DaemonBlocks {
            socket,
            profile,
            conn: Mutex::new(Conn {
                input,
                output: BufWriter::with_capacity(64 * 1024, stream),
                broken: false,
            }),
        }))
    }

    /// The daemon's import profile (config.toml's, as the daemon read it).
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Pins `cid`, which must be in the daemon's store, under `label`.
    pub fn pin(&self, cid: &Cid, label: &str) -> Result<(), StoreError> {
        let mut payload = Vec::new();
        put_part(&mut payload, &cid.to_bytes());
        payload.extend_from_slice(label.as_bytes());
        self.call(Op::Pin, &payload, None).map(drop)
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        // A panic midway leaves the stream out of step: `broken` is still true then.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request and its answer. `cid` is the block asked for, for the error that
    /// says it was not delivered.
    fn call(&self, op: Op, payload: &[u8], cid: Option<&Cid>) -> Result<Vec<u8>, StoreError> {
        let mut conn = self.lock();
        if conn.broken {
            return Err(self.failed("the connection broke off earlier".into()));
        }
        conn.broken = true;
        let io = |source| StoreError::Io {
            path: self.socket.display().to_string(),
            source,
        };
        write_frame(&mut conn.output, op as u8, &[payload]).map_err(io)?;
        let (status, len) = read_header(&mut conn.input)
            .map_err(io)?
            .ok_or_else(|| io(std::io::ErrorKind::UnexpectedEof.into()))?;
        let answer = read_payload(&mut conn.input, len).map_err(io)?;
        conn.broken = false;
        drop(conn);
        match status {
            s if s == Status::Ok as u8 => Ok(answer),
            s if s == Status::Failed as u8 => Err(match (Failure::decode(&answer), cid) {
                (Failure::Unavailable(why), Some(cid)) => {
                    StoreError::Unavailable { cid: *cid, why }
                }
                (Failure::DiskFull(m), _) => StoreError::DiskFull(m),
                (Failure::Other(m), _) => self.failed(m),
                (Failure::Unavailable(why), None) => self.failed(why.to_string()),
            }),
            other => Err(self.failed(format!("an answer of unknown kind {other}"))),
        }
    }

    /// A failure the daemon reported (its message says what), or a broken exchange.
    fn failed(&self, message: String) -> StoreError {
        StoreError::Db {
            path: format!("of the daemon at {}", self.socket.display()),
            message,
        }
    }

    /// Sends `blocks` in as few `Put` frames as fit.
    fn put(&self, blocks: &[Block]) -> Result<(), StoreError> {
        let mut payload = Vec::new();
        let mut count = 0;
        for b in blocks {
            let size = put_size(b.cid(), b.data());
            if size > MAX_FRAME as usize {
                return Err(self.failed(format!(
                    "block {} is {} bytes, more than a frame holds",
                    b.cid(),
                    b.len()
                )));
            }
            if payload.len() + size > MAX_FRAME as usize || count == MAX_PUT_BLOCKS {
                self.call(Op::Put, &payload, None)?;
                payload.clear();
                count = 0;
            }
            count += 1;
            put_part(&mut payload, &b.cid().to_bytes());
            put_part(&mut payload, b.data());
        }
        if !payload.is_empty() {
            self.call(Op::Put, &payload, None)?;
        }
        Ok(())
    }
}

impl Blocks for DaemonBlocks {
    /// The daemon's block, fetched from peers when it is not there (within its fetch
    /// timeout); a block nobody delivers is an error naming it, never `None`.
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(Op::Get, &cid.to_bytes(), Some(cid)).map(Some)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.holding(cid)?.is_some())
    }

    /// Whose the daemon's block is: an import claims what is only cache.
    fn holding(&self, cid: &Cid) -> Result<Option<Holding>, StoreError> {
        Ok(
            match self.call(Op::Has, &cid.to_bytes(), None)?.as_slice() {
                [HELD_OWN] => Some(Holding::Own),
                [HELD_FETCHED] => Some(Holding::Fetched(None)),
                _ => None,
            },
        )
    }

    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
        self.put_bulk(blocks)?;
        if durable {
            self.finish_bulk()?;
        }
        Ok(())
    }

    /// Deletes nothing: while the daemon runs, its drive may have written the same
    /// blocks since (a failed import's blocks stay until the daemon's next sweep).
    fn delete_many(&self, _cids: &[Cid]) -> Result<(), StoreError> {
        Ok(())
    }

    fn put_bulk(&self, blocks: &[Block]) -> Result<(), StoreError> {
        self.put(blocks)
    }

    fn finish_bulk(&self) -> Result<(), StoreError> {
        self.call(Op::Finish, &[], None).map(drop)
    }
}
