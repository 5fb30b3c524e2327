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
//! - [`seal`]: private folders: blocks sealed per folder and key generation, keys
//!   wrapped to readers, and a `Blocks` that opens them for a reader. Uses `unixfs`,
//!   `store`.
//! - [`access`]: what strangers may read (the gateway's and Bitswap's rule).
//! - [`add`] / [`get`]: local files and trees into the store, and back out.
//! - [`car`]: CAR archives in and out, verified block by block.
//! - [`repo`]: a repo directory: identity, config, database, the lock that keeps it to
//!   one process.
//!
//! - [`disk`]: free space on the repo's disk (statvfs).
//! - [`fsck`]: checks every block reachable from a root.
//! - [`signed`]: a DAG-CBOR payload signed by the peer it names.
//! - [`head`]: a drive's signed head record `{peer, seq, root, time}`, with the owner's
//!   profile.
//! - [`profile`]: how a peer introduces itself: a signed profile, safe folder names
//!   from it, and the HELLO exchanged on connect (`/peerfs/hello/1.0.0`).
//! - [`vfs`]: the vocabulary `drive`, `peers` and `fuse` share: attributes, kinds,
//!   inode ranges, errors and their errno values. Uses `unixfs` only.
//! - [`drive`]: the mutable drive: inodes over a UnixFS tree, copy-on-write file
//!   contents, batched commits of new blocks plus a new head. Uses `unixfs`, `store`,
//!   `vfs`.
//! - [`fuse`]: the FUSE adapter: kernel requests to `drive` and `peers` calls, `vfs`
//!   errors to errno.
//! - [`net`]: the libp2p node: peer book, signed heads over GossipSub and
//!   `/peerfs/head/1`, verified block fetch with fallback over `/peerfs/block/1`.
//! - [`peers`]: followed peers' drives as read-only inode trees, kept current by
//!   their heads. Uses `net`, `unixfs`, `vfs`.
//! - [`share`]: sending items to a peer's inbox: signed offers and receipts on
//!   `/peerfs/offer/1.0.0`, the outbox and inbox kept on disk, who may send.
//! - [`outbox`]: `DIR/outbox/<peer>/`, files passed through to the repo, sent once
//!   written. Uses `vfs`.
//! - [`mirror`]: peers' drives kept in full, and who keeps mine: the saved list,
//!   signed statements on `/peerfs/replica/1.0.0`.
//! - [`pin`]: pinning a whole DAG so it stays, and `gc` of what nothing reaches.
//! - [`transfers`]: pins and deliveries as transfers the user pauses, resumes, cancels
//!   and prioritises; kept on disk.
//! - [`daemon`]: one process per repo: mounts, commits on an interval, answers the
//!   control socket. It and the CLI are the only modules that know everybody.

pub mod access;
pub mod add;
pub mod block;
pub mod car;
#[cfg(feature = "rocksdb")]
pub mod daemon;
pub mod disk;
pub mod drive;
pub mod find;
pub mod fsck;
pub mod fuse;
pub mod gateway;
pub mod get;
pub mod head;
pub mod mirror;
pub mod net;
pub mod outbox;
pub mod peers;
#[cfg(feature = "rocksdb")]
pub mod pin;
pub mod profile;
#[cfg(feature = "rocksdb")]
pub mod repo;
pub mod seal;
pub mod share;
pub mod signed;
pub mod store;
pub mod transfers;
pub mod unixfs;
pub mod vfs;
