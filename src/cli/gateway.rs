//! `peerfs gateway`: the store over HTTP, in the foreground until Ctrl-C.

use std::sync::Arc;

use anyhow::{Context, Result};

use peerfs::gateway::{self, StoreAccess};
use peerfs::net::READERS_EVERYONE;
use peerfs::repo::Repo;

use super::output::outln;

pub fn gateway(repo: &Repo, listen: &str) -> Result<()> {
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
