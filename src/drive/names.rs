//! The namespace: entries looked up, listed, made, removed and renamed by name. A
//! stored directory's entries are read into the inode table on first use.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::file::FileContent;
use super::staging::StageSink;
use super::tree::{meta_at, Body, Dir, FileBody, Inode, LoadedDir, State};
use super::Drive;
use crate::unixfs::build::{build_symlink, Built};
use crate::unixfs::load_node;
use crate::unixfs::read::list;
use crate::vfs::ino::DRIVE_ROOT;
use crate::vfs::{Attr, FsError, Kind};

/// Longest file name, in bytes, as on Linux filesystems.
const MAX_NAME: usize = 255;

impl Drive {
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        let inode = st.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        inode.lookups += 1;
        Ok(inode.attr(ino))
    }

    /// The drive's root as the mount's `drive` entry.
    pub fn lookup_root(&self) -> Result<Attr, FsError> {
        let mut st = self.lock();
        let root = st.inodes.get_mut(&DRIVE_ROOT).ok_or(FsError::NotFound)?;
        root.lookups += 1;
        Ok(root.attr(DRIVE_ROOT))
    }

    /// The entry's path from the drive's root (`a/b`); `None` once it is unlinked (or
    /// its name is not UTF-8).
    pub fn path_of(&self, ino: u64) -> Option<String> {
        let st = self.lock();
        let mut parts = Vec::new();
        let mut at = ino;
        while at != DRIVE_ROOT {
            let inode = st.inodes.get(&at).filter(|i| i.linked)?;
            parts.push(std::str::from_utf8(&inode.name).ok()?.to_string());
            at = inode.parent;
            if parts.len() > st.inodes.len() {
                return None;
            }
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let mut st = self.lock();
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
        }
        st.reap(ino);
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let st = self.lock();
        Ok(st.inodes.get(&ino).ok_or(FsError::NotFound)?.attr(ino))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        match &self.lock().inodes.get(&ino).ok_or(FsError::NotFound)?.body {
            Body::Symlink { target, .. } => Ok(target.clone()),
            _ => Err(FsError::Invalid),
        }
    }

    /// The entries of a directory with their attributes, in name order.
    pub fn list(&self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>, FsError> {
        let mut st = self.lock();
        self.load_dir(&mut st, ino)?;
        let st = &*st;
        let dir = match st.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::Dir(Dir::Loaded(d))) => d,
            Some(_) => return Err(FsError::NotADirectory),
            None => return Err(FsError::NotFound),
        };
        Ok(dir
            .children
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), st.inodes.get(c)?.attr(*c))))
            .collect())
    }

    /// Counts a lookup the kernel took through readdirplus.
    pub fn remember(&self, ino: u64) {
        if let Some(inode) = self.lock().inodes.get_mut(&ino) {
            inode.lookups += 1;
        }
    }

    pub fn parent(&self, ino: u64) -> u64 {
        self.lock()
            .inodes
            .get(&ino)
            .map_or(DRIVE_ROOT, |i| i.parent)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> Result<Attr, FsError> {
        let mut st = self.lock();
        self.insert(&mut st, Inode::new_dir(parent, name, mode))
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> Result<Attr, FsError> {
        let mut st = self.lock();
        let now = SystemTime::now();
        let mut sink = StageSink(&self.staging);
        let built = build_symlink(target, meta_at(0o777, now), &self.opts, &mut sink)?;
        self.insert(
            &mut st,
            Inode::new_symlink(parent, name, target, now, built),
        )
    }

    /// Creates an empty file and opens it; returns its attributes and a handle.
    pub fn create(&self, parent: u64, name: &[u8], mode: u32) -> Result<(Attr, u64), FsError> {
        let mut st = self.lock();
        let now = SystemTime::now();
        let mut content = FileContent::empty(&self.opts);
        let built = content.build(&self.staging, &self.opts, &self.zeros, meta_at(mode, now))?;
        let content = Arc::new(Mutex::new(content));
        let file = FileBody {
            size: 0,
            allocated: 0,
            built,
            content: Some(Arc::clone(&content)),
            open: 1,
        };
        let attr = self.insert(&mut st, Inode::new_file(parent, name, mode, now, file))?;
        let fh = st.new_handle(attr.ino, content);
        Ok((attr, fh))
    }

    /// Links a new entry into its parent (named in the inode).
    fn insert(&self, st: &mut State, inode: Inode) -> Result<Attr, FsError> {
        check_name(&inode.name)?;
        let (parent, name) = (inode.parent, inode.name.clone());
        if self.child(st, parent, &name)?.is_some() {
            return Err(FsError::Exists);
        }
        let ino = st.new_ino();
        let attr = inode.attr(ino);
        let is_dir = attr.kind == Kind::Directory;
        st.inodes.insert(ino, inode);
        st.loaded_dir(parent)
            .ok_or(FsError::NotADirectory)?
            .add(&name, ino, is_dir);
        st.entry_changed(parent, &name, true);
        Ok(attr)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        if st.inodes[&ino].kind() == Kind::Directory {
            return Err(FsError::IsADirectory);
        }
        self.remove_entry(&mut st, parent, name, ino);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        self.check_empty_dir(&mut st, ino)?;
        self.remove_entry(&mut st, parent, name, ino);
        Ok(())
    }

    fn remove_entry(&self, st: &mut State, parent: u64, name: &[u8], ino: u64) {
        let is_dir = st
            .inodes
            .get(&ino)
            .is_some_and(|i| i.kind() == Kind::Directory);
        if let Some(dir) = st.loaded_dir(parent) {
            dir.remove(name, is_dir);
        }
        st.detach(ino);
        st.entry_changed(parent, name, true);
    }

    fn check_empty_dir(&self, st: &mut State, ino: u64) -> Result<(), FsError> {
        self.load_dir(st, ino)?;
        match &st.inodes[&ino].body {
            Body::Dir(Dir::Loaded(d)) if d.children.is_empty() => Ok(()),
            Body::Dir(_) => Err(FsError::NotEmpty),
            _ => Err(FsError::NotADirectory),
        }
    }

    /// Moves `name` to `new_name`, atomically replacing what was there (unless
    /// `no_replace`), as rename(2) does.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        no_replace: bool,
    ) -> Result<(), FsError> {
        check_name(new_name)?;
        let mut st = self.lock();
        let ino = self
            .child(&mut st, parent, name)?
            .ok_or(FsError::NotFound)?;
        let is_dir = st.inodes[&ino].kind() == Kind::Directory;
        // A directory cannot move into itself or below itself.
        let mut up = new_parent;
        loop {
            if up == ino {
                return Err(FsError::Invalid);
            }
            if up == DRIVE_ROOT {
                break;
            }
            up = st.inodes.get(&up).map_or(DRIVE_ROOT, |i| i.parent);
        }
        if let Some(old) = self.child(&mut st, new_parent, new_name)? {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(FsError::Exists);
            }
            match (is_dir, st.inodes[&old].kind() == Kind::Directory) {
                (true, true) => self.check_empty_dir(&mut st, old)?,
                (true, false) => return Err(FsError::NotADirectory),
                (false, true) => return Err(FsError::IsADirectory),
                (false, false) => {}
            }
            st.detach(old);
        }
        if let Some(dir) = st.loaded_dir(parent) {
            dir.remove(name, is_dir);
        }
        st.loaded_dir(new_parent)
            .ok_or(FsError::NotADirectory)?
            .add(new_name, ino, is_dir);
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_vec();
            inode.ctime = SystemTime::now();
        }
        st.entry_changed(parent, name, true);
        st.entry_changed(new_parent, new_name, true);
        Ok(())
    }

    /// The inode of `name` in directory `parent`, loading the directory if needed.
    pub(super) fn child(
        &self,
        st: &mut State,
        parent: u64,
        name: &[u8],
    ) -> Result<Option<u64>, FsError> {
        if name.len() > MAX_NAME {
            return Err(FsError::NameTooLong);
        }
        self.load_dir(st, parent)?;
        match &st.inodes.get(&parent).ok_or(FsError::NotFound)?.body {
            Body::Dir(Dir::Loaded(d)) => Ok(d.children.get(name).copied()),
            _ => Err(FsError::NotADirectory),
        }
    }

    /// Reads a stored directory's entries into the inode table, once.
    pub(super) fn load_dir(&self, st: &mut State, ino: u64) -> Result<(), FsError> {
        let inode = st.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let Body::Dir(Dir::Stored(stored)) = &inode.body else {
            return Ok(());
        };
        let stored = *stored;
        let node = load_node(&self.staging, &stored.built.cid)?;
        let mut dir = LoadedDir {
            children: BTreeMap::new(),
            name_bytes: 0,
            subdirs: 0,
            stored: Some(stored),
            changed: None,
        };
        let mut loaded = Vec::new();
        for entry in list(&self.staging, &stored.built.cid, &node)? {
            let child = load_node(&self.staging, &entry.cid)?;
            let built = Built {
                cid: entry.cid,
                tsize: entry.tsize,
            };
            loaded.push((
                entry.name,
                Inode::stored(ino, b"", &child, built, &self.staging, &self.zeros),
            ));
        }
        for (name, mut child) in loaded {
            let child_ino = st.new_ino();
            child.name = name.clone();
            let is_dir = child.kind() == Kind::Directory;
            st.inodes.insert(child_ino, child);
            dir.add(&name, child_ino, is_dir);
        }
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.body = Body::Dir(Dir::Loaded(dir));
        }
        Ok(())
    }
}

fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid);
    }
    Ok(())
}
