//! Names the mount shows, which the daemon, the FUSE adapter and the CLI all rely on.

/// The mount's two top-level directories: my drive, and the drives I follow.
pub const DRIVE_DIR: &str = "drive";
pub const PEERS_DIR: &str = "peers";
/// The attribute every entry answers: its CID.
pub const CID_XATTR: &str = "user.peerfs.cid";
