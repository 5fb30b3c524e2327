//! Reading UnixFS DAGs: resolving paths, listing directories, and reading files either
//! at random offsets (touching only the blocks under the range) or as a stream.

use std::io::Write;

use cid::Cid;

use super::build::DirEntry;
use super::node::{FileNode, Node};
use super::{hamt, load_node, Error, FormatError};
use crate::store::Blocks;

/// A file DAG never needs more levels than this (1024-way nodes reach 2^100 bytes long
/// before 10); a deeper one is hostile, and refusing it keeps recursion bounded.
const MAX_FILE_DEPTH: usize = 32;

/// Follows `path` (components separated by `/`) from `root`, one lookup per component.
pub fn resolve(blocks: &dyn Blocks, root: &Cid, path: &str) -> Result<(Cid, Node), Error> {
    let mut cid = *root;
    let mut node = load_node(blocks, &cid)?;
    let mut walked = root.to_string();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let next = match lookup(blocks, &cid, &node, part.as_bytes()) {
            Err(Error::NotADirectory(_)) => return Err(Error::NotADirectory(walked)),
            other => other?,
        };
        walked = format!("{walked}/{part}");
        let Some(entry) = next else { return Err(Error::NotFound(walked)) };
        cid = entry.cid;
        node = load_node(blocks, &cid)?;
    }
    Ok((cid, node))
}

/// Looks a name up in a directory node: a scan of a flat directory's links, or the
/// hash path of a HAMT.
pub fn lookup(blocks: &dyn Blocks, dir_cid: &Cid, dir: &Node, name: &[u8]) -> Result<Option<DirEntry>, Error> {
    match dir {
        Node::Directory(d) => Ok(d.links.iter().find(|l| l.name.as_deref() == Some(name)).map(|l| DirEntry {
            name: name.to_vec(),
            cid: l.cid,
            tsize: l.tsize.unwrap_or(0),
        })),
        Node::Shard(s) => hamt::lookup(blocks, dir_cid, s, name),
        _ => Err(Error::NotADirectory(dir_cid.to_string())),
    }
}

/// The entries of a directory node, sorted by name bytes.
pub fn list(blocks: &dyn Blocks, dir_cid: &Cid, dir: &Node) -> Result<Vec<DirEntry>, Error> {
    let mut out = match dir {
        Node::Directory(d) => d
            .links
            .iter()
            .map(|l| DirEntry { name: l.name.clone().unwrap_or_default(), cid: l.cid, tsize: l.tsize.unwrap_or(0) })
            .collect(),
        Node::Shard(s) => hamt::entries(blocks, dir_cid, s)?,
        _ => return Err(Error::NotADirectory(dir_cid.to_string())),
    };
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Random access into a file DAG.
pub struct FileReader<'b> {
    blocks: &'b dyn Blocks,
    root: FileNode,
    root_cid: Cid,
}

impl<'b> FileReader<'b> {
    pub fn open(blocks: &'b dyn Blocks, cid: &Cid) -> Result<Self, Error> {
        match load_node(blocks, cid)? {
            Node::File(root) => Ok(FileReader { blocks, root, root_cid: *cid }),
            n if n.is_dir() => Err(Error::IsADirectory(cid.to_string())),
            _ => Err(Error::NotAFile(cid.to_string())),
        }
    }

    pub fn from_node(blocks: &'b dyn Blocks, cid: Cid, root: FileNode) -> Self {
        FileReader { blocks, root, root_cid: cid }
    }

    pub fn size(&self) -> u64 {
        self.root.filesize
    }

    /// Fills `buf` from `offset`; returns how many bytes were read (0 at end of file).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        if offset >= self.size() || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size() - offset) as usize;
        self.read_node(&self.root, &self.root_cid, offset, &mut buf[..len], 0)?;
        Ok(len)
    }

    /// Copies `buf.len()` bytes starting `offset` bytes into `node` (the caller keeps
    /// the range inside the node).
    fn read_node(&self, node: &FileNode, cid: &Cid, offset: u64, buf: &mut [u8], depth: usize) -> Result<(), Error> {
        if depth > MAX_FILE_DEPTH {
            return Err(Error::Malformed { cid: *cid, source: FormatError::UnixFs("file DAG too deep") });
        }
        let mut pos = 0u64; // start of the current piece within the node
        let mut done = 0usize;
        let inline = node.inline.len() as u64;
        if offset < inline {
            let n = ((inline - offset) as usize).min(buf.len());
            buf[..n].copy_from_slice(&node.inline[offset as usize..offset as usize + n]);
            done = n;
        }
        pos += inline;
        for (child_cid, size) in &node.children {
            if done == buf.len() {
                break;
            }
            let want = offset + done as u64;
            if want >= pos + size {
                pos += size;
                continue;
            }
            let within = want - pos;
            let n = ((size - within) as usize).min(buf.len() - done);
            let child = match load_node(self.blocks, child_cid)? {
                Node::File(f) if f.filesize == *size => f,
                _ => {
                    return Err(Error::Malformed { cid: *child_cid, source: FormatError::UnixFs("file part has the wrong size or type") })
                }
            };
            self.read_node(&child, child_cid, within, &mut buf[done..done + n], depth + 1)?;
            done += n;
            pos += size;
        }
        if done != buf.len() {
            return Err(Error::Malformed { cid: *cid, source: FormatError::UnixFs("file is shorter than its size") });
        }
        Ok(())
    }

    /// Streams the whole file to `out`, visiting each block once, in order. `progress`
    /// hears the number of bytes after each block.
    pub fn copy_to(&self, out: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> Result<u64, Error> {
        self.stream(&self.root, &self.root_cid, out, progress, 0)
    }

    fn stream(&self, node: &FileNode, cid: &Cid, out: &mut dyn Write, progress: &mut dyn FnMut(u64), depth: usize) -> Result<u64, Error> {
        if depth > MAX_FILE_DEPTH {
            return Err(Error::Malformed { cid: *cid, source: FormatError::UnixFs("file DAG too deep") });
        }
        out.write_all(&node.inline).map_err(Error::Io)?;
        let mut written = node.inline.len() as u64;
        progress(written);
        for (child_cid, size) in &node.children {
            let child = match load_node(self.blocks, child_cid)? {
                Node::File(f) => f,
                _ => return Err(Error::Malformed { cid: *child_cid, source: FormatError::UnixFs("file part is not a file") }),
            };
            let n = self.stream(&child, child_cid, out, progress, depth + 1)?;
            if n != *size {
                return Err(Error::Malformed { cid: *child_cid, source: FormatError::UnixFs("file part has the wrong size") });
            }
            written += n;
        }
        Ok(written)
    }
}
