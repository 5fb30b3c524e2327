//! What can go wrong in a filesystem operation, on my drive or a peer's, and the one
//! place those errors become errno values.

use crate::store::{StoreError, Unavailable};
use crate::unixfs;

/// A filesystem operation's error; [`FsError::errno`] says what the kernel is told.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
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
    /// Operations no entry supports: fallocate's modes other than growing, setting or
    /// removing extended attributes.
    #[error("operation not supported")]
    Unsupported,
    /// ioctl: nothing here is a terminal or a device.
    #[error("inappropriate ioctl for device")]
    NoIoctl,
    /// The caller's buffer cannot hold the answer (an extended attribute's value).
    #[error("result too large for the buffer")]
    BufferTooSmall,
    /// Peers' drives: only their owners write them.
    #[error("read-only: a peer's drive")]
    ReadOnly,
    /// A panic caught inside an operation: it failed, the filesystem lives on.
    #[error("internal error: {0}")]
    Bug(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] unixfs::Error),
}

impl FsError {
    /// The errno the kernel passes on to the caller.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::FileTooBig => libc::EFBIG,
            FsError::PastEnd => libc::ENXIO,
            FsError::Invalid => libc::EINVAL,
            FsError::BadHandle => libc::EBADF,
            FsError::NotSupported => libc::EPERM,
            FsError::NoAttribute => libc::ENODATA,
            FsError::Unsupported => libc::EOPNOTSUPP,
            FsError::NoIoctl => libc::ENOTTY,
            FsError::BufferTooSmall => libc::ERANGE,
            FsError::ReadOnly => libc::EROFS,
            FsError::Store(e) | FsError::Format(unixfs::Error::Store(e)) => store_errno(e),
            // A tree edit's refusals, as the same call on a disk would give them.
            FsError::Format(unixfs::Error::NotFound(_)) => libc::ENOENT,
            FsError::Format(unixfs::Error::NotADirectory(_)) => libc::ENOTDIR,
            FsError::Format(unixfs::Error::IsADirectory(_)) => libc::EISDIR,
            FsError::Format(unixfs::Error::NotEmpty(_)) => libc::ENOTEMPTY,
            // A directory too big to hold its listing, as a file too big to hold.
            FsError::Format(unixfs::Error::TooManyEntries { .. }) => libc::EFBIG,
            FsError::Format(_) | FsError::Bug(_) => libc::EIO,
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

/// What a caught panic said, for [`FsError::Bug`] and the log.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
