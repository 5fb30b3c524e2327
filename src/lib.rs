//! peerfs: a peer-to-peer filesystem. Your drive and your peers' drives are IPFS UnixFS
//! DAGs in a RocksDB block store, mounted with FUSE.
//!
//! The map, arrows pointing at what a module uses:
//!
//! - [`block`]: a `Block` is bytes plus the CID they hash to; the only way to make one
//!   is to hash or to verify.
//! - [`store`]: block storage behind a small trait; [`store::rocks`] is the RocksDB one.
//! - [`unixfs`]: the IPFS file format, exact to Kubo and the reference importer: DAG-PB,
//!   UnixFS 1.5 metadata, balanced file DAGs, HAMT directories, random-access reads.
//!   Uses only `block` and the `store` traits.
//! - [`add`] / [`get`]: local files and trees into the store, and back out.
//! - [`car`]: CAR archives in and out, verified block by block.
//! - [`repo`]: a repo directory: identity, config, database, the lock that keeps it to
//!   one process.
//!
//! Later issues add `drive` (the mutable drive), `fuse` (the mount), `net` (libp2p) and
//! `daemon` (wiring them); only `daemon` and the CLI will know everybody.

pub mod add;
pub mod block;
pub mod car;
pub mod get;
#[cfg(feature = "rocksdb")]
pub mod repo;
pub mod store;
pub mod unixfs;
