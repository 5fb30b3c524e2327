//! Names the mount shows, which the daemon, the FUSE adapter and the CLI all rely on.

/// The mount's top-level directories: my drive, the drives I follow, and any CID.
pub const DRIVE_DIR: &str = "drive";
pub const PEERS_DIR: &str = "peers";
pub const IPFS_DIR: &str = "ipfs";
/// The attribute every entry answers: its CID.
pub const CID_XATTR: &str = "user.peerfs.cid";
