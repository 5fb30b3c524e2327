//! Where the content commands (`add`, `cat`, `ls`, `get`, `export`, `import`) find
//! blocks: the running daemon's, through a blocks session on its control socket, or
//! the repo opened directly when no daemon runs. The commands' code is the same
//! either way.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use cid::Cid;

use peerfs::daemon::blocks::client::DaemonBlocks;
use peerfs::repo::{Repo, RepoError};
use peerfs::store::{Blocks, StoreError};
use peerfs::unixfs::Profile;

/// How long to wait for the socket of a daemon that holds the repo but is still
/// starting (it takes the repo's lock before it binds the socket).
const DAEMON_STARTING: Duration = Duration::from_secs(10);

pub enum Store {
    Local(Repo),
    Daemon(DaemonBlocks),
}

impl Store {
    /// The daemon's store if one runs for `repo_path`, else the repo itself.
    pub fn open(repo_path: &Path) -> Result<Store> {
        let start = Instant::now();
        loop {
            if let Some(daemon) = DaemonBlocks::connect(repo_path)? {
                return Ok(Store::Daemon(daemon));
            }
            match Repo::open(repo_path) {
                Ok(repo) => return Ok(Store::Local(repo)),
                Err(RepoError::Store(StoreError::InUse { .. }))
                    if start.elapsed() < DAEMON_STARTING =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(anyhow::Error::new(e).context("opening the repo")),
            }
        }
    }

    pub fn blocks(&self) -> &dyn Blocks {
        match self {
            Store::Local(repo) => repo.store(),
            Store::Daemon(daemon) => daemon,
        }
    }

    /// Pins `cid` under `label`, as `add` and `import` do for what they store.
    pub fn pin(&self, cid: &Cid, label: &str) -> Result<()> {
        match self {
            Store::Local(repo) => repo.store().pin(cid, label)?,
            Store::Daemon(daemon) => daemon.pin(cid, label)?,
        }
        Ok(())
    }

    /// The import profile config.toml sets.
    pub fn profile(&self) -> Profile {
        match self {
            Store::Local(repo) => repo.config().import.profile,
            Store::Daemon(daemon) => daemon.profile(),
        }
    }
}
