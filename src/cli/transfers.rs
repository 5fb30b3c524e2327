//! `transfers`: the pins and inbox deliveries the daemon runs, with their progress per
//! source, and `transfers pause|resume|cancel|priority ID`.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Subcommand;
use indicatif::HumanBytes;
use serde::Serialize;

use super::output::outln;
use super::{ask, json, unexpected};
use peerfs::daemon::control::{Request, Response};
use peerfs::net::peerbook::PeerBook;
use peerfs::transfers::{Change, Priority, State, Transfer};

#[derive(Subcommand)]
pub enum TransferCommand {
    /// Stop asking for its blocks (what is on the way still lands); stays paused across
    /// a restart
    Pause { id: u64 },
    /// Go on from where it was (what is here is not fetched again)
    Resume { id: u64 },
    /// End it: a pin is not made (the blocks it brought stay until `gc`), a delivery is
    /// refused and the sender told
    Cancel { id: u64 },
    /// Which transfer gets the bandwidth first: low, normal or high
    Priority {
        id: u64,
        #[arg(value_name = "low|normal|high")]
        level: Priority,
    },
}

/// One element of `peerfs transfers --json`.
#[derive(Serialize)]
pub struct JsonTransfer {
    pub id: u64,
    /// "pin" or "delivery".
    pub kind: peerfs::transfers::Kind,
    /// A pin's path in the mount (or CID); a delivery's name and sender.
    pub what: String,
    pub cid: String,
    /// Whose drive a pin is in, or who sent a delivery: peer ID (null: a bare CID).
    pub peer: Option<String>,
    /// "queued", "running", "paused", "done" or "failed".
    pub state: State,
    /// Why it failed; else null.
    pub error: Option<String>,
    /// "low", "normal" or "high".
    pub priority: Priority,
    /// Blocks and bytes of it here so far.
    pub blocks: u64,
    pub bytes: u64,
    /// Its size as its root declares it; null until the root is here.
    pub total_bytes: Option<u64>,
    /// Who sent its blocks, most bytes first.
    pub sources: Vec<JsonSource>,
    /// RFC 3339, UTC.
    pub started: String,
    pub finished: Option<String>,
}

#[derive(Serialize)]
pub struct JsonSource {
    pub peer_id: String,
    /// Its name in the peer book; null when not followed.
    pub name: Option<String>,
    pub blocks: u64,
    pub bytes: u64,
    /// How it sent them: "peerfs" (our protocol) or "bitswap".
    pub protocol: &'static str,
}

impl JsonSource {
    /// How it reads in a listing: its name, or its ID and, over Bitswap, so.
    fn label(&self) -> String {
        let who = self.name.as_deref().unwrap_or(&self.peer_id);
        if self.protocol == "bitswap" {
            format!("{who} (bitswap)")
        } else {
            who.to_string()
        }
    }
}

impl JsonTransfer {
    fn from(t: Transfer, book: Option<&PeerBook>) -> JsonTransfer {
        let name = |id: &str| {
            let entry = book?.entries().iter().find(|e| e.id == id)?;
            Some(entry.name.clone())
        };
        JsonTransfer {
            id: t.id,
            kind: t.kind,
            what: t.what,
            cid: t.cid,
            peer: t.peer,
            state: t.state,
            error: t.error,
            priority: t.priority,
            blocks: t.blocks,
            bytes: t.bytes,
            total_bytes: t.total_bytes,
            sources: t
                .sources
                .into_iter()
                .map(|s| JsonSource {
                    name: name(&s.peer),
                    peer_id: s.peer,
                    blocks: s.blocks,
                    bytes: s.bytes,
                    protocol: if s.bitswap { "bitswap" } else { "peerfs" },
                })
                .collect(),
            started: json::rfc3339_ms(t.started_ms),
            finished: t.finished_ms.map(json::rfc3339_ms),
        }
    }
}

