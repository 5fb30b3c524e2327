//! What the disk under a path has room for.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid C string and `s` is a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    Ok(unsafe { s.assume_init() })
}

/// Bytes an unprivileged writer may still use on the disk under `path`.
pub fn available(path: &Path) -> std::io::Result<u64> {
    let s = statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}
