//! The vocabulary my drive, peers' drives and the FUSE adapter share, so that none of
//! them needs another's internals: [`crate::drive`] and [`crate::peers`] answer in it,
//! [`crate::fuse`] translates it for the kernel. It knows neither side.
//!
//! - [`attr`]: what `stat` shows (`Attr`), what `setattr` asks for (`SetAttr`), entry
//!   kinds, and the attributes of a stored UnixFS node.
//! - [`ino`]: the inode number ranges: the mount's own directories, my drive's, peers'.
//! - [`error`]: `FsError`, and the one place errors become errno values.
//! - [`layout`]: the names the mount shows (its top directories, the CID attribute).

pub mod attr;
pub mod error;
pub mod ino;
pub mod layout;

pub use attr::{node_attr, to_mtime, to_system_time, Attr, Kind, SetAttr};
pub use error::{panic_message, FsError};

/// Where `lseek` looks: `SEEK_DATA` or `SEEK_HOLE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    Data,
    Hole,
}
