//! `mirror add`, `mirror rm` and `mirrors`: the drives this node keeps in full.
//! They need the running daemon: it is the one that fetches.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::output::outln;
use super::{ask, json, unexpected};
use peerfs::daemon::control::{MirrorInfo, Request, Response};

/// One element of `peerfs mirrors --json`.
#[derive(Serialize)]
pub struct Mirror {
    pub name: String,
    pub peer_id: String,
    /// The newest head held in full; null before the first is.
    pub held_seq: Option<u64>,
    pub held_root: Option<String>,
    /// Bytes of that head.
    pub bytes: u64,
    /// Bytes a head may have at most; null: no limit.
    pub quota: Option<u64>,
    /// The newest head known of the drive.
    pub newest_seq: Option<u64>,
    /// "synced", "fetching N%", "over quota" or "behind".
    pub state: String,
    /// Whether the owner took the signed statement that `held_seq` is held here.
    pub owner_told: bool,
}

impl From<&MirrorInfo> for Mirror {
    fn from(m: &MirrorInfo) -> Mirror {
        Mirror {
            name: m.name.clone(),
            peer_id: m.peer_id.clone(),
            held_seq: m.held_seq,
            held_root: m.held_root.clone(),
            bytes: m.bytes,
            quota: m.quota,
            newest_seq: m.newest_seq,
            state: m.state.clone(),
            owner_told: m.owner_told,
        }
    }
}

fn not_running() -> anyhow::Error {
    anyhow!("no daemon is running: mirrors are kept by the daemon (`peerfs mount MOUNTPOINT`)")
}

pub fn add(repo_path: &Path, name: &str, quota: Option<&str>) -> Result<()> {
    let quota = match quota {
        Some(q) => Some(
            q.parse::<bytesize::ByteSize>()
                .map_err(|e| anyhow!("--quota {q}: {e}"))?
                .as_u64(),
        ),
        None => None,
    };
    let req = Request::MirrorAdd {
        name: name.to_string(),
        quota,
    };
    match ask(repo_path, req)? {
        Some(Response::MirrorAdded(m)) => {
            outln!("mirroring {} ({}): {}", m.name, m.peer_id, m.state)?;
            Ok(())
        }
        Some(other) => Err(unexpected(other)),
        None => Err(not_running()),
    }
}

pub fn rm(repo_path: &Path, name: &str) -> Result<()> {
    let req = Request::MirrorRm {
        name: name.to_string(),
    };
    match ask(repo_path, req)? {
        Some(Response::MirrorRemoved(m)) => {
            outln!(
                "no longer mirroring {} ({}); its blocks go at the next gc",
                m.name,
                m.peer_id
            )?;
            Ok(())
        }
        Some(other) => Err(unexpected(other)),
        None => Err(not_running()),
    }
}

pub fn list(repo_path: &Path, json: bool) -> Result<()> {
    let mirrors = match ask(repo_path, Request::Mirrors)? {
        Some(Response::Mirrors { mirrors }) => mirrors,
        Some(other) => return Err(unexpected(other)),
        None => bail!(not_running()),
    };
    if json {
        return json::print(&mirrors.iter().map(Mirror::from).collect::<Vec<_>>());
    }
    if mirrors.is_empty() {
        outln!("no mirrors (add one with `peerfs mirror add NAME`)")?;
    }
    for m in &mirrors {
        let held = match (m.held_seq, m.newest_seq) {
            (Some(h), Some(n)) => format!("head {h} of {n} held"),
            (Some(h), None) => format!("head {h} held"),
            (None, _) => "no head held yet".to_string(),
        };
        let quota = m.quota.map_or_else(
            || "no quota".to_string(),
            |q| format!("quota {}", indicatif::HumanBytes(q)),
        );
        outln!(
            "{} ({}): {}, {held}, {} kept, {quota}",
            m.name,
            m.peer_id,
            m.state,
            indicatif::HumanBytes(m.bytes)
        )?;
    }
    Ok(())
}
