//! A shared mapping of a file that another process is growing, the case behind the
//! stress test's SIGBUS (seed 1796145660249977688, round 222).
//!
//! A `pwrite` that grows a file in the mount reaches the daemon as several WRITE
//! requests, and the kernel applies the new size to its inode only when the whole call
//! returns (FUSE without writeback caching). A `stat` from another process meanwhile
//! asks the daemon, which has the first requests' bytes already: the kernel hands that
//! larger size to `stat` but keeps the old one for the page cache, so a mapping read
//! between the two ends takes SIGBUS until the write returns. A local filesystem grows
//! its inode page by page and `stat` never shows more than a mapping can reach.
//!
//! The writer is stopped halfway deterministically: the second half of its buffer is
//! registered with userfaultfd, so the kernel's copy from it waits until the test
//! supplies the page.
//!
//! This is a limitation of the kernel's FUSE write-through mode that the daemon cannot
//! close (it cannot know when the kernel has applied a write); the README lists it. The
//! test fails if the mount ever stops showing it, so the README is updated then.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bytes, wait_child, Mounted};

/// The file's size before the growing write.
const OLD_SIZE: u64 = 64 << 10;
/// The growing write: two 1 MiB WRITE requests are sent before the writer stops.
const GROWTH: usize = 3 << 20;
/// Where the writer's buffer stops being readable until the test supplies it.
const STALL_AT: usize = 2 << 20;
/// The env var that turns this test binary into the mapping process.
const MAPPER_ENV: &str = "PEERFS_MMAP_GROWTH_MAPPER";

