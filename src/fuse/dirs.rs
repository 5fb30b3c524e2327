//! Directory listings: taken whole at opendir (with `.` and `..`), so that readdir
//! pages are consistent and cheap, and dropped at releasedir.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{
    FileHandle, FopenFlags, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyOpen,
};

use super::reply::errno;
use super::route::{read_only, ttl};
use super::PeerFs;
use crate::vfs::ino::{is_outbox_ino, is_peer_ino, DRIVE_ROOT, IPFS, MOUNT_ROOT, OUTBOX, PEERS};
use crate::vfs::layout::{DRIVE_DIR, INBOX_DIR, IPFS_DIR, OUTBOX_DIR, PEERS_DIR};
use crate::vfs::{Attr, FsError};

type Listing = Vec<(Vec<u8>, Attr)>;

/// Directory listings taken at opendir, so readdir pages are consistent and cheap.
#[derive(Default)]
pub(super) struct Listings {
    open: Mutex<HashMap<u64, Arc<Listing>>>,
    next: AtomicU64,
}

impl Listings {
    fn insert(&self, listing: Listing) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(listing));
        fh
    }

    /// The listing open as `fh` (empty if none is).
    fn get(&self, fh: FileHandle) -> Arc<Listing> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&fh.0).cloned().unwrap_or_default()
    }
}

/// The entries of `listing` from `offset` on, each with its position. A page costs what
/// it returns, not what is left of the listing: a 100k-entry directory is read in
/// thousands of pages.
fn page(listing: &Listing, offset: u64) -> impl Iterator<Item = (usize, &(Vec<u8>, Attr))> {
    let from = usize::try_from(offset).unwrap_or(usize::MAX);
    listing
        .get(from..)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(move |(i, entry)| (from + i, entry))
}

impl PeerFs {
    /// Lists a directory with `.` and `..` first.
    fn listing(&self, ino: u64) -> Result<Vec<(Vec<u8>, Attr)>, FsError> {
        let (parent, entries) = match ino {
            MOUNT_ROOT => {
                let drive = self.drive.getattr(DRIVE_ROOT)?;
                let peers = self.virtual_attr(PEERS);
                let ipfs = self.virtual_attr(IPFS);
                let mut top = vec![
                    (DRIVE_DIR.as_bytes().to_vec(), drive),
                    (PEERS_DIR.as_bytes().to_vec(), peers),
                    (IPFS_DIR.as_bytes().to_vec(), ipfs),
                ];
                if let Some(inbox) = self.peers.as_ref().and_then(|p| p.inbox_attr()) {
                    top.push((INBOX_DIR.as_bytes().to_vec(), inbox));
                }
                if let Some(outbox) = &self.outbox {
                    top.push((OUTBOX_DIR.as_bytes().to_vec(), outbox.attr(OUTBOX)?));
                }
                (MOUNT_ROOT, top)
            }
            PEERS => (
                MOUNT_ROOT,
                self.peers.as_ref().map(|p| p.tops()).unwrap_or_default(),
            ),
            // Any CID may be looked up there; none is listed.
            IPFS => (MOUNT_ROOT, Vec::new()),
            i if is_peer_ino(i) => {
                let view = self.peer_view()?;
                (view.parent(i), view.list(i)?)
            }
            i if is_outbox_ino(i) => {
                let outbox = self.outbox()?;
                let parent = outbox.parent(i).unwrap_or(MOUNT_ROOT);
                let parent = if i == OUTBOX { MOUNT_ROOT } else { parent };
                (parent, outbox.list(i)?)
            }
            DRIVE_ROOT => (MOUNT_ROOT, self.drive.list(ino)?),
            _ => (self.drive.parent(ino), self.drive.list(ino)?),
        };
        let mut out = vec![
            (b".".to_vec(), self.attr_of(ino)?),
            (b"..".to_vec(), self.attr_of(parent)?),
        ];
        out.extend(entries);
        Ok(out)
    }
}

pub(super) fn opendir(fs: &PeerFs, ino: INodeNo, reply: ReplyOpen) {
    if is_peer_ino(ino.0) {
        let (view, listings) = match fs.peer_view() {
            Ok(v) => (v, Arc::clone(&fs.listings)),
            Err(e) => return reply.error(errno(&e)),
        };
        let (peers_attr, ipfs_attr) = (fs.virtual_attr(PEERS), fs.virtual_attr(IPFS));
        let root_attr = fs.virtual_attr(MOUNT_ROOT);
        return fs.offload(move || {
            let listing = view.list(ino.0).and_then(|entries| {
                let parent = view.parent(ino.0);
                let attr_of = |i| match i {
                    PEERS => Ok(peers_attr),
                    IPFS => Ok(ipfs_attr),
                    // inbox/'s parent.
                    MOUNT_ROOT => Ok(root_attr),
                    _ => view.getattr(i),
                };
                let mut out = vec![
                    (b".".to_vec(), attr_of(ino.0)?),
                    (b"..".to_vec(), attr_of(parent)?),
                ];
                out.extend(entries);
                Ok(out)
            });
            match listing {
                Ok(l) => reply.opened(FileHandle(listings.insert(l)), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
    match fs.listing(ino.0) {
        Ok(entries) => {
            let fh = fs.listings.insert(entries);
            reply.opened(FileHandle(fh), FopenFlags::empty())
        }
        Err(e) => reply.error(errno(&e)),
    }
}

pub(super) fn readdir(fs: &PeerFs, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
    let listing = fs.listings.get(fh);
    for (i, (name, a)) in page(&listing, offset) {
        let kind = fs.file_attr(a).kind;
        if reply.add(INodeNo(a.ino), i as u64 + 1, kind, OsStr::from_bytes(name)) {
            break;
        }
    }
    reply.ok()
}

pub(super) fn readdirplus(fs: &PeerFs, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
    let listing = fs.listings.get(fh);
    for (i, (name, a)) in page(&listing, offset) {
        let attr = fs.file_attr(a);
        let name = OsStr::from_bytes(name);
        if reply.add(
            INodeNo(a.ino),
            i as u64 + 1,
            name,
            ttl(a.ino),
            &attr,
            Generation(0),
        ) {
            break;
        }
        // The kernel holds every entry but . and .. as if looked up.
        if i >= 2 && !read_only(a.ino) {
            fs.drive.remember(a.ino);
        }
    }
    reply.ok()
}

pub(super) fn releasedir(fs: &PeerFs, fh: FileHandle, reply: ReplyEmpty) {
    fs.listings
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&fh.0);
    reply.ok()
}

pub(super) fn fsyncdir(fs: &PeerFs, reply: ReplyEmpty) {
    match fs.drive.commit() {
        Ok(_) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}
