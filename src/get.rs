//! Writing a UnixFS DAG back out as a local tree (`peerfs get`): files, directories and
//! symlinks, with their modes and mtimes when the DAG carries them.
//!
//! Names come from blocks that may be anyone's: a name that is empty, `.`, `..`, or
//! holds a `/` or a NUL byte is refused rather than written outside the target.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cid::Cid;

use crate::store::Blocks;
use crate::unixfs::{self, list, load_node, FileReader, Metadata, Node};

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Format(#[from] unixfs::Error),
    #[error("{dir}: refusing an unsafe entry name {name:?}")]
    UnsafeName { dir: PathBuf, name: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> GetError + '_ {
    move |source| GetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the DAG at `cid` to `out`; `progress` hears file bytes as they are written.
pub fn get(
    blocks: &dyn Blocks,
    cid: &Cid,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), GetError> {
    let node = load_node(blocks, cid)?;
    write_entry(blocks, cid, node, out, progress)
}

fn write_entry(
    blocks: &dyn Blocks,
    cid: &Cid,
    node: Node,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), GetError> {
    let meta = node.meta();
    match node {
        Node::File(f) => {
            let file = File::create(out).map_err(io_at(out))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let mut last = 0;
            FileReader::from_node(blocks, *cid, f).copy_to(&mut w, &mut |total| {
                progress(total - last);
                last = total;
            })?;
            w.flush().map_err(io_at(out))?;
            apply(out, meta, false)?;
        }
        dir @ (Node::Directory(_) | Node::Shard(_)) => {
            match fs::create_dir(out) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && out.is_dir() => {}
                other => other.map_err(io_at(out))?,
            }
            for entry in list(blocks, cid, &dir)? {
                let name = safe_name(out, &entry.name)?;
                let child = load_node(blocks, &entry.cid)?;
                write_entry(blocks, &entry.cid, child, &out.join(name), progress)?;
            }
            apply(out, meta, false)?;
        }
        Node::Symlink { target, .. } => {
            match fs::remove_file(out) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(out)(e)),
                _ => {}
            }
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), out).map_err(io_at(out))?;
            apply(out, meta, true)?;
        }
    }
    Ok(())
}

fn safe_name<'n>(dir: &Path, name: &'n [u8]) -> Result<&'n OsStr, GetError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(GetError::UnsafeName {
            dir: dir.to_path_buf(),
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(OsStr::from_bytes(name))
}

/// Sets mode (never on symlinks) and mtime, as far as the DAG records them.
fn apply(path: &Path, meta: Metadata, symlink: bool) -> Result<(), GetError> {
    if let (Some(mode), false) = (meta.mode, symlink) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_at(path))?;
    }
    if let Some(t) = meta.mtime {
        set_mtime(path, t.secs, t.nanos).map_err(io_at(path))?;
    }
    Ok(())
}

/// Sets the mtime (leaving atime) without following a symlink.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as libc::c_long,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
