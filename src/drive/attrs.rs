//! `setattr`: mode, times and size. A file or symlink carries its metadata in its own
//! root node, so that is rebuilt at once; a directory's is written at the next commit.

use std::time::SystemTime;

use super::staging::StageSink;
use super::tree::{Body, Inode};
use super::Drive;
use crate::unixfs::build::build_symlink;
use crate::vfs::{to_mtime, Attr, FsError, Kind, SetAttr};

impl Drive {
    pub fn setattr(&self, ino: u64, set: SetAttr) -> Result<Attr, FsError> {
        let content = {
            let mut st = self.lock();
            let kind = st.inodes.get(&ino).ok_or(FsError::NotFound)?.kind();
            match kind {
                Kind::Directory if set.size.is_some() => return Err(FsError::IsADirectory),
                Kind::Symlink if set.size.is_some() => return Err(FsError::Invalid),
                Kind::Directory => {
                    // Only a loaded directory records changes.
                    self.load_dir(&mut st, ino)?;
                    apply_meta(st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?, set);
                    st.dir_changed(ino);
                    return Ok(st.inodes[&ino].attr(ino));
                }
                Kind::Symlink => {
                    let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
                    apply_meta(inode, set);
                    let meta = inode.meta();
                    if let Body::Symlink { target, built } = &mut inode.body {
                        let mut sink = StageSink(&self.staging);
                        *built = build_symlink(target, meta, &self.opts, &mut sink)?;
                    }
                    let (parent, name, linked) = (inode.parent, inode.name.clone(), inode.linked);
                    if linked {
                        st.entry_changed(parent, &name, false);
                    }
                    return Ok(st.inodes[&ino].attr(ino));
                }
                Kind::File => self.file_content(&mut st, ino)?,
            }
        };
        // A file: its root carries the metadata, so it is rebuilt now.
        let mut content = content.lock().unwrap_or_else(|e| e.into_inner());
        let resized = set
            .size
            .map_or(Ok(()), |size| content.set_len(&self.staging, size));
        let mut st = self.lock();
        let done = resized.and_then(|()| {
            let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
            apply_meta(inode, set);
            if set.size.is_some() && set.mtime.is_none() {
                inode.touch();
            }
            self.publish(&mut st, ino, &mut content)
        });
        if let Some(Body::File(f)) = st.inodes.get_mut(&ino).map(|i| &mut i.body) {
            if f.open == 0 && !content.changed {
                f.content = None;
            }
        }
        done?;
        Ok(st.inodes[&ino].attr(ino))
    }
}

fn apply_meta(inode: &mut Inode, set: SetAttr) {
    if let Some(mode) = set.mode {
        inode.mode = mode & 0o7777;
    }
    if let Some(t) = set.mtime {
        inode.mtime = to_mtime(t);
    }
    if let Some(t) = set.atime {
        inode.atime = t;
    }
    inode.ctime = SystemTime::now();
}
