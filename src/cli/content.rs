//! `cat`, `ls`, `get`, `export` and `import`: the content commands, on the daemon's
//! store while it runs (which fetches what is not here from peers), else on the repo.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use cid::Cid;

use peerfs::store::Blocks;
use peerfs::unixfs::{list, load_node, resolve, FileReader, Node};
use peerfs::{car, get};

use super::output::{self, outln};
use super::progress;
use super::store::Store;

pub fn cat(repo_path: &Path, target: &str) -> Result<()> {
    let store = Store::open(repo_path)?;
    let (cid, node) = resolve_target(store.blocks(), target)?;
    let Node::File(f) = node else {
        bail!("{target}: not a file")
    };
    let mut out = BufWriter::with_capacity(1 << 20, output::stdout());
    FileReader::from_node(store.blocks(), cid, f).copy_to(&mut out, &mut |_| {})?;
    out.flush()?;
    Ok(())
}

pub fn get(repo_path: &Path, target: &str, out: &Path) -> Result<()> {
    let store = Store::open(repo_path)?;
    let (cid, node) = resolve_target(store.blocks(), target)?;
    let total = match &node {
        Node::File(f) => Some(f.filesize),
        _ => None,
    };
    let bar = progress::bytes(total, "get");
    get::get(store.blocks(), &cid, out, &mut |n| bar.inc(n))
        .with_context(|| format!("writing {}", out.display()))?;
    bar.finish_and_clear();
    Ok(())
}

pub fn export(repo_path: &Path, target: &str, output: Option<&Path>) -> Result<()> {
    let store = Store::open(repo_path)?;
    let (cid, _) = resolve_target(store.blocks(), target)?;
    let sink: Box<dyn Write> = match output {
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None if io::stdout().is_terminal() => {
            bail!("refusing to write a CAR to a terminal: redirect stdout or use -o FILE")
        }
        None => Box::new(output::stdout()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let bar = progress::bytes(None, "export");
    car::export(store.blocks(), &cid, &mut out, &mut |n| bar.inc(n))?;
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// Imports a CAR and pins its roots that are here under `import PATH`.
pub fn import(repo_path: &Path, path: &Path) -> Result<()> {
    let store = Store::open(repo_path)?;
    let input: Box<dyn io::Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
    };
    let size = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let bar = progress::bytes(size, "import");
    let imported = car::import(
        store.blocks(),
        BufReader::with_capacity(1 << 20, input),
        &mut |n| bar.inc(n),
    )
    .with_context(|| format!("importing {}", path.display()))?;
    bar.finish_and_clear();
    for root in &imported.roots {
        if store.blocks().has(root)? {
            store.pin(root, &format!("import {}", path.display()))?;
        }
        outln!("imported {root} ({} blocks)", imported.blocks)?;
    }
    Ok(())
}

/// Accepts `CID`, `CID/path`, `/ipfs/CID/path` and `ipfs://CID/path`.
fn parse_target(target: &str) -> Result<(Cid, &str)> {
    let t = target
        .strip_prefix("ipfs://")
        .or_else(|| target.strip_prefix("/ipfs/"))
        .unwrap_or(target);
    let (cid_str, path) = t.split_once('/').unwrap_or((t, ""));
    let cid = Cid::try_from(cid_str).map_err(|e| {
        let plain = t.len() == target.len();
        match local_path(target).filter(|_| plain) {
            Some(hint) => anyhow!(
                "{target} is a path, but a CID is expected here (CID, CID/PATH or /ipfs/CID/PATH){hint}"
            ),
            None => anyhow!("{cid_str:?} is not a CID ({e})"),
        }
    })?;
    Ok((cid, path))
}

/// When `target` is a path on this machine, what to do instead: `Some("")` for a
/// plain path, or the CID to use when it is in a peerfs mount.
fn local_path(target: &str) -> Option<String> {
    let is_path = std::fs::symlink_metadata(target).is_ok()
        || ["/", "./", "../", "~"]
            .iter()
            .any(|p| target.starts_with(p));
    if !is_path {
        return None;
    }
    Some(match super::pin::cid_of_path(Path::new(target)) {
        Ok(cid) => format!(": it is {cid} in the mount"),
        Err(_) => String::new(),
    })
}

fn resolve_target(blocks: &dyn Blocks, target: &str) -> Result<(Cid, Node)> {
    let (cid, path) = parse_target(target)?;
    Ok(resolve(blocks, &cid, path)?)
}

pub fn ls(repo_path: &Path, target: &str, long: bool) -> Result<()> {
    let store = Store::open(repo_path)?;
    let blocks = store.blocks();
    let (cid, node) = resolve_target(blocks, target)?;
    if !node.is_dir() {
        print_entry(&mut output::stdout(), target.as_bytes(), &cid, &node, long)?;
        return Ok(());
    }
    let mut out = BufWriter::new(output::stdout());
    for entry in list(blocks, &cid, &node)? {
        let child = load_node(blocks, &entry.cid)?;
        print_entry(&mut out, &entry.name, &entry.cid, &child, long)?;
    }
    out.flush()?;
    Ok(())
}

fn print_entry(out: &mut dyn Write, name: &[u8], cid: &Cid, node: &Node, long: bool) -> Result<()> {
    let name = String::from_utf8_lossy(name);
    let (size, suffix) = match node {
        Node::File(f) => (f.filesize.to_string(), ""),
        Node::Symlink { .. } => ("-".to_string(), "@"),
        _ => ("-".to_string(), "/"),
    };
    if !long {
        writeln!(out, "{cid} {size:>12} {name}{suffix}")?;
        return Ok(());
    }
    let meta = node.meta();
    let mtime = meta
        .mtime
        .map_or_else(|| "-".to_string(), |t| format_time(t.secs));
    let link = match node {
        Node::Symlink { target, .. } => format!(" -> {}", String::from_utf8_lossy(target)),
        _ => String::new(),
    };
    writeln!(
        out,
        "{} {size:>12} {mtime:>20} {name}{link}  {cid}",
        mode_string(node)
    )?;
    Ok(())
}

fn mode_string(node: &Node) -> String {
    let (kind, default) = match node {
        Node::File(_) => ('-', 0o644),
        Node::Symlink { .. } => ('l', 0o777),
        _ => ('d', 0o755),
    };
    let mode = if kind == 'l' {
        0o777
    } else {
        node.meta().mode.unwrap_or(default)
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// RFC 3339 in UTC, to the second.
fn format_time(secs: i64) -> String {
    let t = if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t).to_string()
}
