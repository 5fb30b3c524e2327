//! `peerfs share PATH [--with NAME[,NAME…]] [--json]`: make a folder of my drive private
//! to some peers, or say who may read it.

use std::path::Path;

use anyhow::{bail, Result};

use super::output::outln;
use super::{ask, unexpected};
use peerfs::daemon::control::{Request, Response, SharedFolder};

pub fn share(repo: &Path, path: &str, with: Option<Vec<String>>, json: bool) -> Result<()> {
    // A path in the mount is made absolute, so the daemon can find its drive part.
    let path = match std::path::absolute(path) {
        Ok(abs) if !path.is_empty() && Path::new(path).exists() => abs.display().to_string(),
        _ => path.to_string(),
    };
    let folder = match ask(
        repo,
        Request::Share {
            path,
            readers: with,
        },
    )? {
        Some(Response::Shared(f)) => f,
        Some(other) => return Err(unexpected(other)),
        None => bail!("the daemon is not running: `peerfs mount` first"),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&folder)?)?;
    } else {
        print_folder(&folder)?;
    }
    Ok(())
}

fn print_folder(f: &SharedFolder) -> std::io::Result<()> {
    if !f.private {
        return outln!(
            "{}: not private (every reader of my drive can read it)",
            f.path
        );
    }
    let names: Vec<&str> = f.readers.iter().map(|r| r.name.as_str()).collect();
    outln!(
        "{}: private to {} ({} key generation{})",
        f.path,
        names.join(", "),
        f.generations,
        if f.generations == 1 { "" } else { "s" }
    )
}
