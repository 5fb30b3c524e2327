//! Inode numbers: one space for the whole mount, cut into ranges, so that a number alone
//! says who answers for it.

/// The mount's root directory (FUSE's root inode), holding `drive/`, `peers/`, `ipfs/`
/// (and `inbox/`, an inode of the peer view: see `peers::inbox`).
pub const MOUNT_ROOT: u64 = 1;
/// My drive's root directory, `DIR/drive/`.
pub const DRIVE_ROOT: u64 = 2;
/// `DIR/peers/`, the parent of every followed peer's drive.
pub const PEERS: u64 = 3;
/// `DIR/ipfs/`, where any CID looked up by name shows (it lists nothing itself).
pub const IPFS: u64 = 4;
/// `DIR/outbox/`, a folder per followed peer (see `outbox`).
pub const OUTBOX: u64 = 5;
/// Inodes of entries under `outbox/` are numbered from here up to `PEER_INO_BASE`.
pub const OUTBOX_INO_BASE: u64 = 1 << 61;
/// My drive's other inodes are numbered from here up; lower numbers belong to the mount.
pub const FIRST_DRIVE_INO: u64 = 16;
/// Inodes of peers' drives are numbered from here up; my drive's stay below.
pub const PEER_INO_BASE: u64 = 1 << 62;

/// Whether `ino` is one of the mount's own directories (the root, `peers/`, `ipfs/`).
pub fn is_mount_dir(ino: u64) -> bool {
    matches!(ino, MOUNT_ROOT | PEERS | IPFS)
}

/// Whether `ino` is `outbox/` or an entry under it.
pub fn is_outbox_ino(ino: u64) -> bool {
    ino == OUTBOX || (OUTBOX_INO_BASE..PEER_INO_BASE).contains(&ino)
}

/// Whether `ino` is in a peer's drive (or a tree under `ipfs/`).
pub fn is_peer_ino(ino: u64) -> bool {
    ino >= PEER_INO_BASE
}
