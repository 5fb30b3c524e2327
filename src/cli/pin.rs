//! `pin`, `unpin`, `pins` and `gc`. A pin fetches through the running daemon when there
//! is one; without it, only what the store already holds can be pinned. `gc` with the
//! daemon running frees peers' cached blocks; all the rest needs the repo to itself.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cid::Cid;

use std::time::{Duration, Instant};

use super::output::{errln, outln};
use super::{ask, json, progress, unexpected};
use peerfs::daemon::control::{self, ControlError, Request, Response};
use peerfs::net::peerbook::{PeerBook, PeerEntry};
use peerfs::pin::{self, PinError};
use peerfs::repo::Repo;
use peerfs::transfers::{Priority, Transfer};
use peerfs::vfs::layout::{CID_XATTR, PEERS_DIR};

/// What the user named: a CID (bare or `/ipfs/CID`), or a path in a peerfs mount.
enum Target {
    Cid(Cid),
    Path { path: PathBuf, cid: Cid },
}

impl Target {
    fn parse(arg: &str) -> Result<Target> {
        if let Ok(cid) = arg.trim_start_matches("/ipfs/").parse::<Cid>() {
            return Ok(Target::Cid(cid));
        }
        let path = std::fs::canonicalize(arg)
            .with_context(|| format!("{arg}: neither a CID nor an existing path"))?;
        let cid = cid_of_path(&path)?;
        Ok(Target::Path { path, cid })
    }

    fn cid(&self) -> Cid {
        match self {
            Target::Cid(c) | Target::Path { cid: c, .. } => *c,
        }
    }

    fn label(&self) -> String {
        match self {
            Target::Cid(c) => c.to_string(),
            Target::Path { path, .. } => path.display().to_string(),
        }
    }
}

/// Reads `user.peerfs.cid` of a path in the mount.
pub(crate) fn cid_of_path(path: &Path) -> Result<Cid> {
    let c = CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    let name = CString::new(CID_XATTR).context("the attribute's name")?;
    let mut buf = [0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        bail!(
            "{}: not in a peerfs mount (no user.peerfs.cid: {})",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    let text = std::str::from_utf8(&buf[..n as usize]).context("user.peerfs.cid")?;
    text.parse()
        .with_context(|| format!("{}: user.peerfs.cid {text:?}", path.display()))
}

pub fn pin(repo_path: &Path, arg: &str, priority: Option<Priority>, verbose: bool) -> Result<()> {
    let target = Target::parse(arg)?;
    let request = Request::Pin {
        cid: target.cid().to_string(),
        path: match &target {
            Target::Path { path, .. } => Some(path.clone()),
            Target::Cid(_) => None,
        },
        priority,
        verbose,
    };
    let bar = progress::bytes(None, "pin");
    let answer = if verbose {
        pin_verbose(repo_path, &request)
    } else {
        control::request_with_progress(repo_path, &request, |p| {
            if let (Some(total), None) = (p.total, bar.length()) {
                bar.set_length(total);
                bar.set_style(progress::bytes(Some(total), "pin").style());
            }
            bar.set_position(p.bytes);
        })
    };
    bar.finish_and_clear();
    let (blocks, bytes) = match answer {
        Ok(Response::Pinned { blocks, bytes, .. }) => (blocks, bytes),
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => return Err(unexpected(other)),
        Err(ControlError::NotRunning(_)) => pin_offline(repo_path, &target)?,
        Err(e) => return Err(e.into()),
    };
    outln!(
        "pinned {} ({blocks} blocks, {})",
        target.cid(),
        indicatif::HumanBytes(bytes)
    )?;
    Ok(())
}

/// Sends a verbose pin: prints, at most every second, how far it is and who sent what.
fn pin_verbose(repo_path: &Path, request: &Request) -> Result<Response, ControlError> {
    let (stream, mut reader) = control::send(repo_path, request)?;
    drop(stream);
    let book = PeerBook::load(repo_path).ok();
    let mut last: Option<(Instant, Transfer)> = None;
    let print = |t: &Transfer| errln!("{}", super::transfers::sources_line(t, book.as_ref()));
    loop {
        match control::read_response(repo_path, &mut reader)? {
            Response::Progress(_) => {}
            Response::Transfer(t) => {
                if last
                    .as_ref()
                    .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1))
                {
                    print(&t);
                    last = Some((Instant::now(), t));
                } else if let Some((_, l)) = last.as_mut() {
                    *l = t;
                }
            }
            other => {
                // The last figures, with every source.
                if let Some((_, t)) = &last {
                    print(t);
                }
                return Ok(other);
            }
        }
    }
}

