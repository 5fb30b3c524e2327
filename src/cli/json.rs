//! The shapes `--json` prints, for scripts and monitoring. They are the CLI's promise,
//! documented in the README, and kept apart from the control protocol so that the
//! protocol can change without breaking a script: fields are added, never renamed or
//! removed, and a value not known yet is `null`.

use anyhow::Result;
use serde::Serialize;

use super::output::outln;
use peerfs::daemon::control::Status as DaemonStatus;
use peerfs::daemon::find::FoundAt;
use peerfs::net::activity::ConnectedPeer as NetConnectedPeer;
use peerfs::net::PeerInfo;

/// `peerfs id --json`.
#[derive(Serialize)]
pub struct Id {
    pub peer_id: String,
    /// Full multiaddrs (ending in /p2p/PEERID) another node can dial, widest reach first.
    pub addresses: Vec<String>,
    /// Whether others can reach this node from outside its network: "public",
    /// "private" or "unknown" (AutoNAT's verdict); null when no daemon runs.
    pub reachability: Option<String>,
    pub daemon_running: bool,
    pub daemon_pid: Option<u32>,
}

/// One element of `peerfs peers --json`.
#[derive(Serialize)]
pub struct Peer {
    pub name: String,
    pub peer_id: String,
    pub connected: bool,
    /// "direct" or "relayed" (through a relay); null while not connected.
    pub connection: Option<String>,
    /// "tcp" or "quic" (for a relayed connection, the one to the relay); null while
    /// not connected.
    pub transport: Option<String>,
    pub addresses: Vec<String>,
    pub rtt_ms: Option<f64>,
    pub head_seq: Option<u64>,
    pub head_root: Option<String>,
    /// RFC 3339, UTC.
    pub last_seen: Option<String>,
    pub bad_blocks: u64,
    /// Good blocks it sent us (of any drive), since our daemon started.
    pub blocks_fetched: u64,
    /// Why the last dial failed while it is not connected (refused, timed out, wrong
    /// peer ID, no address known), and when (RFC 3339, UTC).
    pub last_dial_error: Option<String>,
    pub last_dial_error_at: Option<String>,
    /// Peer IDs of the peers that hold its newest head in full (its mirrors), as it
    /// told us; they are asked for its blocks while it is away.
    pub mirrors: Vec<String>,
    /// What its signed profile says (null: no profile known yet); `name` is the local
    /// folder name, which never changes by itself.
    pub profile_name: Option<String>,
    pub about: Option<String>,
    /// Its avatar image's CID (`peerfs cat CID > avatar` fetches it).
    pub avatar: Option<String>,
    /// What it offers others, as it said on connect: "relay", "holder", "inbox",
    /// "mirror", "find", "bitswap", "gateway".
    pub capabilities: Vec<String>,
}

impl From<&PeerInfo> for Peer {
    fn from(p: &PeerInfo) -> Peer {
        Peer {
            name: p.name.clone(),
            peer_id: p.id.clone(),
            connected: p.connected,
            connection: p.connection.clone(),
            transport: p.transport.clone(),
            addresses: p.addrs.clone(),
            rtt_ms: p.rtt_ms,
            head_seq: p.head_seq,
            head_root: p.head_root.clone(),
            last_seen: p.last_seen_ms.map(rfc3339_ms),
            bad_blocks: p.bad_blocks,
            blocks_fetched: p.blocks_fetched,
            last_dial_error: p.last_dial_error.clone(),
            last_dial_error_at: p.last_dial_error_ms.map(rfc3339_ms),
            mirrors: p.mirrors.clone(),
            profile_name: p.profile_name.clone(),
            about: p.about.clone(),
            avatar: p.avatar.clone(),
            capabilities: p.capabilities.clone(),
        }
    }
}

/// `peerfs status --json`.
#[derive(Serialize)]
pub struct Status {
    pub daemon_pid: u32,
    pub peer_id: String,
    pub mountpoint: String,
    /// The drive's root CID; null for a drive never committed.
    pub root: Option<String>,
    /// The root peers see, its private folders sealed; null when it is `root`.
    pub published_root: Option<String>,
    pub seq: u64,
    pub uncommitted_changes: bool,
    /// RFC 3339, UTC.
    pub last_commit: Option<String>,
    pub open_files: usize,
    pub store_bytes: u64,
    pub cache_bytes: u64,
    pub cache_cap_bytes: u64,
    /// Who may read my drive (config `readers`): "following", "everyone", "listed" or
    /// "following+listed".
    pub readers: String,
    /// Blocks of peers' private folders that did not open (a wrong key, tampered).
    pub private_blocks_failed: u64,
    /// Peers connected now, and those that left in the last minute.
    pub connected_peers: Vec<ConnectedPeer>,
    /// Peers that hold my newest head (`seq`, `root`) in full, by their signed word.
    pub replicas: Vec<Replica>,
    /// Config `min_replicas`.
    pub min_replicas: usize,
    /// Set when fewer than `min_replicas` peers hold my newest head; null otherwise.
    pub replicas_warning: Option<String>,
    /// Config `ipfs_dht`: `enabled`, the public and LAN routing tables' peers, the roots
    /// provided, others' provider records kept.
    pub ipfs_dht: peerfs::net::ipfs_dht::IpfsDhtStatus,
}

