//! Finding the daemon that serves a mount point, whatever its repo: the kernel's mount
//! table says what is mounted at a directory, and every running daemon holds its repo's
//! lock file open, which names the repo; that repo's control socket then says where it
//! is mounted. Nothing needs to be registered anywhere for this.

use std::path::{Path, PathBuf};

/// How peerfs mounts show in the mount table: the type is `fuse.peerfs` (our subtype)
/// when fusermount3 mounted it, plain `fuse` when root mounted it directly; the source
/// is our file system name either way.
const FSTYPE: &str = "fuse.peerfs";
const FUSE: &str = "fuse";
const SOURCE: &str = "peerfs";
/// The lock file every process that uses a repo holds open (see `repo`).
const LOCK_FILE: &str = "repo.lock";
/// The command name of the peerfs binary, as the kernel keeps it.
const COMM: &str = "peerfs";

/// What is mounted exactly at `dir`, if anything.
pub struct Mounted {
    /// The file system type: `fuse.peerfs`, `ext4`, …
    pub fstype: String,
    /// What was mounted: a device, or a FUSE file system's name.
    pub source: String,
}

impl Mounted {
    pub fn is_peerfs(&self) -> bool {
        self.fstype == FSTYPE || (self.fstype == FUSE && self.source == SOURCE)
    }
}

pub fn mounted_at(dir: &Path) -> Option<Mounted> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The last mount at a path is the one on top.
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let at = unescape(fields.get(4)?);
        if Path::new(&at) != dir {
            return None;
        }
        Some(Mounted {
            fstype: unescape(fields.get(dash + 1)?),
            source: unescape(fields.get(dash + 2)?),
        })
    })
}

/// The repos that running peerfs processes (other than this one) hold, each once.
pub fn repos_in_use() -> Vec<PathBuf> {
    let me = std::process::id().to_string();
    let mut repos = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return repos;
    };
    for proc in procs.filter_map(Result::ok) {
        let pid = proc.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != COMM {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if target.file_name().is_some_and(|n| n == LOCK_FILE) {
                if let Some(repo) = target.parent() {
                    if !repos.iter().any(|r| r == repo) {
                        repos.push(repo.to_path_buf());
                    }
                }
            }
        }
    }
    repos
}

/// Undoes the mount table's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn mount_table_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/my\040drive"), "/mnt/my drive");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
