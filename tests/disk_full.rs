//! A repo on a small tmpfs that fills up: the writer gets ENOSPC, nothing committed is
//! lost, and once the disk has room again, writes work without a remount.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bytes, sh, write, Mounted, TestRepo};

/// A tmpfs mounted for the test; unmounted (and its mount point removed) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn available(path: &Path) -> u64 {
    peerfs::disk::available(path).unwrap()
}

#[test]
fn a_full_disk_gives_enospc_loses_nothing_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&base.path().join("disk"), "160m");
    let repo = TestRepo::init_at(&disk.0.join("repo"));
    repo.set_config("min_disk_free", "\"32 MiB\"");
    let mut m = Mounted::with_repo(repo);

    let kept = bytes(6 << 20, 1);
    write(&m.drive().join("kept.bin"), &kept);
    sh(&m.drive(), "sync");

    // Leave the repo about 24 MiB above its reserve.
    let ballast = disk.0.join("ballast");
    let fill = available(&disk.0) - (56 << 20);
    sh(
        &disk.0,
        &format!("fallocate -l {fill} {}", ballast.display()),
    );

    let start = Instant::now();
    let out = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=64", "conv=fsync"])
        .arg(format!("of={}", m.drive().join("big.bin").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "64 MiB fit in 24: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
    // Everything else keeps working, and what was committed is whole.
    assert_eq!(std::fs::read(m.drive().join("kept.bin")).unwrap(), kept);
    m.repo.ok(&["status"]);
    // A delete can still be committed on the full disk.
    std::fs::remove_file(m.drive().join("big.bin")).unwrap();
    sh(&m.drive(), "sync");

    // Room again: writes work at once, no remount.
    std::fs::remove_file(&ballast).unwrap();
    let after = bytes(20 << 20, 2);
    write(&m.drive().join("after.bin"), &after);
    sh(&m.drive(), "sync");
    assert_eq!(std::fs::read(m.drive().join("after.bin")).unwrap(), after);

    m.unmount();
    m.repo.ok(&["fsck"]);
    m.remount();
    assert_eq!(std::fs::read(m.drive().join("kept.bin")).unwrap(), kept);
    assert_eq!(std::fs::read(m.drive().join("after.bin")).unwrap(), after);
    assert!(!m.drive().join("big.bin").exists());
    m.unmount();
}