/// Without a daemon nothing can be fetched: every block must be here already.
fn pin_offline(repo_path: &Path, target: &Target) -> Result<(u64, u64)> {
    let repo = Repo::open(repo_path).context("opening the repo")?;
    let store = repo.store();
    let root = (&target.cid(), None);
    match pin::pin_tree(store, store, root, &target.label(), |_| {}, |_| {}) {
        Ok(done) => Ok((done.blocks, done.bytes)),
        Err(PinError::Missing(cid)) => bail!(
            "block {cid} of {} is not here, and no daemon runs to fetch it: start one with `peerfs mount MOUNTPOINT`",
            target.label()
        ),
        Err(e) => Err(e.into()),
    }
}

pub fn unpin(repo_path: &Path, arg: &str) -> Result<()> {
    // A path may have changed since it was pinned: match its label, and its CID now.
    let (target, resolved) = match Target::parse(arg) {
        Ok(t) => (t.label(), Some(t.cid())),
        Err(_) => (arg.to_string(), None),
    };
    let request = Request::Unpin {
        target: target.clone(),
        cid: resolved.map(|c| c.to_string()),
    };
    let (cids, left): (Vec<String>, Vec<(String, String)>) = match ask(repo_path, request)? {
        Some(Response::Unpinned { cids }) => match ask(repo_path, Request::Pins)? {
            Some(Response::Pins { pins }) => {
                (cids, pins.into_iter().map(|p| (p.cid, p.label)).collect())
            }
            _ => (cids, Vec::new()),
        },
        Some(other) => return Err(unexpected(other)),
        None => {
            let repo = Repo::open(repo_path).context("opening the repo")?;
            let cids = pin::unpin(repo.store(), &target, resolved.as_ref())?;
            if cids.is_empty() {
                bail!("{target}: not pinned");
            }
            let left = repo.store().pins()?;
            let left = left.into_iter().map(|(c, l)| (c.to_string(), l));
            (cids.iter().map(|c| c.to_string()).collect(), left.collect())
        }
    };
    let mut freed = false;
    for c in cids {
        let kept: Vec<&str> = left
            .iter()
            .filter(|(cid, _)| *cid == c)
            .map(|(_, l)| l.as_str())
            .collect();
        if kept.is_empty() {
            freed = true;
            outln!("unpinned {c}")?;
        } else {
            outln!(
                "unpinned {c} as {target}; still pinned as {}",
                kept.join(", ")
            )?;
        }
    }
    if freed {
        outln!("(its blocks stay until `peerfs gc`)")?;
    }
    Ok(())
}