// userfaultfd(2)'s ABI (linux/userfaultfd.h); the libc crate does not carry it.
const UFFD_API: u64 = 0xaa;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `_IOWR(0xaa, nr, size)`.
const fn uffd_ioctl(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
}
const UFFDIO_API: u64 = uffd_ioctl(0x3f, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = uffd_ioctl(0x00, size_of::<UffdioRegister>());
const UFFDIO_COPY: u64 = uffd_ioctl(0x03, size_of::<UffdioCopy>());

/// An anonymous buffer whose pages from `STALL_AT` on are missing until `supply`.
struct StalledBuffer {
    ptr: *mut u8,
    len: usize,
    uffd: File,
}

// SAFETY: the buffer is a private mapping owned by this value; the writer thread only
// reads it, through the kernel.
unsafe impl Send for StalledBuffer {}
unsafe impl Sync for StalledBuffer {}

impl StalledBuffer {
    fn new(len: usize, filled: &[u8]) -> StalledBuffer {
        // SAFETY: plain syscalls on memory and descriptors this function owns.
        unsafe {
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(
                ptr != libc::MAP_FAILED,
                "mmap: {}",
                std::io::Error::last_os_error()
            );
            let ptr = ptr.cast::<u8>();
            std::ptr::copy_nonoverlapping(filled.as_ptr(), ptr, filled.len());
            let fd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) as i32;
            assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
            let uffd = File::from(OwnedFd::from_raw_fd(fd));
            let mut api = UffdioApi {
                api: UFFD_API,
                features: 0,
                ioctls: 0,
            };
            assert_eq!(libc::ioctl(fd, UFFDIO_API as _, &mut api), 0, "UFFDIO_API");
            let mut reg = UffdioRegister {
                start: ptr.add(filled.len()) as u64,
                len: (len - filled.len()) as u64,
                mode: UFFDIO_REGISTER_MODE_MISSING,
                ioctls: 0,
            };
            assert_eq!(
                libc::ioctl(fd, UFFDIO_REGISTER as _, &mut reg),
                0,
                "UFFDIO_REGISTER: {}",
                std::io::Error::last_os_error()
            );
            StalledBuffer { ptr, len, uffd }
        }
    }

    /// Waits until someone reads the missing part (the kernel, copying for a write).
    fn wait_for_reader(&self) {
        let mut msg = [0u8; 32];
        (&self.uffd).read_exact(&mut msg).expect("read userfaultfd");
        assert_eq!(msg[0], UFFD_EVENT_PAGEFAULT, "a page fault event");
    }

    /// Fills the missing part with `data`, which wakes the reader.
    fn supply(&self, data: &[u8]) {
        let page = 4096;
        for (i, chunk) in data.chunks(page).enumerate() {
            let mut full = [0u8; 4096];
            full[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: the destination is inside the registered range of our buffer.
            unsafe {
                let mut copy = UffdioCopy {
                    dst: self.ptr.add(STALL_AT + i * page) as u64,
                    src: full.as_ptr() as u64,
                    len: page as u64,
                    mode: 0,
                    copy: 0,
                };
                // EEXIST: that page was supplied already (a retried fault).
                let done = libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_COPY as _, &mut copy);
                let err = std::io::Error::last_os_error();
                assert!(
                    done == 0 || err.raw_os_error() == Some(libc::EEXIST),
                    "UFFDIO_COPY: {err}"
                );
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the whole mapping is ours; reading the missing part waits for `supply`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for StalledBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this value made.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What the mapping process saw: the size `fstat` gave, and whether reading the last
/// byte of a mapping of that size worked (`None`: it took SIGBUS).
struct Mapped {
    stat_size: u64,
    last_byte: Option<u8>,
}

/// Grows `path` by a write that stops halfway, and meanwhile lets another process
/// `fstat` it, map it and read its last byte. Returns what that process saw.
fn map_while_growing(path: &Path) -> Mapped {
    fs::write(path, bytes(OLD_SIZE as usize, 1)).expect("write the old contents");
    let data = bytes(GROWTH, 2);
    let buffer = StalledBuffer::new(GROWTH, &data[..STALL_AT]);
    let file = OpenOptions::new().write(true).open(path).expect("open");
    let mapped = std::thread::scope(|s| {
        let writer = s.spawn(|| file.write_all_at(buffer.as_slice(), OLD_SIZE));
        buffer.wait_for_reader();
        // The writer is stopped inside pwrite, its first bytes given to the filesystem.
        let mut mapper = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "mapper",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(MAPPER_ENV, path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the mapping process");
        let status = wait_child(&mut mapper, Duration::from_secs(60));
        buffer.supply(&data[STALL_AT..]);
        writer
            .join()
            .expect("writer thread")
            .expect("the growing write");
        let status = status.expect("the mapping process ends");
        let mut out = String::new();
        let _ = mapper.stdout.take().map(|mut o| o.read_to_string(&mut out));
        let stat_size = out
            .split("stat size ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no size from the mapping process: {out:?}"));
        let last_byte = match status.signal() {
            Some(libc::SIGBUS) => None,
            _ => {
                assert!(status.success(), "mapping process: {status}");
                let byte = out
                    .split("last byte ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no byte from the mapping process: {out:?}"));
                Some(byte)
            }
        };
        Mapped {
            stat_size,
            last_byte,
        }
    });
    let mut whole = data.clone();
    whole.splice(0..0, bytes(OLD_SIZE as usize, 1));
    assert_eq!(
        fs::read(path).expect("read back"),
        whole,
        "the file after the write"
    );
    mapped
}

/// Not a test: the mapping process `map_while_growing` starts.
#[test]
#[ignore = "the mapping process of the tests below, not a test of its own"]
fn mapper() {
    let Some(path) = std::env::var_os(MAPPER_ENV) else {
        return;
    };
    let f = File::open(&path).expect("open");
    let size = f.metadata().expect("fstat").len();
    // Printed before the access, which may end this process.
    println!("stat size {size}");
    // SAFETY: a shared read-only mapping of an open file, of the size fstat gave.
    let last = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        std::ptr::read_volatile(p.cast::<u8>().add(size as usize - 1))
    };
    println!("last byte {last}");
}

#[test]
fn on_a_local_disk_stat_never_shows_more_than_a_mapping_reaches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seen = map_while_growing(&dir.path().join("growing"));
    assert!(seen.stat_size > OLD_SIZE, "fstat saw the write under way");
    assert!(
        seen.last_byte.is_some(),
        "the last byte of a mapping of the {} bytes fstat gave took SIGBUS",
        seen.stat_size
    );
}

#[test]
fn in_the_mount_stat_can_show_a_growing_write_before_mappings_reach_it() {
    let m = Mounted::new();
    let seen = map_while_growing(&m.drive().join("growing"));
    assert!(
        seen.stat_size > OLD_SIZE && seen.last_byte.is_none(),
        "the documented limitation (README, shared mappings of growing files) no longer \
         shows: fstat gave {} bytes (the old size is {OLD_SIZE}), the last byte read {:?}; \
         update the README and the stress test's shared mappings",
        seen.stat_size,
        seen.last_byte
    );
}
