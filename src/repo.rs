//! A repo: the directory that holds one node's identity, config and block database.
//!
//! ```text
//! $PEERFS_HOME/            (default ~/.local/share/peerfs)
//!   identity.key           ed25519 keypair, libp2p protobuf encoding, mode 0600
//!   config.toml            settings
//!   db/                    RocksDB (see store::rocks)
//!   repo.lock              held (flock) by the one process using the repo; holds its pid
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};

use crate::store::rocks::RocksStore;
use crate::store::StoreError;
use crate::unixfs::Profile;

const IDENTITY_FILE: &str = "identity.key";
const CONFIG_FILE: &str = "config.toml";
const DB_DIR: &str = "db";
const LOCK_FILE: &str = "repo.lock";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0} is already a peerfs repo")]
    Exists(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Settings kept in `config.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Multiaddrs the node listens on (TCP and QUIC).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Find peers on the local network by multicast DNS.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// Who may read my drive: `"following"` (the peers in my peer book, the default),
    /// `"*"` (everyone), peer IDs and peer-book names, in a list or alone.
    #[serde(default = "default_readers", deserialize_with = "one_or_many")]
    pub readers: Vec<String>,
    /// How long a read waits for a block nobody delivers before it fails with EIO.
    #[serde(default = "default_fetch_timeout", with = "duration_text")]
    pub fetch_timeout: std::time::Duration,
    /// Room for peers' blocks fetched on demand; the least recently used go first.
    #[serde(default = "default_cache_size")]
    pub cache_size: bytesize::ByteSize,
    /// Space the daemon leaves free on the repo's disk: writes beyond it get ENOSPC,
    /// before RocksDB itself runs out (which it does not recover from while running).
    #[serde(default = "default_min_disk_free")]
    pub min_disk_free: bytesize::ByteSize,
    /// The daemon deletes the blocks of old file versions once this much has been
    /// written since it last did (or once the store's size has, if that is more).
    #[serde(default = "default_sweep_after")]
    pub sweep_after: bytesize::ByteSize,
    /// Multiaddrs (with `/p2p/…`) of DHT nodes to join at start.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Serve the DHT for others (store their records, answer their lookups). Off for a
    /// node others cannot reach (a laptop behind NAT): it still looks things up and
    /// announces what it holds.
    #[serde(default = "yes")]
    pub dht_server: bool,
    /// Most connections to other nodes; followed peers are always let in, and do not
    /// count.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Let other local users into the mount (FUSE `allow_other`; for a user who is not
    /// root it needs `user_allow_other` in /etc/fuse.conf). Permissions are then the
    /// kernel's usual checks against each entry's mode.
    #[serde(default)]
    pub allow_other: bool,
    /// Where the daemon serves the store as an IPFS HTTP gateway (`"127.0.0.1:8080"`);
    /// none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Most inodes of peers' drives the daemon keeps (about 1 KiB each); past it, the
    /// least recently used directories are dropped from the kernel's cache and load
    /// again on next use.
    #[serde(default = "default_peer_inode_limit")]
    pub peer_inode_limit: usize,
    /// Most entries of a peer's directory the daemon lists (it holds a listing whole,
    /// about 1 KiB an entry); a larger one fails to list with EFBIG, and the log says
    /// why.
    #[serde(default = "default_peer_listing_limit")]
    pub peer_listing_limit: usize,
    /// Relay for others: `"auto"` (when AutoNAT finds this node public), `"on"`, `"off"`.
    #[serde(default = "default_relay_server")]
    pub relay_server: String,
    /// Relays to keep a reservation on (multiaddrs ending in /p2p/PEERID): behind NAT,
    /// others reach this node through them.
    #[serde(default)]
    pub relays: Vec<String>,
    /// What one relayed circuit of a friend (a peer I follow, or one that follows me)
    /// may carry through this node, and for how long; strangers get libp2p's defaults
    /// (128 KiB, 2 minutes).
    #[serde(default = "default_relay_circuit_bytes")]
    pub relay_circuit_bytes: bytesize::ByteSize,
    #[serde(default = "default_relay_circuit_duration", with = "duration_text")]
    pub relay_circuit_duration: std::time::Duration,
    /// Circuits through this node at once, at most.
    #[serde(default = "default_relay_circuits")]
    pub relay_circuits: usize,
    /// Ask the home router for a port mapping (UPnP).
    #[serde(default)]
    pub upnp: bool,
    /// Serve IPFS nodes over Bitswap what strangers may read (as the gateway does).
    #[serde(default = "yes")]
    pub bitswap: bool,
    /// Take part in the IPFS DHTs (`/ipfs/kad/1.0.0` and the LAN one): provide the roots
    /// Bitswap serves, find providers of CIDs fetched.
    #[serde(default)]
    pub ipfs_dht: bool,
    /// Who may send items to my inbox: `"following"` (the default), `"*"`, peer-book
    /// names and peer IDs, in a list or alone.
    #[serde(default = "default_readers", deserialize_with = "one_or_many")]
    pub accept_from: Vec<String>,
    /// Bytes one sender may have in my inbox, at most.
    #[serde(default = "default_inbox_quota")]
    pub inbox_quota: bytesize::ByteSize,
    /// Bytes one item sent to me may have, at most.
    #[serde(default = "default_inbox_max_item")]
    pub inbox_max_item: bytesize::ByteSize,
    /// Tell a sender when I first read an item it sent.
    #[serde(default = "yes")]
    pub read_receipts: bool,
    /// `status` warns when fewer peers than this hold my newest head in full.
    #[serde(default)]
    pub min_replicas: usize,
    /// Tell peers whom I follow (peer IDs, profile names, addresses) in my HELLO, so
    /// that they can suggest them (`peerfs suggestions`).
    #[serde(default)]
    pub share_following: bool,
    #[serde(default)]
    pub import: ImportConfig,
    /// Bytes a second this node serves blocks at, to all peers together (0: no limit).
    #[serde(default)]
    pub upload_rate: bytesize::ByteSize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            mdns: true,
            readers: default_readers(),
            fetch_timeout: default_fetch_timeout(),
            cache_size: default_cache_size(),
            min_disk_free: default_min_disk_free(),
            sweep_after: default_sweep_after(),
            bootstrap: Vec::new(),
            dht_server: true,
            max_connections: default_max_connections(),
            allow_other: false,
            gateway: None,
            peer_inode_limit: default_peer_inode_limit(),
            peer_listing_limit: default_peer_listing_limit(),
            relay_server: default_relay_server(),
            relays: Vec::new(),
            relay_circuit_bytes: default_relay_circuit_bytes(),
            relay_circuit_duration: default_relay_circuit_duration(),
            relay_circuits: default_relay_circuits(),
            upnp: false,
            bitswap: true,
            ipfs_dht: false,
            accept_from: default_readers(),
            inbox_quota: default_inbox_quota(),
            inbox_max_item: default_inbox_max_item(),
            read_receipts: true,
            min_replicas: 0,
            share_following: false,
            import: ImportConfig::default(),
            upload_rate: bytesize::ByteSize::b(0),
        }
    }
}

/// peerfs's own port, beside IPFS's 4001.
fn default_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/tcp/4011".into(),
        "/ip4/0.0.0.0/udp/4011/quic-v1".into(),
    ]
}

fn default_sweep_after() -> bytesize::ByteSize {
    bytesize::ByteSize::gib(1)
}

fn yes() -> bool {
    true
}

/// Readers of a drive are the peers its owner follows, unless the owner says more:
/// with mDNS on, anyone on the LAN could otherwise read it.
fn default_readers() -> Vec<String> {
    vec![crate::net::READERS_FOLLOWING.into()]
}

/// A setting written as one value or a list of them: `readers = "following"` and
/// `readers = ["following", "carol"]` both read.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn default_fetch_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_relay_server() -> String {
    "auto".into()
}

fn default_relay_circuit_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::b(crate::net::relay::FriendLimits::default().circuit_bytes)
}

fn default_relay_circuit_duration() -> std::time::Duration {
    crate::net::relay::FriendLimits::default().circuit_duration
}

fn default_relay_circuits() -> usize {
    crate::net::relay::FriendLimits::default().circuits
}

fn default_max_connections() -> u32 {
    256
}

fn default_peer_inode_limit() -> usize {
    50_000
}

fn default_peer_listing_limit() -> usize {
    crate::unixfs::LISTING_LIMIT
}

fn default_inbox_quota() -> bytesize::ByteSize {
    bytesize::ByteSize::gib(10)
}

fn default_inbox_max_item() -> bytesize::ByteSize {
    bytesize::ByteSize::gib(4)
}

fn default_cache_size() -> bytesize::ByteSize {
    bytesize::ByteSize::gib(10)
}

/// Two memtables' worth: a flush of what is in memory must still fit.
fn default_min_disk_free() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(256)
}

/// Durations as people write them: "30s", "2m".
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime::parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Default import profile: "unixfs-v1-2025" or "unixfs-v0-2015".
    #[serde(default, with = "profile_name")]
    pub profile: Profile,
}

mod profile_name {
    use super::Profile;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Profile, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Profile, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub struct Repo {
    root: PathBuf,
    store: Arc<RocksStore>,
    keypair: Keypair,
    config: Config,
    /// Held for the repo's lifetime; the flock goes with the descriptor.
    _lock: File,
}

impl Repo {
    /// `$PEERFS_HOME`, else `~/.local/share/peerfs`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("PEERFS_HOME").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        home.join(".local/share/peerfs")
    }

    /// Creates a repo: a new identity, a default config, an empty database.
    pub fn init(root: &Path) -> Result<Repo, RepoError> {
        if root.join(IDENTITY_FILE).exists() {
            return Err(RepoError::Exists(root.to_path_buf()));
        }
        fs::create_dir_all(root).map_err(io_err(root))?;
        let lock = lock(root)?;
        let keypair = Keypair::generate_ed25519();
        let encoded = keypair
            .to_protobuf_encoding()
            .map_err(|e| RepoError::Invalid {
                path: root.join(IDENTITY_FILE),
                message: e.to_string(),
            })?;
        write_new(&root.join(IDENTITY_FILE), &encoded, 0o600)?;
        let config = Config::default();
        let text = toml::to_string_pretty(&config).map_err(|e| RepoError::Invalid {
            path: root.join(CONFIG_FILE),
            message: e.to_string(),
        })?;
        write_new(&root.join(CONFIG_FILE), text.as_bytes(), 0o644)?;
        Repo::assemble(root, lock, keypair, config, true)
    }

    /// Opens an existing repo, taking its lock.
    pub fn open(root: &Path) -> Result<Repo, RepoError> {
        let key_path = root.join(IDENTITY_FILE);
        if !key_path.exists() {
            return Err(StoreError::NoRepo(root.display().to_string()).into());
        }
        let lock = lock(root)?;
        let key_bytes = fs::read(&key_path).map_err(io_err(&key_path))?;
        let keypair =
            Keypair::from_protobuf_encoding(&key_bytes).map_err(|e| RepoError::Invalid {
                path: key_path.clone(),
                message: format!("not an identity key: {e}"),
            })?;
        let config_path = root.join(CONFIG_FILE);
        let config = match fs::read_to_string(&config_path) {
            Ok(text) => toml::from_str(&text).map_err(|e| RepoError::Invalid {
                path: config_path,
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(io_err(&config_path)(e)),
        };
        Repo::assemble(root, lock, keypair, config, false)
    }

    /// Opens the database (creating it for `init`) once the lock is held.
    fn assemble(
        root: &Path,
        lock: File,
        keypair: Keypair,
        config: Config,
        create: bool,
    ) -> Result<Repo, RepoError> {
        let store = Arc::new(RocksStore::open(&root.join(DB_DIR), create)?);
        Ok(Repo {
            root: root.to_path_buf(),
            store,
            keypair,
            config,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn store(&self) -> &RocksStore {
        &self.store
    }

    /// A shared handle on the store, for the drive and the daemon's threads.
    pub fn shared_store(&self) -> Arc<RocksStore> {
        Arc::clone(&self.store)
    }

    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RepoError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(path))
}

/// Takes the repo's exclusive lock, or says which process holds it.
fn lock(root: &Path) -> Result<File, RepoError> {
    let path = root.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::InUse {
                path: root.display().to_string(),
                pid: holder_pid(&mut f),
            }
            .into());
        }
        return Err(io_err(&path)(err));
    }
    // Overwrite in place, then trim: the file is never empty while we hold the lock.
    let pid = format!("{}\n", std::process::id());
    f.write_all_at(pid.as_bytes(), 0)
        .and_then(|_| f.set_len(pid.len() as u64))
        .map_err(io_err(&path))?;
    Ok(f)
}

/// The pid written in a held lock file. A holder that has just taken the lock may not
/// have written it yet, so an empty file is read again for a moment.
fn holder_pid(f: &mut File) -> String {
    for _ in 0..50 {
        let mut pid = String::new();
        if f.rewind().is_ok() && f.read_to_string(&mut pid).is_ok() && !pid.trim().is_empty() {
            return pid.trim().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "unknown".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readers(toml_text: &str) -> Vec<String> {
        toml::from_str::<Config>(toml_text)
            .expect("config parses")
            .readers
    }

    #[test]
    fn readers_default_to_the_peers_i_follow_and_old_configs_keep_their_meaning() {
        assert_eq!(readers(""), ["following"]);
        assert_eq!(readers("readers = [\"*\"]"), ["*"]);
        assert_eq!(readers("readers = \"*\""), ["*"]);
        assert_eq!(readers("readers = \"following\""), ["following"]);
        assert_eq!(
            readers("readers = [\"following\", \"carol\"]"),
            ["following", "carol"]
        );
        let written = toml::to_string_pretty(&Config::default()).unwrap();
        assert!(written.contains("readers = [\"following\"]"), "{written}");
    }
}
