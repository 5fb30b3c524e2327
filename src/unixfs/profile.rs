//! Import profiles: the settings that decide which CID a given content gets.

use std::fmt;
use std::str::FromStr;

use cid::Version;

/// How the importer decides that a directory is too big for one node and must be a HAMT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardStrategy {
    /// Sum of (name bytes + CID bytes) over the links (Kubo's classic estimate).
    LinksBytes,
    /// The exact encoded size of the flat directory node (IPIP-499, unixfs-v1-2025).
    BlockBytes,
}

/// A directory whose estimate is strictly greater than this becomes a HAMT.
pub const SHARD_THRESHOLD: u64 = 256 * 1024;
/// Largest chunk we write: Kubo's limit, and it keeps every block under 2 MiB.
pub const MAX_CHUNK_SIZE: u64 = 1024 * 1024;
/// HAMT fanout written by every profile: 256 slots, one byte of the hash per level.
pub const HAMT_FANOUT: u64 = 256;
/// Multihash code of murmur3-x64-64, the HAMT hash function.
pub const HAMT_HASH_MURMUR3: u64 = 0x22;

/// The two named profiles of IPIP-499.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// CIDv1, raw leaves, 1 MiB chunks, 1024 links per node, HAMT by block size.
    #[default]
    V1_2025,
    /// Kubo's classic `ipfs add`: CIDv0, dag-pb leaves, 256 KiB chunks, 174 links.
    V0_2015,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unixfs-v1-2025" => Ok(Profile::V1_2025),
            "unixfs-v0-2015" => Ok(Profile::V0_2015),
            _ => Err(format!(
                "unknown profile {s:?} (known: unixfs-v1-2025, unixfs-v0-2015)"
            )),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::V1_2025 => "unixfs-v1-2025",
            Profile::V0_2015 => "unixfs-v0-2015",
        })
    }
}

/// Everything that shapes the DAG of imported content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    pub cid_version: Version,
    pub raw_leaves: bool,
    pub chunk_size: u64,
    pub max_links: usize,
    pub shard_strategy: ShardStrategy,
    pub shard_threshold: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Profile::default().options()
    }
}

impl Profile {
    pub fn options(self) -> ImportOptions {
        match self {
            Profile::V1_2025 => ImportOptions {
                cid_version: Version::V1,
                raw_leaves: true,
                chunk_size: 1024 * 1024,
                max_links: 1024,
                shard_strategy: ShardStrategy::BlockBytes,
                shard_threshold: SHARD_THRESHOLD,
            },
            Profile::V0_2015 => ImportOptions {
                cid_version: Version::V0,
                raw_leaves: false,
                chunk_size: 256 * 1024,
                max_links: 174,
                shard_strategy: ShardStrategy::LinksBytes,
                shard_threshold: SHARD_THRESHOLD,
            },
        }
    }
}

/// Overrides on top of a profile, as `ipfs add` takes them.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub cid_version: Option<u8>,
    pub raw_leaves: Option<bool>,
    pub chunk_size: Option<u64>,
    pub max_links: Option<usize>,
}

impl ImportOptions {
    /// Applies overrides the way Kubo does: `--cid-version 1` implies raw leaves unless
    /// `--raw-leaves` says otherwise.
    pub fn with(mut self, o: &Overrides) -> Result<ImportOptions, String> {
        if let Some(v) = o.cid_version {
            self.cid_version = match v {
                0 => Version::V0,
                1 => Version::V1,
                _ => return Err(format!("unknown CID version {v} (0 or 1)")),
            };
            if v == 1 && o.raw_leaves.is_none() {
                self.raw_leaves = true;
            }
        }
        if let Some(r) = o.raw_leaves {
            self.raw_leaves = r;
        }
        if let Some(c) = o.chunk_size {
            if c == 0 || c > MAX_CHUNK_SIZE {
                return Err(format!("chunk size {c} is outside 1..={MAX_CHUNK_SIZE}"));
            }
            self.chunk_size = c;
        }
        if let Some(m) = o.max_links {
            if m < 2 {
                return Err(format!("max links {m} is below 2"));
            }
            self.max_links = m;
        }
        Ok(self)
    }
}