pub fn list(repo_path: &Path, json: bool) -> Result<()> {
    let (pins, daemon): (Vec<(String, String)>, Option<control::Status>) =
        match ask(repo_path, Request::Pins)? {
            Some(Response::Pins { pins }) => {
                let pins = pins.into_iter().map(|p| (p.cid, p.label)).collect();
                let status = match ask(repo_path, Request::Status)? {
                    Some(Response::Status(s)) => Some(s),
                    _ => None,
                };
                (pins, status)
            }
            Some(other) => return Err(unexpected(other)),
            None => {
                let repo = Repo::open(repo_path).context("opening the repo")?;
                let pins = repo.store().pins()?;
                (
                    pins.into_iter()
                        .filter(|(_, l)| l != peerfs::share::items::INBOX_PIN)
                        .map(|(c, l)| (c.to_string(), l))
                        .collect(),
                    None,
                )
            }
        };
    let book = PeerBook::load(repo_path).ok();
    let check = |cid: &str, label: &str| -> Option<Option<String>> {
        let s = daemon.as_ref()?;
        staleness(cid, label, &s.mountpoint, book.as_ref())
    };
    // Grouped by CID, each label checked once.
    let mut grouped: Vec<json::Pin> = Vec::new();
    for (cid, label) in pins {
        let checked = check(&cid, &label);
        let entry = json::PinLabel {
            label,
            checked: checked.is_some(),
            stale: checked.flatten(),
        };
        match grouped.iter_mut().find(|p| p.cid == cid) {
            Some(p) => p.labels.push(entry),
            None => grouped.push(json::Pin {
                cid,
                labels: vec![entry],
            }),
        }
    }
    if json {
        return json::print(&grouped);
    }
    if grouped.is_empty() {
        outln!(
            "no pins (`peerfs pin PATH|CID` keeps a tree; `add` and `import` pin what they store)"
        )?;
        return Ok(());
    }
    for pin in &grouped {
        for l in &pin.labels {
            match &l.stale {
                Some(why) => outln!("{}  {}  (stale: {why})", pin.cid, l.label)?,
                None => outln!("{}  {}", pin.cid, l.label)?,
            }
        }
    }
    if daemon.is_none()
        && grouped
            .iter()
            .flat_map(|p| &p.labels)
            .any(|l| l.label.starts_with('/'))
    {
        outln!("(paths not checked for staleness: no daemon is running)")?;
    }
    Ok(())
}

/// Whether a pin's label still holds: `None` when it cannot be checked (not a path in
/// the mount at `mountpoint`), else why it is stale, if it is.
fn staleness(
    cid: &str,
    label: &str,
    mountpoint: &Path,
    book: Option<&PeerBook>,
) -> Option<Option<String>> {
    let path = Path::new(label);
    let rel = path.strip_prefix(mountpoint).ok()?;
    let mut parts = rel.components();
    if parts.next().is_some_and(|c| c.as_os_str() == PEERS_DIR) {
        let name = parts.next()?.as_os_str().to_str()?;
        if book.is_some_and(|b| b.by_name(name).is_none()) {
            return Some(Some(format!("peer {name} is no longer followed")));
        }
    }
    match cid_of_path(path) {
        Ok(now) if now.to_string() == cid => Some(None),
        Ok(now) => Some(Some(format!("the path now leads to {now}"))),
        Err(_) if std::fs::symlink_metadata(path).is_err() => {
            Some(Some("the path no longer exists".to_string()))
        }
        Err(_) => None,
    }
}

pub fn gc(repo_path: &Path) -> Result<()> {
    // While the daemon runs, it deletes what it safely can: peers' cached blocks.
    match ask(repo_path, Request::Gc)? {
        Some(Response::Collected {
            removed,
            removed_bytes,
            unfollowed,
        }) => {
            println!(
                "removed {removed} blocks ({})",
                indicatif::HumanBytes(removed_bytes)
            );
            print_unfollowed(unfollowed);
            return Ok(());
        }
        Some(other) => return Err(unexpected(other)),
        None => {}
    }
    let repo = Repo::open(repo_path).context("opening the repo")?;
    let followed: Vec<_> = PeerBook::load(repo.path())?
        .entries()
        .iter()
        .filter_map(PeerEntry::peer_id)
        .collect();
    let report = pin::collect_garbage(repo.store(), &followed)?;
    outln!(
        "removed {} blocks ({}), kept {}",
        report.removed,
        indicatif::HumanBytes(report.removed_bytes),
        report.kept
    )?;
    print_unfollowed(report.unfollowed);
    if report.missing > 0 {
        outln!(
            "{} reachable blocks are not here (parts of followed drives never fetched)",
            report.missing
        )?;
    }
    Ok(())
}

fn print_unfollowed(peers: u64) {
    match peers {
        0 => {}
        1 => println!("1 peer no longer followed: its drive was not kept"),
        n => println!("{n} peers no longer followed: their drives were not kept"),
    }
}
