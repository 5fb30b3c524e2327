//! `peerfs send`, `peerfs outbox`, `peerfs inbox`: items to a peer's inbox, through the
//! running daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde::Serialize;

use peerfs::add::{add_path, AddObserver, AddOptions, Added};
use peerfs::daemon::control::{Request, Response};
use peerfs::share::items::{
    in_state_text, out_state_text, time_text, Incoming, OutState, Outgoing,
};
use peerfs::store::write_behind;

use super::output::{errln, outln};
use super::progress;
use super::store::Store;
use super::{ask, unexpected};

/// How often `send` asks how a delivery goes.
const POLL: Duration = Duration::from_millis(250);

#[derive(Args)]
pub struct SendArgs {
    /// Files or directories to send (each becomes one item)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The recipient: a followed peer's name, or a peer ID
    #[arg(long, value_name = "NAME")]
    to: String,
    /// A note the recipient sees with the item
    #[arg(long, value_name = "TEXT", default_value = "")]
    note: String,
    /// Return once queued, without waiting for delivery
    #[arg(long)]
    no_wait: bool,
}

/// Counts the bytes of the files added.
#[derive(Default)]
struct Counted(u64);

impl AddObserver for Counted {
    fn added(&mut self, _: &Added<'_>) {}
    fn bytes(&mut self, n: u64) {
        self.0 += n;
    }
    fn skipped(&mut self, path: &Path, why: &str) {
        errln!("peerfs: {}: {why}", path.display());
    }
}

fn not_running() -> anyhow::Error {
    anyhow!("no daemon is running: `peerfs mount` first (sending needs the network)")
}

pub fn send(args: SendArgs, repo: &Path) -> Result<()> {
    let store = Store::open(repo)?;
    let opts = AddOptions {
        import: store.profile().options(),
        recursive: true,
        preserve_mode: false,
        preserve_mtime: false,
    };
    let mut queued = Vec::new();
    for path in &args.paths {
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| anyhow!("{}: has no name to send it as", path.display()))?;
        let mut counted = Counted::default();
        let root = write_behind(store.blocks(), |sink| {
            Ok::<_, anyhow::Error>(add_path(path, &opts, sink, &mut counted)?)
        })?;
        store.pin(&root.cid, &format!("send {}", path.display()))?;
        let request = Request::Send {
            to: args.to.clone(),
            name,
            root: root.cid.to_string(),
            size: counted.0,
            note: args.note.clone(),
        };
        match ask(repo, request)?.ok_or_else(not_running)? {
            Response::Sent(item) => queued.push(item),
            other => return Err(unexpected(other)),
        }
    }
    drop(store);
    for item in &queued {
        outln!(
            "queued {} ({} bytes) for {} as {}",
            item.name,
            item.size,
            item.to_name,
            item.id
        )?;
    }
    if args.no_wait {
        return Ok(());
    }
    wait_delivered(repo, &queued)
}

/// Shows each item's delivery until all are delivered (or read), or one is refused.
fn wait_delivered(repo: &Path, queued: &[Outgoing]) -> Result<()> {
    let total = queued.iter().map(|i| i.size).sum::<u64>();
    let bar = progress::bytes(Some(total.max(1)), "delivering");
    loop {
        let items = match ask(repo, Request::Outbox)?.ok_or_else(not_running)? {
            Response::Outbox { items } => items,
            other => return Err(unexpected(other)),
        };
        let mut done = 0u64;
        let mut all = true;
        for q in queued {
            let Some(item) = items.iter().find(|i| i.id == q.id) else {
                bail!("{}: gone from the outbox", q.name);
            };
            match &item.state {
                OutState::Delivered { .. } | OutState::Read { .. } => done += item.size,
                OutState::Refused { reason } => {
                    bar.finish_and_clear();
                    bail!("{} refused by {}: {reason}", item.name, item.to_name)
                }
                OutState::Delivering { percent } => {
                    done += item.size * u64::from(*percent) / 100;
                    all = false;
                }
                OutState::Queued => all = false,
            }
        }
        bar.set_position(done);
        if all {
            bar.finish_and_clear();
            for q in queued {
                outln!("delivered {} to {}", q.name, q.to_name)?;
            }
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

#[derive(Serialize)]
struct OutItem<'a> {
    #[serde(flatten)]
    item: &'a Outgoing,
    /// As `peerfs outbox` prints it: `queued`, `delivering N%`, `delivered TIME`, ...
    status: String,
}

#[derive(Serialize)]
struct InItem<'a> {
    #[serde(flatten)]
    item: &'a Incoming,
    status: String,
}

pub fn outbox(repo: &Path, json: bool) -> Result<()> {
    let items = match ask(repo, Request::Outbox)?.ok_or_else(not_running)? {
        Response::Outbox { items } => items,
        other => return Err(unexpected(other)),
    };
    if json {
        let shown: Vec<OutItem<'_>> = items
            .iter()
            .map(|item| OutItem {
                item,
                status: out_state_text(&item.state),
            })
            .collect();
        return super::json::print(&serde_json::json!({ "items": shown }));
    }
    for i in &items {
        outln!(
            "{}\t{}\t{}\t{}\t{}",
            i.to_name,
            i.name,
            i.size,
            time_text(i.created_ms),
            out_state_text(&i.state)
        )?;
    }
    Ok(())
}

pub fn inbox(repo: &Path, json: bool) -> Result<()> {
    let items = match ask(repo, Request::Inbox)?.ok_or_else(not_running)? {
        Response::Inbox { items } => items,
        other => return Err(unexpected(other)),
    };
    if json {
        let shown: Vec<InItem<'_>> = items
            .iter()
            .map(|item| InItem {
                item,
                status: in_state_text(&item.state),
            })
            .collect();
        return super::json::print(&serde_json::json!({ "items": shown }));
    }
    for i in &items {
        outln!(
            "{}\t{}\t{}\t{}\t{}",
            i.from_name,
            i.shown_name.as_deref().unwrap_or(&i.name),
            i.size,
            time_text(i.offered_ms),
            in_state_text(&i.state)
        )?;
    }
    Ok(())
}
