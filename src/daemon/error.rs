//! What can stop the daemon from starting or serving.

use std::path::PathBuf;

use crate::net::peerbook::PeerBookError;
use crate::net::NetError;
use crate::vfs::FsError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {reason}")]
    MountPoint { path: PathBuf, reason: String },
    #[error("/dev/fuse is missing: load the module (`modprobe fuse`), or give the container the device (`--device /dev/fuse`)")]
    NoFuseDevice,
    #[error("fusermount3 not found: install fuse3 (`sudo apt-get install fuse3`)")]
    NoFusermount,
    #[error("mounting {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Drive(#[from] FsError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    PeerBook(#[from] PeerBookError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "config `readers`: {0:?} is not \"following\", \"*\", a peer ID or a name in the peer book"
    )]
    UnknownReader(String),
    #[error("config.toml: {0}")]
    BadConfig(String),
}
