//! The drive's errors and the one place they become errno values.

use crate::store::{StoreError, Unavailable};
use crate::unixfs;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file larger than the drive's maximum file size (16 TiB)")]
    FileTooBig,
    #[error("no data or hole past the end of the file")]
    PastEnd,
    #[error("file name longer than 255 bytes")]
    NameTooLong,
    #[error("invalid argument")]
    Invalid,
    #[error("bad file handle")]
    BadHandle,
    /// Things UnixFS cannot hold: hard links, device nodes, sockets, FIFOs.
    #[error("not supported by UnixFS")]
    NotSupported,
    #[error("no such attribute")]
    NoAttribute,
    /// Peers' drives: only their owners write them.
    #[error("read-only: a peer's drive")]
    ReadOnly,
    /// A panic caught inside the drive: the operation failed, the drive lives on.
    #[error("internal error: {0}")]
    Bug(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] unixfs::Error),
}

impl DriveError {
    pub fn errno(&self) -> i32 {
        match self {
            DriveError::NotFound => libc::ENOENT,
            DriveError::Exists => libc::EEXIST,
            DriveError::NotADirectory => libc::ENOTDIR,
            DriveError::IsADirectory => libc::EISDIR,
            DriveError::NotEmpty => libc::ENOTEMPTY,
            DriveError::NameTooLong => libc::ENAMETOOLONG,
            DriveError::FileTooBig => libc::EFBIG,
            DriveError::PastEnd => libc::ENXIO,
            DriveError::Invalid => libc::EINVAL,
            DriveError::BadHandle => libc::EBADF,
            DriveError::NotSupported => libc::EPERM,
            DriveError::NoAttribute => libc::ENODATA,
            DriveError::ReadOnly => libc::EROFS,
            DriveError::Store(e) | DriveError::Format(unixfs::Error::Store(e)) => store_errno(e),
            DriveError::Format(_) | DriveError::Bug(_) => libc::EIO,
        }
    }
}

fn store_errno(e: &StoreError) -> i32 {
    match e {
        StoreError::DiskFull(_) => libc::ENOSPC,
        StoreError::Unavailable {
            why: Unavailable::Refused,
            ..
        } => libc::EACCES,
        StoreError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        _ => libc::EIO,
    }
}
