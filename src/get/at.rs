//! A directory held open, and the calls that make entries in it by name relative to it
//! (`openat`, `mkdirat`, `symlinkat`, …), none of which follows a symlink in the name.
//! Reaching entries this way, never by a path, is what keeps `get` inside its output:
//! a symlink already there, or one renamed in meanwhile, is not on the way.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An open directory.
pub struct Dir {
    /// A `File` so that `set_permissions` (fchmod) works on it as on any file.
    file: File,
}

/// What a name in a directory is, not following a symlink.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Symlink,
    /// A file, or anything else that is neither.
    Other,
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `Ok(rc)` for a non-negative return, else the call's errno.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `[atime, mtime]` that leave the atime as it is.
pub fn mtime_only(secs: i64, nanos: u32) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as libc::c_long,
        },
    ]
}

impl Dir {
    /// Opens the directory at `path`, following symlinks in it: a path the user named.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = c_name(path.as_os_str())?;
        // SAFETY: `c` is a valid NUL-terminated path.
        let fd = check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dir::own(fd))
    }

    fn own(fd: RawFd) -> Dir {
        // SAFETY: `fd` was just returned by a successful open and is owned by no one else.
        Dir {
            file: unsafe { File::from_raw_fd(fd) },
        }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Opens the directory `name` in this one; a symlink there is an error (`ENOTDIR`
    /// or `ELOOP`), never followed.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let c = c_name(name)?;
        // SAFETY: `self.fd()` is an open directory and `c` a valid NUL-terminated name.
        let fd = check(unsafe {
            libc::openat(
                self.fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dir::own(fd))
    }

    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: as in `open_dir`.
        check(unsafe { libc::mkdirat(self.fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
    }

    /// Creates the file `name`, which must not exist yet (`EEXIST` otherwise, a
    /// symlink included), for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let c = c_name(name)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: as in `open_dir`; the mode is passed as the variadic argument O_CREAT reads.
        let fd =
            check(unsafe { libc::openat(self.fd(), c.as_ptr(), flags, mode as libc::c_uint) })?;
        // SAFETY: `fd` was just opened and is owned by no one else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn symlink(&self, target: &[u8], name: &OsStr) -> io::Result<()> {
        let t = CString::new(target).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let c = c_name(name)?;
        // SAFETY: as in `open_dir`; `t` is a valid NUL-terminated string too.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.fd(), c.as_ptr()) }).map(drop)
    }

    /// What `name` is, without following it.
    pub fn kind(&self, name: &OsStr) -> io::Result<Kind> {
        let c = c_name(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: as in `open_dir`; `st` is writable for one `stat`.
        check(unsafe {
            libc::fstatat(
                self.fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: fstatat succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        })
    }

    /// Removes the non-directory `name` (a symlink itself, not what it names).
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: as in `open_dir`.
        check(unsafe { libc::unlinkat(self.fd(), c.as_ptr(), 0) }).map(drop)
    }

    /// Sets the mtime of `name` itself (a symlink's own, not its target's).
    pub fn set_mtime_of(&self, name: &OsStr, secs: i64, nanos: u32) -> io::Result<()> {
        let c = c_name(name)?;
        let times = mtime_only(secs, nanos);
        // SAFETY: as in `open_dir`; `times` is two valid timespecs.
        check(unsafe {
            libc::utimensat(
                self.fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }
}

/// Sets the mtime of an open file or directory.
pub fn set_mtime_fd(file: &File, secs: i64, nanos: u32) -> io::Result<()> {
    let times = mtime_only(secs, nanos);
    // SAFETY: `file` is open and `times` is two valid timespecs.
    check(unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) }).map(drop)
}
