//! The mounted session as a guard: while it lives, a committer thread commits the drive
//! when changes pause; when it ends, by `finish` or by `Drop` (a panic included), the
//! committer stops, open files are published, the last commit is made and every block is
//! flushed, and the mount goes. So no way out of the daemon skips the final commit.
//!
//! Unmounting is done here with the kernel's own rules: a plain unmount fails while
//! anything holds the mount ("target is busy", with what holds it), and a lazy one
//! detaches the mount at once while the session goes on until the last open file closes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use fuser::SessionUnmounter;
use tracing::{error, warn};

use super::committer;
use super::mountpoint::is_root;
use crate::drive::{Commit, Drive};
use crate::net::NetHandle;
use crate::store::rocks::RocksStore;
use crate::store::Blocks;
use crate::vfs::FsError;

pub struct Mounted {
    /// fuser's own unmounter: disarmed once we unmounted, so that it does not try again.
    unmounter: SessionUnmounter,
    drive: Arc<Drive>,
    store: Arc<RocksStore>,
    mountpoint: PathBuf,
    committer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// The mount has left the mount table (unmounted, or detached lazily).
    detached: bool,
    finished: bool,
}

impl Mounted {
    /// Starts committing `drive`, mounted at `mountpoint`, announcing heads on `net`.
    pub fn new(
        unmounter: SessionUnmounter,
        drive: Arc<Drive>,
        store: Arc<RocksStore>,
        mountpoint: PathBuf,
        net: NetHandle,
    ) -> Mounted {
        let committer = Some(committer::start(Arc::clone(&drive), net));
        Mounted {
            unmounter,
            drive,
            store,
            mountpoint,
            committer,
            detached: false,
            finished: false,
        }
    }

    /// Unmounts when nothing holds the mount; otherwise refuses, naming what holds it.
    pub fn unmount(&mut self) -> Result<(), Busy> {
        if self.detached {
            return Ok(());
        }
        match umount(&self.mountpoint, false) {
            Ok(()) => {
                self.gone();
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(Busy {
                mountpoint: self.mountpoint.clone(),
                holders: holders(&self.mountpoint),
            }),
            Err(e) => {
                warn!(
                    "unmount {}: {e}; detaching lazily",
                    self.mountpoint.display()
                );
                self.detach();
                Ok(())
            }
        }
    }

    /// Takes the mount out of the namespace now; the session goes on serving (and
    /// committing) what is still open.
    pub fn detach(&mut self) {
        if !self.detached {
            if let Err(e) = umount(&self.mountpoint, true) {
                warn!("detaching {}: {e}", self.mountpoint.display());
            }
            self.gone();
        }
    }

    /// The mount left the namespace: fuser's unmounter has nothing left to do (its
    /// attempt fails quietly here instead of warning when the session ends).
    fn gone(&mut self) {
        self.detached = true;
        let _ = self.unmounter.unmount();
    }

    /// Someone else unmounted (`umount`, `fusermount -u`): nothing left for us to do.
    pub fn unmounted_elsewhere(&mut self) {
        self.gone();
    }

    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Ends the session: the last commit, everything flushed, the mount gone.
    pub fn finish(mut self) -> Result<Option<Commit>, FsError> {
        self.close()
    }

    fn close(&mut self) -> Result<Option<Commit>, FsError> {
        self.finished = true;
        if let Some((stop, thread)) = self.committer.take() {
            drop(stop);
            let _ = thread.join();
        }
        let committed = self.drive.flush_all().and_then(|()| self.drive.commit());
        if let Err(e) = &committed {
            error!("final commit failed: {e}");
        }
        // Blocks fetched from peers skip the write-ahead log; keep them for the next run.
        if let Err(e) = self.store.finish_bulk() {
            warn!("cannot flush fetched blocks: {e}");
        }
        self.detach();
        committed
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.close();
        }
    }
}

/// A plain unmount refused: processes still use the mount.
#[derive(Debug)]
pub struct Busy {
    pub mountpoint: PathBuf,
    pub holders: Vec<String>,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: target is busy", self.mountpoint.display())?;
        if !self.holders.is_empty() {
            write!(f, " ({})", self.holders.join("; "))?;
        }
        write!(
            f,
            "; close them, or `peerfs unmount --lazy` to detach now and finish when they close"
        )
    }
}

/// Unmounts `mountpoint`: `lazy` detaches it even while in use (MNT_DETACH).
fn umount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    if is_root() {
        let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        return match unsafe { libc::umount2(path.as_ptr(), flags) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        };
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg(mountpoint).output()?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    if said.contains("busy") {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(io::Error::other(said.trim().to_string()))
}

/// What keeps `mountpoint` busy, as `fuser -m` would say it: each process with its
/// working directory, root or an open file inside.
pub fn holders(mountpoint: &Path) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let inside = |p: &Path| p.starts_with(mountpoint);
    let mut out = Vec::new();
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let dir = entry.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let who = format!("pid {pid} ({})", name.trim());
        for (link, what) in [("cwd", "working directory"), ("root", "root directory")] {
            if let Ok(target) = std::fs::read_link(dir.join(link)) {
                if inside(&target) {
                    out.push(format!("{who}: {what} {}", target.display()));
                }
            }
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inside(&target) {
                    out.push(format!("{who}: open {}", target.display()));
                }
            }
        }
    }
    out
}
