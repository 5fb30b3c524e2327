//! Inode numbers: one space for the whole mount, cut into ranges, so that a number alone
//! says who answers for it.

/// The mount's root directory (FUSE's root inode), holding `drive/` and `peers/`.
pub const MOUNT_ROOT: u64 = 1;
/// My drive's root directory, `DIR/drive/`.
pub const DRIVE_ROOT: u64 = 2;
/// `DIR/peers/`, the parent of every followed peer's drive.
pub const PEERS: u64 = 3;
/// My drive's other inodes are numbered from here up; lower numbers belong to the mount.
pub const FIRST_DRIVE_INO: u64 = 16;
/// Inodes of peers' drives are numbered from here up; my drive's stay below.
pub const PEER_INO_BASE: u64 = 1 << 62;

/// Whether `ino` is in a peer's drive.
pub fn is_peer_ino(ino: u64) -> bool {
    ino >= PEER_INO_BASE
}
