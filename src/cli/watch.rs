//! `peerfs watch`: the daemon's live feed, one line per event, until interrupted.

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::output::{self, outln};
use super::unexpected;
use peerfs::daemon::control::{self, ControlError, Request, Response};
use peerfs::daemon::feed::{Entry, FeedEvent, What};

pub fn watch(repo: &Path, peers: Vec<String>, json: bool) -> Result<()> {
    let (stream, mut reader) = match control::send(repo, &Request::Watch { peers }) {
        Ok(s) => s,
        Err(ControlError::NotRunning(_)) => {
            bail!("no daemon is running for this repo: `peerfs mount` starts one")
        }
        Err(e) => return Err(e.into()),
    };
    // Events come when they come.
    stream
        .set_read_timeout(None)
        .context("the control socket")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).context("the control socket")? == 0 {
            bail!("the daemon stopped");
        }
        let event = match serde_json::from_str(&line) {
            Ok(Response::Event(e)) => e,
            Ok(Response::Error { message }) => bail!("{message}"),
            Ok(other) => return Err(unexpected(other)),
            Err(e) => bail!("unreadable event from the daemon: {e}"),
        };
        if json {
            outln!("{}", serde_json::to_string(&event)?)?;
        } else {
            outln!("{}", text(&event))?;
        }
        if output::closed() {
            return Ok(());
        }
    }
}

/// One event as a line for a person.
fn text(e: &FeedEvent) -> String {
    let what = match &e.what {
        What::Watching => "watching".to_string(),
        What::Head {
            peer, seq, root, ..
        } => format!("head     {peer} seq {seq} {root}"),
        What::Added(entry) => change("added", entry),
        What::Changed(entry) => change("changed", entry),
        What::Removed(entry) => change("removed", entry),
        What::Incomplete { peer, seq, why } => {
            format!("partial  {peer} seq {seq}: not every change listed ({why})")
        }
        What::Connected { peer, .. } => format!("connected {peer}"),
        What::Disconnected { peer, .. } => format!("left     {peer}"),
        What::Arrived {
            peer, name, size, ..
        } => format!("arrived  inbox/{peer}/{name} ({size} bytes)"),
        What::Delivered { peer, name, .. } => format!("delivered {name} to {peer}"),
        What::Read { peer, name, .. } => format!("read     {name} by {peer}"),
        What::Refused {
            peer, name, reason, ..
        } => format!("refused  {name} by {peer}: {reason}"),
        What::Missed { count } => format!("missed   {count} events (this watch fell behind)"),
    };
    format!("{} {what}", e.time)
}

fn change(verb: &str, e: &Entry) -> String {
    let size = e
        .size
        .map(|s| format!(", {}", indicatif::HumanBytes(s)))
        .unwrap_or_default();
    format!(
        "{verb:<8} {}/{} ({}{size}) {}",
        e.peer, e.path, e.kind, e.cid
    )
}
