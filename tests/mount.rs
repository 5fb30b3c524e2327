//! The mounted drive, judged by ordinary tools on a real FUSE mount.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{bytes, peerfs_cid, sh, write, Mounted, TestRepo};

fn cstr(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn cid_xattr(path: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.peerfs.cid"])
        .arg(path)
        .output()
        .expect("getfattr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn mount_layout_status_and_unmount() {
    let m = Mounted::new();
    let top: Vec<String> = fs::read_dir(m.mnt.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut top = top;
    top.sort();
    assert_eq!(top, ["drive", "inbox", "ipfs", "outbox", "peers"]);
    for dir in ["peers", "ipfs", "inbox", "outbox"] {
        assert_eq!(fs::read_dir(m.mnt.path().join(dir)).unwrap().count(), 0);
        let err = fs::create_dir(m.mnt.path().join(dir).join("x")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "mkdir in {dir}/");
    }

    write(&m.drive().join("hello.txt"), b"hello\n");
    let status = m.repo.ok(&["status"]);
    assert!(status.contains("mount point:"), "{status}");
    assert!(status.contains(m.mnt.path().to_str().unwrap()), "{status}");
    assert!(status.contains("commit seq:"), "{status}");

    // A second mount of the same repo is refused plainly.
    let other = tempfile::tempdir().unwrap();
    let err = m.repo.fails(&["mount", other.path().to_str().unwrap()]);
    assert!(err.contains("already mounted"), "{err}");

    m.unmount();
    assert!(!m.alive());
    let err = m.repo.fails(&["status"]);
    assert!(err.contains("no daemon is running"), "{err}");
    assert_eq!(fs::read_dir(m.mnt.path()).unwrap().count(), 0);
    m.repo.ok(&["fsck"]);
}

#[test]
fn mount_refuses_bad_mount_points() {
    let repo = TestRepo::new();
    let missing = repo.dir.path().join("nope");
    let err = repo.fails(&["mount", missing.to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
    let full = tempfile::tempdir().unwrap();
    write(&full.path().join("x"), b"x");
    let err = repo.fails(&["mount", full.path().to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn files_survive_unmount_byte_for_byte_with_modes_and_mtimes() {
    let mut m = Mounted::new();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    write(&src.join("a/b/big.bin"), &bytes(3 * 1024 * 1024 + 17, 1));
    write(&src.join("a/small.txt"), b"small");
    write(&src.join("empty"), b"");
    common::chmod(&src.join("a/small.txt"), 0o600);
    common::set_mtime(&src.join("a/small.txt"), 1_600_000_000, 123_456_789);
    std::os::unix::fs::symlink("a/small.txt", src.join("link")).unwrap();
    sh(
        local.path(),
        &format!("cp -a src/. {}/", m.drive().display()),
    );
    sh(
        local.path(),
        &format!("diff -r src {}", m.drive().display()),
    );
    m.unmount();
    m.remount();
    sh(
        local.path(),
        &format!("diff -r src {}", m.drive().display()),
    );
    // Same modes and mtimes: rsync sees nothing to do.
    let out = sh(
        local.path(),
        &format!(
            "rsync -a --itemize-changes --dry-run src/ {}/",
            m.drive().display()
        ),
    );
    assert!(
        out.lines().all(|l| l.starts_with(".d") || l.is_empty()),
        "{out}"
    );
    let meta = fs::metadata(m.drive().join("a/small.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
}

#[test]
fn ordinary_tools_work() {
    let m = Mounted::new();
    let d = m.drive();
    let script = r#"
        mkdir -p x/y/z
        printf 'needle\n' > x/y/z/f.txt
        cp -a x x2
        mv x2 x3
        printf 'one' > a; printf 'two' > b
        mv a b                      # over an existing file
        test "$(cat b)" = one && test ! -e a
        mv x3 x/moved               # a directory
        ln -s x/y/z/f.txt sym
        test "$(cat sym)" = needle
        test "$(readlink sym)" = x/y/z/f.txt
        chmod 751 x/y
        test "$(stat -c %a x/y)" = 751
        touch -d '2001-02-03 04:05:06.123456789' b
        test "$(stat -c %y b)" = '2001-02-03 04:05:06.123456789 +0000' || test "$(date -d @"$(stat -c %Y b)" +%Y)" = 2001
        truncate -s 5000000 g; test "$(stat -c %s g)" = 5000000
        test "$(head -c 5000000 g | tr -d '\0' | wc -c)" = 0
        truncate -s 10 g; test "$(stat -c %s g)" = 10
        grep -r needle . | grep -q 'x/y/z/f.txt'
        test "$(find . -name f.txt | wc -l)" = 2
        du -s . > /dev/null
        rm -r x/moved
        test ! -e x/moved
        getfattr -n user.peerfs.cid x | grep -q 'user.peerfs.cid="ba'
    "#;
    sh(&d, script);
    let err = fs::hard_link(d.join("b"), d.join("hard")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let long = "n".repeat(256);
    let err = fs::write(d.join(long), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    // RENAME_NOREPLACE refuses to replace; a plain rename replaces atomically.
    write(&d.join("p"), b"p");
    let (from, to) = (cstr(&d.join("p")), cstr(&d.join("b")));
    // SAFETY: both paths are valid C strings.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(fs::read(d.join("b")).unwrap(), b"one");
}

#[test]
fn writes_inside_a_big_file_touch_only_their_chunks() {
    let m = Mounted::new();
    let local = tempfile::tempdir().unwrap();
    let data = bytes(20 * 1024 * 1024 + 5, 2);
    write(&local.path().join("big"), &data);
    sh(local.path(), &format!("cp big {}/big", m.drive().display()));
    sh(
        local.path(),
        &format!(
            "printf 'PATCH' | dd of={0}/big bs=1 seek=7340032 conv=notrunc status=none
             printf 'PATCH' | dd of=big bs=1 seek=7340032 conv=notrunc status=none
             cmp big {0}/big",
            m.drive().display()
        ),
    );
    // The mount's CID is the importer's for the same bytes and metadata.
    sh(
        local.path(),
        &format!(
            "touch -r {0}/big big; chmod --reference={0}/big big",
            m.drive().display()
        ),
    );
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.drive().join("big"))
        .unwrap();
    f.sync_all().unwrap();
    drop(f);
    let expected = peerfs_cid(
        &local.path().join("big"),
        &["--preserve-mode", "--preserve-mtime"],
    );
    assert_eq!(cid_xattr(&m.drive().join("big")), expected.trim());
}

#[test]
fn an_unlinked_open_file_stays_readable_and_writable() {
    let m = Mounted::new();
    let path = m.drive().join("tmp");
    write(&path, b"still here");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    fs::remove_file(&path).unwrap();
    assert!(!path.exists());
    std::thread::sleep(std::time::Duration::from_millis(1500)); // a commit passes
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    f.write_all(b"!").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here!");
}

#[test]
fn git_clone_status_and_fsck_are_clean() {
    let m = Mounted::new();
    let local = tempfile::tempdir().unwrap();
    sh(
        local.path(),
        r#"git init -q origin && cd origin
           git config user.email t@example.com && git config user.name t
           for i in $(seq 1 30); do mkdir -p d$((i % 5)); echo "line $i" > d$((i % 5))/f$i.txt; done
           git add -A && git commit -qm one
           echo more >> d1/f1.txt && git commit -qam two"#,
    );
    sh(
        &m.drive(),
        &format!(
            "git clone -q {}/origin clone && cd clone && test -z \"$(git status --porcelain)\" && git fsck --strict 2>&1 && git log --oneline | wc -l | grep -q 2",
            local.path().display()
        ),
    );
}

#[test]
fn a_directory_of_20000_entries() {
    let mut m = Mounted::new();
    let d = m.drive().join("many");
    sh(
        &m.drive(),
        "mkdir many && cd many && seq -f 'file-%06g' 1 20000 | xargs touch",
    );
    assert_eq!(fs::read_dir(&d).unwrap().count(), 20_000);
    sh(
        &d,
        "find . -type f -printf '%s\\n' | wc -l | grep -qx 20000",
    );
    m.unmount();
    m.remount();
    let d = m.drive().join("many");
    assert_eq!(fs::read_dir(&d).unwrap().count(), 20_000);
    sh(&m.drive(), "rm -r many && test ! -e many");
}

#[test]
fn tar_extracts_into_the_mount() {
    let m = Mounted::new();
    let local = tempfile::tempdir().unwrap();
    sh(
        local.path(),
        "mkdir -p t/a/b && echo x > t/a/b/x && ln -s a t/l && dd if=/dev/urandom of=t/r bs=1k count=3000 status=none && tar cf t.tar t",
    );
    sh(
        local.path(),
        &format!(
            "tar xf t.tar -C {0} && diff -r t {0}/t",
            m.drive().display()
        ),
    );
}

#[test]
fn kill_9_keeps_what_was_fsynced_or_closed_before_a_commit() {
    let mut m = Mounted::new();
    let d = m.drive();
    write(&d.join("closed.txt"), b"closed long ago");
    let mut synced = fs::File::create(d.join("synced.txt")).unwrap();
    synced.write_all(b"fsynced").unwrap();
    synced.sync_all().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // A file in the middle of being written when the daemon dies.
    let mut partial = fs::File::create(d.join("partial.bin")).unwrap();
    partial.write_all(&bytes(3 << 20, 3)).unwrap();
    Command::new("kill")
        .arg("-9")
        .arg(m.pid.to_string())
        .status()
        .unwrap();
    drop(partial);
    while m.alive() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // `status` says what the dead daemon left behind, and what to do about it.
    let err = m.repo.fails(&["status"]);
    let mnt = m.mnt.path().display().to_string();
    assert!(
        err.contains(&format!("left a stale mount at {mnt}"))
            && err.contains(&format!("`peerfs mount {mnt}`")),
        "{err}"
    );
    // The next mount cleans the stale mount up.
    m.remount();
    assert_eq!(
        fs::read(m.drive().join("closed.txt")).unwrap(),
        b"closed long ago"
    );
    assert_eq!(fs::read(m.drive().join("synced.txt")).unwrap(), b"fsynced");
    // Never half a file: either absent or as it was at its last close (empty).
    if let Ok(p) = fs::read(m.drive().join("partial.bin")) {
        assert!(p.is_empty(), "a half-written file is visible");
    }
    m.unmount();
    m.repo.ok(&["fsck"]);
}
