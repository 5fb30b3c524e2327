//! `peerfs gateway`: the store over HTTP, in the foreground until Ctrl-C.

use std::sync::Arc;

use std::path::Path;

use anyhow::{bail, Context, Result};

use peerfs::daemon::blocks::client::DaemonBlocks;
use peerfs::gateway::{self, StoreAccess};
use peerfs::net::READERS_EVERYONE;
use peerfs::repo::Repo;

use super::output::outln;

pub fn gateway(repo_path: &Path, listen: &str) -> Result<()> {
    if DaemonBlocks::connect(repo_path)?.is_some() {
        bail!(
            "the repo's daemon runs (the drive is mounted) and holds the store: set \
             gateway = \"{listen}\" in {}/config.toml and mount again to have the daemon \
             serve it, or unmount first",
            repo_path.display()
        );
    }
    let repo = Repo::open(repo_path).context("opening the repo")?;
    let drive_open = repo.config().readers.iter().any(|r| r == READERS_EVERYONE);
    let access = Arc::new(StoreAccess::new(repo.shared_store(), drive_open));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the gateway's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen} (choose another with --listen)"))?;
        let addr = listener.local_addr()?;
        outln!("gateway listening on http://{addr}/ipfs/ (Ctrl-C stops it)")?;
        tokio::select! {
            served = gateway::serve(listener, access) => served.context("serving"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
