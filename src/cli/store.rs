//! Where the content commands (`add`, `cat`, `ls`, `get`, `export`, `import`) find
//! blocks: the running daemon's, through a blocks session on its control socket, or
//! the repo opened directly when no daemon runs. The commands' code is the same
//! either way.

use std::path::Path;

use anyhow::{Context, Result};
use cid::Cid;

use peerfs::daemon::blocks::client::DaemonBlocks;
use peerfs::repo::Repo;
use peerfs::store::Blocks;
use peerfs::unixfs::Profile;

pub enum Store {
    /// Boxed: a repo is several times the size of a daemon connection.
    Local(Box<Repo>),
    Daemon(DaemonBlocks),
}

impl Store {
    /// The daemon's store if one runs for `repo_path`, else the repo itself. (A daemon
    /// still starting holds the repo before its socket answers: that gives "in use".)
    pub fn open(repo_path: &Path) -> Result<Store> {
        if let Some(daemon) = DaemonBlocks::connect(repo_path)? {
            return Ok(Store::Daemon(daemon));
        }
        Ok(Store::Local(Box::new(
            Repo::open(repo_path).context("opening the repo")?,
        )))
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