pub fn run(repo: &Path, command: Option<TransferCommand>, as_json: bool) -> Result<()> {
    let change = match command {
        None => return list(repo, as_json),
        Some(TransferCommand::Pause { id }) => (id, Change::Pause),
        Some(TransferCommand::Resume { id }) => (id, Change::Resume),
        Some(TransferCommand::Cancel { id }) => (id, Change::Cancel),
        Some(TransferCommand::Priority { id, level }) => (id, Change::Priority(level)),
    };
    let (id, change) = change;
    let Some(answer) = ask(repo, Request::Transfer { id, change })? else {
        bail!("no daemon is running: transfers run only in one");
    };
    let Response::Transfer(t) = answer else {
        return Err(unexpected(answer));
    };
    let book = PeerBook::load(repo).ok();
    let t = JsonTransfer::from(t, book.as_ref());
    if as_json {
        return json::print(&t);
    }
    let done = match change {
        Change::Pause => "paused",
        Change::Resume => "resumed",
        Change::Cancel => "cancelled",
        Change::Priority(_) => "reprioritised",
    };
    outln!("{done} transfer {id}: {}", line(&t))?;
    Ok(())
}

fn list(repo: &Path, as_json: bool) -> Result<()> {
    let transfers = match ask(repo, Request::Transfers)? {
        Some(Response::Transfers { transfers }) => transfers,
        Some(other) => return Err(unexpected(other)),
        // Without a daemon, what is kept on disk (nothing runs).
        None => std::fs::read(repo.join(peerfs::transfers::FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| serde_json::from_value(v.get("transfers")?.clone()).ok())
            .unwrap_or_default(),
    };
    let book = PeerBook::load(repo).ok();
    let all: Vec<JsonTransfer> = transfers
        .into_iter()
        .map(|t| JsonTransfer::from(t, book.as_ref()))
        .collect();
    if as_json {
        return json::print(&all);
    }
    if all.is_empty() {
        outln!("no transfers (`peerfs pin` and deliveries to the inbox are)")?;
    }
    for t in &all {
        outln!("{:>4}  {}", t.id, line(t))?;
        for s in &t.sources {
            outln!(
                "        from {}: {} blocks, {}",
                s.label(),
                s.blocks,
                HumanBytes(s.bytes)
            )?;
        }
    }
    Ok(())
}

/// A transfer in one line: kind, state, priority, how far, what.
fn line(t: &JsonTransfer) -> String {
    let state = match (&t.state, &t.error) {
        (State::Failed, Some(e)) => format!("failed: {e}"),
        (s, _) => serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    let kind = match t.kind {
        peerfs::transfers::Kind::Pin => "pin",
        peerfs::transfers::Kind::Delivery => "delivery",
    };
    format!(
        "{kind:<8}  {state:<8}  {:<6}  {}  {}",
        t.priority,
        done(t.blocks, t.bytes, t.total_bytes),
        t.what
    )
}

fn done(blocks: u64, bytes: u64, total: Option<u64>) -> String {
    match total {
        Some(total) if total > 0 => format!(
            "{} of {} ({}%, {blocks} blocks)",
            HumanBytes(bytes),
            HumanBytes(total),
            (bytes.saturating_mul(100) / total).min(100)
        ),
        _ => format!("{} ({blocks} blocks)", HumanBytes(bytes)),
    }
}

/// A verbose pin's line: how far, and from whom.
pub fn sources_line(t: &Transfer, book: Option<&PeerBook>) -> String {
    let t = JsonTransfer::from(t.clone(), book);
    let from: Vec<String> = t
        .sources
        .iter()
        .map(|s| format!("{} {} blocks {}", s.label(), s.blocks, HumanBytes(s.bytes)))
        .collect();
    format!(
        "transfer {}: {}; from {}",
        t.id,
        done(t.blocks, t.bytes, t.total_bytes),
        if from.is_empty() {
            "nobody yet".to_string()
        } else {
            from.join(", ")
        }
    )
}
