//! Writing a UnixFS DAG back out as a local tree (`peerfs get`): files, directories and
//! symlinks, with their modes and mtimes when the DAG carries them.
//!
//! The DAG may be anyone's (an imported CAR) and the output directory may hold things
//! already, symlinks among them. So below the path the user named nothing is reached by
//! a path: each directory is held open and its entries are made relative to it, files
//! with `O_CREAT|O_EXCL|O_NOFOLLOW` (see `at`). An entry already there is merged into
//! when it is a directory, replaced when it is a file or a symlink (as `tar x` does),
//! and never followed. Names are checked where directories are decoded; an unsafe one
//! is refused here too, since this is where it would do harm.

mod at;

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cid::Cid;

use crate::store::Blocks;
use crate::unixfs::node::check_name;
use crate::unixfs::{self, list_at_most, load_node, FileReader, Metadata, Node, LISTING_LIMIT};
use at::{Dir, Kind};

/// Directories nested deeper than this are refused: no tool could reach the bottom by
/// path (every level costs at least two bytes of `PATH_MAX`, 4096), and each level
/// holds a directory open and a stack frame.
const MAX_DEPTH: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Format(#[from] unixfs::Error),
    #[error("{dir}: refusing an unsafe entry name {name:?}")]
    UnsafeName { dir: PathBuf, name: String },
    #[error("{0}: directories nested more than {MAX_DEPTH} deep")]
    TooDeep(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> GetError + '_ {
    move |source| GetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the DAG at `cid` to `out`; `progress` hears file bytes as they are written.
/// A directory goes into `out` (made if missing, merged into if there: a symlink the
/// user names there is theirs, and followed); anything else is made as `out`.
pub fn get(
    blocks: &dyn Blocks,
    cid: &Cid,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), GetError> {
    let node = load_node(blocks, cid)?;
    let mut w = Writer { blocks, progress };
    if node.is_dir() {
        match fs::create_dir(out) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other.map_err(io_at(out))?,
        }
        let dir = Dir::open(out).map_err(io_at(out))?;
        return w.fill_dir(cid, &node, &dir, out, 0);
    }
    let name = out.file_name().ok_or_else(|| {
        io_at(out)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "names a directory, not a place for a file",
        ))
    })?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_dir = Dir::open(parent).map_err(io_at(parent))?;
    w.write_entry(cid, node, &parent_dir, name, out, 0)
}

struct Writer<'a> {
    blocks: &'a dyn Blocks,
    progress: &'a mut dyn FnMut(u64),
}

impl Writer<'_> {
    /// Makes `name` in `parent` (at `path`, for messages) from `node`.
    fn write_entry(
        &mut self,
        cid: &Cid,
        node: Node,
        parent: &Dir,
        name: &OsStr,
        path: &Path,
        depth: usize,
    ) -> Result<(), GetError> {
        let meta = node.meta();
        match node {
            Node::File(f) => {
                let mode = meta.mode.map_or(0o666, |m| m & 0o777);
                let file =
                    replacing(parent, name, |d| d.create_file(name, mode)).map_err(io_at(path))?;
                let mut w = BufWriter::with_capacity(1 << 20, file);
                let mut last = 0;
                let progress = &mut *self.progress;
                FileReader::from_node(self.blocks, *cid, f).copy_to(&mut w, &mut |total| {
                    progress(total - last);
                    last = total;
                })?;
                let file = w.into_inner().map_err(|e| io_at(path)(e.into_error()))?;
                apply(&file, meta).map_err(io_at(path))?;
            }
            dir @ (Node::Directory(_) | Node::Shard(_)) => {
                // Room to write the entries first; the DAG's mode is set once they are in.
                let mode = if meta.mode.is_some() { 0o700 } else { 0o777 };
                let made = make_dir(parent, name, mode).map_err(io_at(path))?;
                self.fill_dir(cid, &dir, &made, path, depth)?;
            }
            Node::Symlink { target, .. } => {
                replacing(parent, name, |d| d.symlink(&target, name)).map_err(io_at(path))?;
                if let Some(t) = meta.mtime {
                    parent
                        .set_mtime_of(name, t.secs, t.nanos)
                        .map_err(io_at(path))?;
                }
            }
        }
        Ok(())
    }

    /// Writes the entries of the directory node into the open `dir`, then its metadata.
    fn fill_dir(
        &mut self,
        cid: &Cid,
        node: &Node,
        dir: &Dir,
        path: &Path,
        depth: usize,
    ) -> Result<(), GetError> {
        if depth >= MAX_DEPTH {
            return Err(GetError::TooDeep(path.to_path_buf()));
        }
        for entry in list_at_most(self.blocks, cid, node, LISTING_LIMIT)? {
            check_name(&entry.name).map_err(|_| GetError::UnsafeName {
                dir: path.to_path_buf(),
                name: String::from_utf8_lossy(&entry.name).into_owned(),
            })?;
            let name = OsStr::from_bytes(&entry.name);
            let child = load_node(self.blocks, &entry.cid)?;
            self.write_entry(&entry.cid, child, dir, name, &path.join(name), depth + 1)?;
        }
        apply(dir.file(), node.meta()).map_err(io_at(path))
    }
}

/// Runs `make` (which fails with `EEXIST` when `name` is taken); a file or symlink in
/// the way is removed and `make` tried once more. A directory in the way stays, and
/// its `EEXIST` is the answer.
fn replacing<T>(parent: &Dir, name: &OsStr, make: impl Fn(&Dir) -> io::Result<T>) -> io::Result<T> {
    match make(parent) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            if parent.kind(name)? == Kind::Dir {
                return Err(e);
            }
            parent.unlink(name)?;
            make(parent)
        }
        other => other,
    }
}

/// Makes the directory `name` and opens it; one already there is opened as it is (its
/// entries stay beside ours), and a symlink there is replaced by a directory, never
/// followed. A file there is an error: it is not ours to remove for a directory.
fn make_dir(parent: &Dir, name: &OsStr, mode: u32) -> io::Result<Dir> {
    if let Err(e) = parent.mkdir(name, mode) {
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
        match parent.kind(name)? {
            Kind::Dir => {}
            Kind::Symlink => {
                parent.unlink(name)?;
                parent.mkdir(name, mode)?;
            }
            Kind::Other => return Err(e),
        }
    }
    // Should the name have become a symlink since, O_NOFOLLOW refuses it.
    parent.open_dir(name)
}

/// Sets mode and mtime on an open file or directory, as far as the DAG records them.
/// Not setuid or setgid: the DAG may come from anyone, and run as root `get` would make
/// a stranger's program run as root.
fn apply(file: &File, meta: Metadata) -> io::Result<()> {
    if let Some(mode) = meta.mode {
        let granted = mode & 0o7777 & !(libc::S_ISUID | libc::S_ISGID);
        file.set_permissions(fs::Permissions::from_mode(granted))?;
    }
    if let Some(t) = meta.mtime {
        at::set_mtime_fd(file, t.secs, t.nanos)?;
    }
    Ok(())
}

/// Sets the mtime (leaving atime) without following a symlink.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let times = at::mtime_only(secs, nanos);
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
