//! The mount point before and after a session: whether it can be mounted on, where
//! the repo's daemon mounted, and cleaning up the stale mount a killed daemon leaves.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::error::DaemonError;

/// Checks that `mountpoint` can be mounted on, cleaning up a stale mount a crashed
/// daemon left; returns its absolute path.
pub fn preflight(mountpoint: &Path) -> Result<PathBuf, DaemonError> {
    let fail = |reason: &str| DaemonError::MountPoint {
        path: mountpoint.to_path_buf(),
        reason: reason.to_string(),
    };
    let probe = || -> std::io::Result<(std::fs::Metadata, bool)> {
        let meta = std::fs::metadata(mountpoint)?;
        let empty = !meta.is_dir() || std::fs::read_dir(mountpoint)?.next().is_none();
        Ok((meta, empty))
    };
    let probed = match probe() {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            warn!("{}: cleaning up a stale mount", mountpoint.display());
            unmount_stale(mountpoint);
            probe()
        }
        other => other,
    };
    let (meta, empty) = match probed {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail("does not exist (create it with mkdir)"))
        }
        Err(e) => return Err(fail(&e.to_string())),
    };
    if !meta.is_dir() {
        return Err(fail("is not a directory"));
    }
    if !empty {
        return Err(fail("is not empty (is something mounted there already?)"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(DaemonError::NoFuseDevice);
    }
    if !is_root() && find_in_path("fusermount3").is_none() {
        return Err(DaemonError::NoFusermount);
    }
    std::fs::canonicalize(mountpoint).map_err(|e| fail(&e.to_string()))
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Where the repo's daemon mounted, kept in the repo while it runs.
pub(super) const MOUNT_RECORD: &str = "mounted-at";

/// Where the repo's daemon mounted and left a mount behind when it stopped without
/// unmounting (killed, crashed): the mount is still there and answers "Transport
/// endpoint is not connected".
pub fn stale_mount(repo: &Path) -> Option<PathBuf> {
    let recorded = std::fs::read(repo.join(MOUNT_RECORD)).ok()?;
    let dir = PathBuf::from(std::ffi::OsString::from_vec(recorded));
    is_stale_mount(&dir).then_some(dir)
}

/// Whether `dir` is a FUSE mount whose daemon is gone. Asked with statfs, which always
/// reaches the daemon: a `stat` may be answered from the kernel's attribute cache.
pub fn is_stale_mount(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `buf` has room for one statfs.
    let rc = unsafe { libc::statfs(path.as_ptr(), buf.as_mut_ptr()) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

/// Detaches a mount whose daemon is gone ("Transport endpoint is not connected").
pub fn unmount_stale(mountpoint: &Path) {
    let ok = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .status()
        .is_ok_and(|s| s.success());
    if !ok && is_root() {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(mountpoint)
            .status();
    }
}
