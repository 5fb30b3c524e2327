//! `peerfs find`: search my drive and the followed drives by name, type, size and age,
//! as `find` does on a disk; results are paths in the mount.

use std::io::BufRead;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::json;
use super::output::{self, outln};
use super::unexpected;
use peerfs::daemon::control::{self, ControlError, Request, Response};
use peerfs::find::{parse_kind, Newer, Query, SizeTest};

/// What the command line asked for.
pub struct Args {
    pub pattern: Option<String>,
    pub peers: Vec<String>,
    pub kind: Option<String>,
    pub size: Option<String>,
    pub newer: Option<String>,
    pub remote: bool,
    pub json: bool,
}

pub fn find(repo: &Path, args: Args) -> Result<()> {
    let query = query(&args)?;
    // Checked here too, so that a bad pattern is told before anything is walked.
    query.compile()?;
    let request = Request::Find {
        query,
        peers: args.peers,
        remote: args.remote,
    };
    let (stream, mut reader) = match control::send(repo, &request) {
        Ok(s) => s,
        Err(ControlError::NotRunning(_)) => {
            bail!("no daemon is running for this repo: `peerfs mount` starts one")
        }
        Err(e) => return Err(e.into()),
    };
    // A big drive's walk takes as long as it takes; progress lines keep coming.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(300)))
        .context("the control socket")?;
    let bar = super::progress::count("searching");
    let mut first = true;
    if args.json {
        outln!("[")?;
    }
    let mut line = String::new();
    let walked = loop {
        line.clear();
        if reader.read_line(&mut line).context("the control socket")? == 0 {
            bail!("the daemon stopped before the search ended");
        }
        match serde_json::from_str(&line) {
            Ok(Response::Found(hit)) => {
                let text = if args.json {
                    let sep = if first { "" } else { "," };
                    format!(
                        "{sep}{}",
                        serde_json::to_string(&json::FindMatch::from(hit))?
                    )
                } else {
                    hit.path
                };
                bar.suspend(|| outln!("{text}"))?;
                first = false;
                if output::closed() {
                    return Ok(());
                }
            }
            Ok(Response::Searching(w)) => bar.set_position(w.entries),
            Ok(Response::Searched(w)) => break w,
            Ok(Response::SearchNote { peer, note }) => {
                bar.suspend(|| eprintln!("peerfs: {peer}: {note}"));
            }
            Ok(Response::Error { message }) => bail!("{message}"),
            Ok(other) => return Err(unexpected(other)),
            Err(e) => bail!("unreadable answer from the daemon: {e}"),
        }
    };
    bar.finish_and_clear();
    if args.json {
        outln!("]")?;
    }
    if walked.unreadable > 0 {
        eprintln!(
            "peerfs: {} entries could not be fetched; what is below them was not searched",
            walked.unreadable
        );
    }
    Ok(())
}

fn query(args: &Args) -> Result<Query> {
    let modified_since = match &args.newer {
        Some(age) => {
            let Newer { secs } = age.parse()?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            Some(now.saturating_sub(secs) as i64)
        }
        None => None,
    };
    Ok(Query {
        pattern: args.pattern.clone(),
        kind: args.kind.as_deref().map(parse_kind).transpose()?,
        size: args
            .size
            .as_deref()
            .map(str::parse::<SizeTest>)
            .transpose()?,
        modified_since,
    })
}