/// One element of `replicas` in `peerfs status --json`.
#[derive(Serialize)]
pub struct Replica {
    pub peer_id: String,
    /// Its name in my peer book.
    pub name: Option<String>,
    pub seq: u64,
    /// When it said so (its clock), RFC 3339, UTC.
    pub since: String,
}

/// The warning `status` gives when too few peers hold my newest head.
pub fn replicas_warning(s: &DaemonStatus) -> Option<String> {
    (s.replicas.len() < s.min_replicas).then(|| {
        format!(
            "only {} peers hold head {} in full; config min_replicas is {}",
            s.replicas.len(),
            s.seq,
            s.min_replicas
        )
    })
}

/// One element of `connected_peers` in `peerfs status --json`: who is connected and
/// what it read of my drive in the last minute.
#[derive(Serialize)]
pub struct ConnectedPeer {
    pub peer_id: String,
    /// Its name in my peer book; null for a peer I do not follow.
    pub name: Option<String>,
    pub followed: bool,
    /// False: it left within the last minute.
    pub connected: bool,
    /// The connection's remote multiaddr.
    pub address: Option<String>,
    /// RFC 3339, UTC.
    pub connected_since: Option<String>,
    pub blocks_served_last_minute: u64,
    pub bytes_served_last_minute: u64,
    /// Block requests answered in the last minute (each carries up to 64 blocks).
    pub requests_served_last_minute: u64,
    /// Block requests refused (it may not read my drive) in the last minute.
    pub requests_refused_last_minute: u64,
    /// Its last block request, RFC 3339, UTC.
    pub last_request: Option<String>,
}

impl From<&NetConnectedPeer> for ConnectedPeer {
    fn from(p: &NetConnectedPeer) -> ConnectedPeer {
        ConnectedPeer {
            peer_id: p.id.clone(),
            name: p.name.clone(),
            followed: p.followed,
            connected: p.connected,
            address: p.address.clone(),
            connected_since: p.since_ms.map(rfc3339_ms),
            blocks_served_last_minute: p.blocks_served,
            bytes_served_last_minute: p.bytes_served,
            requests_served_last_minute: p.requests_served,
            requests_refused_last_minute: p.requests_refused,
            last_request: p.last_request_ms.map(rfc3339_ms),
        }
    }
}

impl From<&DaemonStatus> for Status {
    fn from(s: &DaemonStatus) -> Status {
        Status {
            daemon_pid: s.pid,
            peer_id: s.peer_id.clone(),
            mountpoint: s.mountpoint.display().to_string(),
            root: s.root.clone(),
            published_root: s.published_root.clone(),
            seq: s.seq,
            uncommitted_changes: s.uncommitted_changes,
            last_commit: s.last_commit_ms.map(rfc3339_ms),
            open_files: s.open_files,
            store_bytes: s.store_bytes,
            cache_bytes: s.cache_bytes,
            cache_cap_bytes: s.cache_cap,
            readers: s.readers.clone(),
            private_blocks_failed: s.private_blocks_failed,
            connected_peers: s.connected_peers.iter().map(ConnectedPeer::from).collect(),
            replicas: s
                .replicas
                .iter()
                .map(|r| Replica {
                    peer_id: r.peer_id.clone(),
                    name: r.name.clone(),
                    seq: r.seq,
                    since: rfc3339_ms(r.at_ms),
                })
                .collect(),
            min_replicas: s.min_replicas,
            replicas_warning: replicas_warning(s),
            ipfs_dht: s.ipfs_dht.clone(),
        }
    }
}

/// One element of `peerfs pins --json`: a pinned root and every label it was pinned
/// under.
#[derive(Serialize)]
pub struct Pin {
    pub cid: String,
    pub labels: Vec<PinLabel>,
}

#[derive(Serialize)]
pub struct PinLabel {
    /// The path pinned (in the mount), `add PATH`, `import PATH`, or the CID itself.
    pub label: String,
    /// Why this label no longer holds (the path leads elsewhere, the peer was removed);
    /// null when it holds or could not be checked.
    pub stale: Option<String>,
    /// Whether the label could be checked (a path in the mount, with the daemon running).
    pub checked: bool,
}

/// Prints `value` as one JSON document.
pub fn print(value: &impl Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// One element of `peerfs find --json`.
#[derive(Serialize)]
pub struct FindMatch {
    /// The path in the mount.
    pub path: String,
    /// The followed peer's name; null for my drive.
    pub peer: Option<String>,
    /// "file", "directory" or "symlink".
    pub kind: &'static str,
    /// A file's size, a symlink target's length; null for a directory.
    pub size: Option<u64>,
    /// Seconds since the Unix epoch; null when the entry records none.
    pub mtime: Option<i64>,
    pub cid: String,
}

impl From<FoundAt> for FindMatch {
    fn from(f: FoundAt) -> FindMatch {
        FindMatch {
            path: f.path,
            peer: f.peer,
            kind: f.entry.kind.name(),
            size: f.entry.size,
            mtime: f.entry.mtime,
            cid: f.entry.cid,
        }
    }
}
