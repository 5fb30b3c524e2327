//! Adding local files and trees to the store as UnixFS DAGs (`peerfs add`).
//!
//! Everything under a directory is added, dot-files included (rsync and the mount see
//! them too). Symlinks are stored as symlinks, never followed. Sockets, FIFOs and
//! devices have no UnixFS form: they are skipped with a warning.

use std::fs::{self, File, Metadata as FsMetadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cid::Cid;

use crate::store::BlockSink;
use crate::unixfs::{
    self, build_directory, build_symlink, Built, DirEntry, FileBuilder, ImportOptions, Metadata,
    Mtime,
};

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: is a directory (use -r to add a directory)")]
    IsADirectory(PathBuf),
    #[error("{0}: cannot add a socket, FIFO or device")]
    Special(PathBuf),
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        source: Box<unixfs::Error>,
    },
}

#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    pub import: ImportOptions,
    pub recursive: bool,
    pub preserve_mode: bool,
    pub preserve_mtime: bool,
}

/// What was added, reported once per entry (children before their directory).
pub struct Added<'a> {
    /// Path as `ipfs add` prints it: from the argument's base name down.
    pub display: &'a str,
    pub cid: Cid,
    pub tsize: u64,
}

/// Callbacks while adding: each finished entry, and file bytes as they are read.
pub trait AddObserver {
    fn added(&mut self, entry: &Added<'_>);
    fn bytes(&mut self, _n: u64) {}
    fn skipped(&mut self, _path: &Path, _why: &str) {}
}

pub fn add_path(
    path: &Path,
    opts: &AddOptions,
    sink: &mut dyn BlockSink,
    obs: &mut dyn AddObserver,
) -> Result<Built, AddError> {
    let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
    if meta.is_dir() && !opts.recursive {
        return Err(AddError::IsADirectory(path.to_path_buf()));
    }
    let name = display_name(path);
    let mut adder = Adder { opts, sink, obs };
    match adder.entry(path, &meta, &name)? {
        Some(built) => Ok(built),
        None => Err(AddError::Special(path.to_path_buf())),
    }
}

fn display_name(path: &Path) -> String {
    match path.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => path.to_string_lossy().into_owned(),
    }
}

fn format_at(path: &Path) -> impl FnOnce(unixfs::Error) -> AddError + '_ {
    move |source| AddError::Format {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> AddError + '_ {
    move |source| AddError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Adder<'a> {
    opts: &'a AddOptions,
    sink: &'a mut dyn BlockSink,
    obs: &'a mut dyn AddObserver,
}

impl Adder<'_> {
    /// Adds one entry; `None` for a file type UnixFS cannot hold.
    fn entry(
        &mut self,
        path: &Path,
        meta: &FsMetadata,
        display: &str,
    ) -> Result<Option<Built>, AddError> {
        let ft = meta.file_type();
        let built = if ft.is_dir() {
            self.directory(path, meta, display)?
        } else if ft.is_file() {
            self.file(path, meta)?
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_at(path))?;
            build_symlink(
                target.as_os_str().as_bytes(),
                self.metadata(meta),
                &self.opts.import,
                self.sink,
            )
            .map_err(format_at(path))?
        } else {
            let why =
                if ft.is_socket() || ft.is_fifo() || ft.is_block_device() || ft.is_char_device() {
                    "a socket, FIFO or device has no UnixFS form; skipped"
                } else {
                    "unknown file type; skipped"
                };
            self.obs.skipped(path, why);
            return Ok(None);
        };
        self.obs.added(&Added {
            display,
            cid: built.cid,
            tsize: built.tsize,
        });
        Ok(Some(built))
    }

    fn metadata(&self, meta: &FsMetadata) -> Metadata {
        Metadata {
            mode: self
                .opts
                .preserve_mode
                .then(|| meta.permissions().mode() & 0o7777),
            mtime: self.opts.preserve_mtime.then(|| Mtime {
                secs: meta.mtime(),
                nanos: meta.mtime_nsec() as u32,
            }),
        }
    }

    fn file(&mut self, path: &Path, meta: &FsMetadata) -> Result<Built, AddError> {
        let mut f = File::open(path).map_err(io_at(path))?;
        let mut builder = FileBuilder::new(&self.opts.import, self.metadata(meta));
        loop {
            let chunk = read_chunk(&mut f, builder.chunk_size()).map_err(io_at(path))?;
            if chunk.is_empty() {
                break;
            }
            self.obs.bytes(chunk.len() as u64);
            let full = chunk.len() == builder.chunk_size();
            builder.push(chunk, self.sink).map_err(format_at(path))?;
            if !full {
                break;
            }
        }
        builder.finish(self.sink).map_err(format_at(path))
    }

    fn directory(
        &mut self,
        path: &Path,
        meta: &FsMetadata,
        display: &str,
    ) -> Result<Built, AddError> {
        let mut names: Vec<_> = fs::read_dir(path)
            .map_err(io_at(path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(path))?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(&name);
            let child_meta = fs::symlink_metadata(&child).map_err(io_at(&child))?;
            let child_display = format!("{display}/{}", name.to_string_lossy());
            if let Some(built) = self.entry(&child, &child_meta, &child_display)? {
                entries.push(DirEntry {
                    name: name.as_bytes().to_vec(),
                    cid: built.cid,
                    tsize: built.tsize,
                });
            }
        }
        build_directory(entries, self.metadata(meta), &self.opts.import, self.sink)
            .map_err(format_at(path))
    }
}

/// Reads up to `size` bytes, fewer only at end of file.
pub fn read_chunk(r: &mut dyn Read, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut filled = 0;
    while filled < size {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}
