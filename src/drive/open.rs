//! Open files: handles, reads and writes through them, and publishing a file's writes
//! into the tree (flush, fsync, close), which is all a commit sees of them.

use std::sync::{Arc, Mutex};

use super::file::FileContent;
use super::tree::{Body, State};
use super::Drive;
use crate::vfs::{FsError, Seek};

/// How far ahead of a sequential reader chunks are read from the store.
const READ_AHEAD_BYTES: u64 = 8 << 20;
/// Permission bits a write by someone else takes away (as the kernel's rule for
/// `file_remove_privs`): set-user-ID and set-group-ID.
const PRIVILEGE_BITS: u32 = 0o6000;

impl Drive {
    /// The open contents of file `ino`, or its stored contents loaded now.
    pub(super) fn file_content(
        &self,
        st: &mut State,
        ino: u64,
    ) -> Result<Arc<Mutex<FileContent>>, FsError> {
        let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        let Body::File(f) = &mut inode.body else {
            return Err(FsError::IsADirectory);
        };
        if let Some(c) = &f.content {
            return Ok(Arc::clone(c));
        }
        let loaded = FileContent::load(&self.staging, &self.opts, &self.zeros, &f.built.cid)?;
        // Installed at once, so that a file has one contents however many handles and
        // setattrs use it meanwhile; dropped again when nobody holds it open.
        let content = Arc::new(Mutex::new(loaded));
        f.content = Some(Arc::clone(&content));
        Ok(content)
    }

    /// Opens a file; `truncate` empties it first (O_TRUNC).
    pub fn open(&self, ino: u64, truncate: bool) -> Result<u64, FsError> {
        let (fh, content) = {
            let mut st = self.lock();
            let content = self.file_content(&mut st, ino)?;
            let Some(Body::File(f)) = st.inodes.get_mut(&ino).map(|i| &mut i.body) else {
                return Err(FsError::IsADirectory);
            };
            f.open += 1;
            (st.new_handle(ino, Arc::clone(&content)), content)
        };
        if !truncate {
            return Ok(fh);
        }
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.set_len(&self.staging, 0)?;
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.touch();
            if let Body::File(f) = &mut inode.body {
                f.size = 0;
                f.allocated = 0;
            }
        }
        Ok(fh)
    }

    fn handle(&self, fh: u64) -> Result<(u64, Arc<Mutex<FileContent>>), FsError> {
        let st = self.lock();
        let h = st.handles.get(&fh).ok_or(FsError::BadHandle)?;
        Ok((h.ino, Arc::clone(&h.content)))
    }

    pub fn read(&self, fh: u64, offset: u64, len: u32) -> Result<Vec<u8>, FsError> {
        let (_, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        let data = c.read(&self.staging, Some(&self.read_ahead), offset, len)?;
        let ahead = c.read_ahead(READ_AHEAD_BYTES);
        drop(c);
        self.read_ahead.request(ahead);
        Ok(data)
    }

    /// Writes through handle `fh`. `drop_privileges`: the writer is not the owner, so
    /// set-user-ID and set-group-ID bits go, as a write on any Linux filesystem does.
    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        drop_privileges: bool,
    ) -> Result<(), FsError> {
        let (ino, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.write(&self.staging, &self.opts, offset, data)?;
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.touch();
            if drop_privileges {
                inode.mode &= !PRIVILEGE_BITS;
            }
            if let Body::File(f) = &mut inode.body {
                f.size = c.size();
            }
        }
        Ok(())
    }

    /// Makes the file at least `size` bytes long (fallocate): the new room is a hole.
    pub fn grow(&self, fh: u64, size: u64) -> Result<(), FsError> {
        let (_, content) = self.handle(fh)?;
        if content.lock().unwrap_or_else(|e| e.into_inner()).size() >= size {
            return Ok(());
        }
        // An empty write at `size` extends the file as a write past its end does.
        self.write(fh, size, &[], false)
    }

    /// Where the next data or hole at or after `offset` is (lseek's `SEEK_DATA` and
    /// `SEEK_HOLE`).
    pub fn seek(&self, fh: u64, offset: u64, what: Seek) -> Result<u64, FsError> {
        let (_, content) = self.handle(fh)?;
        let c = content.lock().unwrap_or_else(|e| e.into_inner());
        c.seek(offset, what).ok_or(FsError::PastEnd)
    }

    /// Makes the file's written contents part of the tree (close, flush, fsync).
    pub fn flush(&self, fh: u64) -> Result<(), FsError> {
        let (ino, content) = self.handle(fh)?;
        let mut c = content.lock().unwrap_or_else(|e| e.into_inner());
        if !c.changed {
            return Ok(());
        }
        let mut st = self.lock();
        self.publish(&mut st, ino, &mut c)
    }

    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        let flushed = self.flush(fh);
        let mut st = self.lock();
        if let Some(h) = st.handles.remove(&fh) {
            if let Some(Body::File(f)) = st.inodes.get_mut(&h.ino).map(|i| &mut i.body) {
                f.open = f.open.saturating_sub(1);
                if f.open == 0 && flushed.is_ok() {
                    f.content = None;
                }
            }
            st.reap(h.ino);
        }
        flushed
    }

    /// Builds the file's DAG with its current metadata and marks its entry changed.
    pub(super) fn publish(
        &self,
        st: &mut State,
        ino: u64,
        content: &mut FileContent,
    ) -> Result<(), FsError> {
        let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        let built = content.build(&self.staging, &self.opts, &self.zeros, inode.meta())?;
        if let Body::File(f) = &mut inode.body {
            f.built = built;
            f.size = content.size();
            f.allocated = content.allocated();
        }
        let (parent, name, linked) = (inode.parent, inode.name.clone(), inode.linked);
        if linked {
            st.entry_changed(parent, &name, false);
        }
        Ok(())
    }

    /// Publishes every open file's writes (before unmount).
    pub fn flush_all(&self) -> Result<(), FsError> {
        let handles: Vec<u64> = self.lock().handles.keys().copied().collect();
        handles.into_iter().try_for_each(|fh| self.flush(fh))
    }
}
