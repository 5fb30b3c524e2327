//! The control socket (`peerfs.sock` in the repo): one JSON request per line, one JSON
//! response per line (a pin sends progress lines first). The CLI speaks it to the
//! running daemon. A `blocks` request turns the connection into a binary blocks
//! session (see [`super::blocks`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::feed::FeedEvent;
use super::find::FoundAt;
pub use super::mirror::{MirrorInfo, ReplicaInfo};
use crate::find::{Query, Walked};
use crate::net::activity::ConnectedPeer;
use crate::net::peerbook::PeerEntry;
use crate::net::reach::DialReport;
use crate::net::PeerInfo;
use crate::pin::WalkProgress;
use crate::share::items::{Incoming, Outgoing};
use crate::transfers::{Change, Priority, Transfer, TransferId};

/// The socket's file name inside the repo.
pub const SOCKET: &str = "peerfs.sock";
/// How long a client waits for an answer; an unmount commits first, so allow for a
/// slow disk.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest request line the daemon reads.
pub const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Unmount, then commit and flush; the daemon exits after answering. Refused while
    /// files are open, unless `lazy`: then the mount is detached at once and the daemon
    /// commits what is still open as it closes, then exits.
    Unmount {
        #[serde(default)]
        lazy: bool,
    },
    /// The node's peer ID and listen addresses.
    Id,
    /// Follow a peer (a peer ID, or a multiaddr ending in /p2p/ID).
    PeerAdd {
        target: String,
        name: Option<String>,
    },
    /// Stop following a peer, by name or peer ID.
    PeerRm {
        name: String,
    },
    Peers,
    /// My profile, as my heads carry it.
    Profile,
    /// Change my profile and publish it with a new head.
    ProfileSet(crate::profile::Change),
    /// Peers my followed peers follow, and I do not.
    Suggestions,
    /// Fetch the whole DAG of `cid` and keep it. `path` is where it was named in the
    /// mount, which says whose drive it is.
    Pin {
        cid: String,
        path: Option<PathBuf>,
        /// Which transfer gets the bandwidth first (normal when not given).
        #[serde(default)]
        priority: Option<Priority>,
        /// Send the transfer's record (per-source progress) with each progress line.
        #[serde(default)]
        verbose: bool,
    },
    /// The transfers this daemon runs (pins, inbox deliveries), and the last finished.
    Transfers,
    /// Pause, resume, cancel or reprioritise transfer `id`.
    Transfer {
        id: TransferId,
        change: Change,
    },
    /// Remove the pins whose CID or label is `target` (or whose CID is `cid`).
    Unpin {
        target: String,
        cid: Option<String>,
    },
    Pins,
    /// Delete the cached blocks of peers' drives that no pin or kept head reaches.
    Gc,
    /// Switch this connection to a blocks session (`daemon::blocks`), answered with
    /// `Blocks` first.
    Blocks,
    /// Stream the feed's events (`Event` lines) until the client closes; only those
    /// about the peers named, when some are.
    Watch {
        #[serde(default)]
        peers: Vec<String>,
    },
    /// Search my drive and the followed drives (only the peers named, when some are):
    /// `Found` lines with `Searching` progress between, then `Searched`.
    Find {
        query: Query,
        #[serde(default)]
        peers: Vec<String>,
        /// Ask each peer to search its own drive, and walk only those that do not.
        #[serde(default)]
        remote: bool,
    },
    /// Send `root` (stored and pinned already) as `name` to the peer `to`.
    Send {
        to: String,
        name: String,
        root: String,
        size: u64,
        #[serde(default)]
        note: String,
    },
    Outbox,
    Inbox,
    /// Keep every head of a followed peer's drive in full (following it first if
    /// `name` is a peer ID or multiaddr not followed yet).
    MirrorAdd {
        name: String,
        quota: Option<u64>,
    },
    MirrorRm {
        name: String,
    },
    Mirrors,
    /// Make `path` (a directory of my drive: a path in the mount, or relative to the
    /// drive) private to `readers` (names or peer IDs; the whole set), or with none
    /// given, say who may read it.
    Share {
        path: String,
        #[serde(default)]
        readers: Option<Vec<String>>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    /// One event of a watch.
    Event(FeedEvent),
    /// One match of a search.
    Found(FoundAt),
    /// How far a search is, sent while it runs.
    Searching(Walked),
    /// A search's end.
    Searched(Walked),
    /// Something the user should know about how one peer's drive was searched.
    SearchNote {
        peer: String,
        note: String,
    },
    Unmounted {
        root: Option<String>,
    },
    /// A lazy unmount: the mount left the namespace; the daemon commits what is still
    /// open as it closes, then exits.
    Detached {
        open_files: usize,
    },
    Id {
        peer_id: String,
        addrs: Vec<String>,
        /// "public", "private" or "unknown" (AutoNAT's verdict).
        #[serde(default)]
        reachability: Option<String>,
    },
    /// The peer as saved, and how dialling it went.
    PeerAdded {
        entry: PeerEntry,
        dial: Option<DialReport>,
    },
    PeerRemoved(PeerEntry),
    Peers {
        peers: Vec<PeerInfo>,
    },
    /// My profile (none set: `None`).
    Profile {
        profile: Option<ProfileInfo>,
    },
    Suggestions {
        suggestions: Vec<super::introduce::Suggestion>,
    },
    /// Sent while a pin runs, before its final answer.
    Progress(WalkProgress),
    /// A transfer as it is now: after a change, or with a verbose pin's progress.
    Transfer(Transfer),
    Transfers {
        transfers: Vec<Transfer>,
    },
    Pinned {
        cid: String,
        blocks: u64,
        bytes: u64,
    },
    Unpinned {
        cids: Vec<String>,
    },
    Pins {
        pins: Vec<PinInfo>,
    },
    /// What an online gc deleted (blocks of peers' drives only).
    Collected {
        removed: u64,
        removed_bytes: u64,
        unfollowed: u64,
    },
    /// A blocks session begins after this line. `profile` is the daemon's import
    /// profile, so that `add` through it makes the CIDs the mount makes.
    Blocks {
        profile: String,
    },
    /// The item queued by a `send`.
    Sent(Outgoing),
    Outbox {
        items: Vec<Outgoing>,
    },
    Inbox {
        items: Vec<Incoming>,
    },
    MirrorAdded(MirrorInfo),
    MirrorRemoved(MirrorInfo),
    Mirrors {
        mirrors: Vec<MirrorInfo>,
    },
    /// A private folder and who may read it (`private: false`: it is not one).
    Shared(SharedFolder),
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedFolder {
    /// Relative to the drive's root.
    pub path: String,
    pub private: bool,
    pub readers: Vec<SharedReader>,
    /// Key generations: one more each time a reader was removed.
    pub generations: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedReader {
    /// The peer-book name, or the peer ID when it has none.
    pub name: String,
    pub peer_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinInfo {
    pub cid: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub peer_id: String,
    pub mountpoint: PathBuf,
    pub root: Option<String>,
    /// The root peers see, when private folders (sealed for them) make it differ.
    #[serde(default)]
    pub published_root: Option<String>,
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub last_commit_ms: Option<u64>,
    pub uncommitted_changes: bool,
    pub open_files: usize,
    pub store_bytes: u64,
    /// Bytes of evictable blocks fetched from peers, and the cap (`cache_size`).
    #[serde(default)]
    pub cache_bytes: u64,
    #[serde(default)]
    pub cache_cap: u64,
    /// Inodes of peers' drives the mount holds now.
    #[serde(default)]
    pub peer_inodes: u64,
    /// Who may read my drive: "everyone", "following", "following+listed", "listed".
    #[serde(default)]
    pub readers: String,
    /// Blocks of peers' private folders that did not open (a wrong key, tampered).
    #[serde(default)]
    pub private_blocks_failed: u64,
    /// Who is connected (or left in the last minute), and what each read.
    #[serde(default)]
    pub connected_peers: Vec<ConnectedPeer>,
    /// Peers that hold my newest head in full, by their signed word (mirrors).
    #[serde(default)]
    pub replicas: Vec<ReplicaInfo>,
    /// Config `min_replicas`: fewer holders than this is warned of.
    #[serde(default)]
    pub min_replicas: usize,
    /// The IPFS DHTs (config `ipfs_dht`).
    #[serde(default)]
    pub ipfs_dht: crate::net::ipfs_dht::IpfsDhtStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no daemon is running for repo {0} (start one with `peerfs mount MOUNTPOINT`)")]
    NotRunning(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: bad answer: {message}")]
    Protocol { path: PathBuf, message: String },
    /// The daemon answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request to the daemon of `repo` and waits for its answer.
pub fn request(repo: &Path, req: &Request) -> Result<Response, ControlError> {
    request_with_progress(repo, req, |_| {})
}

/// Like `request`, for requests that report progress before they answer.
pub fn request_with_progress(
    repo: &Path,
    req: &Request,
    mut progress: impl FnMut(WalkProgress),
) -> Result<Response, ControlError> {
    let (stream, mut reader) = send(repo, req)?;
    drop(stream);
    loop {
        match read_response(repo, &mut reader)? {
            Response::Progress(p) => progress(p),
            Response::Transfer(_) if matches!(req, Request::Pin { .. }) => {}
            other => return Ok(other),
        }
    }
}

/// Connects to the daemon of `repo` and sends `req`; returns the connection and a
/// reader of the answers. Reads wait at most `REPLY_TIMEOUT`.
pub fn send(
    repo: &Path,
    req: &Request,
) -> Result<(UnixStream, BufReader<UnixStream>), ControlError> {
    let path = repo.join(SOCKET);
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(repo.to_path_buf()))
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests always encode");
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let reader = BufReader::new(stream.try_clone().map_err(io)?);
    Ok((stream, reader))
}

/// Reads one answer line.
pub fn read_response(
    repo: &Path,
    reader: &mut BufReader<UnixStream>,
) -> Result<Response, ControlError> {
    let path = repo.join(SOCKET);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|source| ControlError::Io {
            path: path.clone(),
            source,
        })?;
    serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
        path,
        message: e.to_string(),
    })
}

/// A profile as `peerfs profile` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileInfo {
    pub peer_id: String,
    pub name: String,
    pub about: String,
    /// The avatar image's CID (a raw block).
    pub avatar: Option<String>,
    pub seq: u64,
    pub time_ms: u64,
}

impl From<&crate::profile::Profile> for ProfileInfo {
    fn from(p: &crate::profile::Profile) -> ProfileInfo {
        ProfileInfo {
            peer_id: p.peer.to_string(),
            name: p.name.clone(),
            about: p.about.clone(),
            avatar: p.avatar.map(|c| c.to_string()),
            seq: p.seq,
            time_ms: p.time_ms,
        }
    }
}
