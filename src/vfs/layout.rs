//! Names the mount shows, which the daemon, the FUSE adapter and the CLI all rely on.

/// The mount's top-level directories: my drive, the drives I follow, and any CID.
pub const DRIVE_DIR: &str = "drive";
pub const PEERS_DIR: &str = "peers";
pub const IPFS_DIR: &str = "ipfs";
/// Items peers sent me, `inbox/<sender>/<name>`, read-only.
pub const INBOX_DIR: &str = "inbox";
/// A folder per followed peer; what is copied there is sent to it.
pub const OUTBOX_DIR: &str = "outbox";
/// Where a sent item stands (`queued`, `delivering N%`, `delivered TIME`, ...).
pub const DELIVERY_XATTR: &str = "user.peerfs.delivery";
/// The attribute every entry answers: its CID.
pub const CID_XATTR: &str = "user.peerfs.cid";
/// Where an entry of a peer's drive comes from: the peer (its name here, and its ID),
/// the head that brought it (seq, and when the peer made it, RFC 3339).
pub const PEER_XATTR: &str = "user.peerfs.peer";
pub const PEER_ID_XATTR: &str = "user.peerfs.peer_id";
pub const HEAD_SEQ_XATTR: &str = "user.peerfs.head_seq";
pub const HEAD_TIME_XATTR: &str = "user.peerfs.head_time";
/// "yes" when every block of the entry is here, "no", or "unknown" (too big to tell).
pub const LOCAL_XATTR: &str = "user.peerfs.local";
/// "yes" when the entry, or a directory above it, is pinned.
pub const PINNED_XATTR: &str = "user.peerfs.pinned";
/// Set on an entry under `peers/` or `ipfs/`, pins it (`peerfs pin`); removed, unpins.
pub const PIN_XATTR: &str = "user.peerfs.pin";
/// On a directory of my drive: who may read it, comma-separated; setting it makes the
/// folder private to them (see `seal`).
pub const READERS_XATTR: &str = "user.peerfs.readers";
