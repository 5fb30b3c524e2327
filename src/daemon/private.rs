//! `peerfs share` and `user.peerfs.readers`: who may read a private folder of my drive,
//! resolved against the peer book, saved, then published sealed at once.

use std::path::Path;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;

use super::control::{SharedFolder, SharedReader};
use crate::drive::Drive;
use crate::net::peerbook::PeerBook;
use crate::seal::publish::normal;
use crate::vfs::layout::DRIVE_DIR;

/// What a share needs of the daemon.
pub struct Sharing {
    pub drive: Arc<Drive>,
    pub book: Arc<Mutex<PeerBook>>,
    pub mountpoint: std::path::PathBuf,
}

impl Sharing {
    /// `path` as the folders file names it: below `MOUNTPOINT/drive/`, or relative to
    /// the drive already.
    pub fn drive_path(&self, path: &str) -> Result<String, String> {
        let p = Path::new(path);
        let rel = if p.is_absolute() {
            p.strip_prefix(self.mountpoint.join(DRIVE_DIR))
                .map_err(|_| {
                    format!(
                        "{path}: not in my drive ({}/{DRIVE_DIR}/)",
                        self.mountpoint.display()
                    )
                })?
                .to_str()
                .ok_or_else(|| format!("{path}: not UTF-8"))?
                .to_string()
        } else {
            path.to_string()
        };
        Ok(normal(&rel))
    }

    fn peer(&self, name: &str) -> Result<PeerId, String> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = book.by_name(name).and_then(|e| e.peer_id()) {
            return Ok(id);
        }
        name.parse()
            .map_err(|_| format!("{name}: no such peer (a name from `peerfs peers`, or a peer ID)"))
    }

    fn name_of(&self, peer: &str) -> String {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.entries()
            .iter()
            .find(|e| e.peer_id().is_some_and(|p| p.to_string() == peer))
            .map_or_else(|| peer.to_string(), |e| e.name.clone())
    }

    /// Sets the readers of `path` (each a name or peer ID) and publishes.
    pub fn set(&self, path: &str, readers: &[String]) -> Result<SharedFolder, String> {
        let rel = self.drive_path(path)?;
        let names: Vec<&str> = readers
            .iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        if names.is_empty() {
            return Err("name at least one reader (--with NAME[,NAME…])".into());
        }
        let ids = names
            .iter()
            .map(|n| self.peer(n))
            .collect::<Result<Vec<_>, _>>()?;
        let publisher = self
            .drive
            .publisher()
            .ok_or("this daemon does not seal private folders")?;
        if !self.is_dir(&rel) {
            return Err(format!("{path}: not a directory of my drive"));
        }
        publisher
            .set_readers(&rel, &ids)
            .map_err(|e| e.to_string())?;
        self.drive.republish().map_err(|e| e.to_string())?;
        self.show(path)
    }

    /// Whether `rel` names a directory of the drive. Each lookup is given back, as the
    /// kernel would with `forget`.
    fn is_dir(&self, rel: &str) -> bool {
        let mut at = crate::vfs::ino::DRIVE_ROOT;
        let mut looked = Vec::new();
        let mut found = true;
        for part in rel.split('/') {
            match self.drive.lookup(at, part.as_bytes()) {
                Ok(a) => {
                    at = a.ino;
                    looked.push(at);
                }
                Err(_) => {
                    found = false;
                    break;
                }
            }
        }
        let dir = found
            && matches!(
                self.drive.getattr(at).map(|a| a.kind),
                Ok(crate::vfs::Kind::Directory)
            );
        for ino in looked.into_iter().rev() {
            self.drive.forget(ino, 1);
        }
        dir
    }

    /// Who may read `path`.
    pub fn show(&self, path: &str) -> Result<SharedFolder, String> {
        let rel = self.drive_path(path)?;
        let folders = self
            .drive
            .publisher()
            .map(|p| p.folders())
            .unwrap_or_default();
        let Some(f) = folders.get(&rel) else {
            return Ok(SharedFolder {
                path: rel,
                private: false,
                readers: Vec::new(),
                generations: 0,
            });
        };
        let readers = f
            .gens
            .last()
            .map(|g| g.readers.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|id| SharedReader {
                name: self.name_of(&id),
                peer_id: id,
            })
            .collect();
        Ok(SharedFolder {
            path: rel,
            private: true,
            readers,
            generations: f.gens.len() as u32,
        })
    }
}

/// `user.peerfs.readers` through the mount, answered once the daemon's parts exist.
#[derive(Default)]
pub struct ReadersSlot(pub std::sync::OnceLock<Sharing>);

impl crate::fuse::Readers for ReadersSlot {
    fn get(&self, path: &str) -> Result<Option<String>, String> {
        let sharing = self.0.get().ok_or("the daemon is starting")?;
        let f = sharing.show(path)?;
        let names: Vec<String> = f.readers.into_iter().map(|r| r.name).collect();
        Ok(f.private.then(|| names.join(",")))
    }

    fn set(&self, path: &str, readers: &str) -> Result<(), String> {
        let sharing = self.0.get().ok_or("the daemon is starting")?;
        sharing.set(path, &[readers.to_string()]).map(|_| ())
    }
}
