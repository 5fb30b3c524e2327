//! rsync in and out of the mount: the way people sync folders with peerfs.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{bytes, peerfs_cid, sh, write, Mounted};

/// Nested dirs, 2,000 small files, a 100 MiB file, symlinks, unicode names, empty dirs.
fn make_source(src: &Path) {
    for i in 0..2000 {
        let dir = src.join(format!("d{}/e{}", i % 10, i % 7));
        fs::create_dir_all(&dir).unwrap();
        write(
            &dir.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(i % 50 + 1).as_bytes(),
        );
    }
    write(&src.join("big.bin"), &bytes(100 << 20, 9));
    fs::create_dir_all(src.join("ünïcødé/日本語")).unwrap();
    write(
        &src.join("ünïcødé/日本語/ファイル.txt"),
        "テキスト".as_bytes(),
    );
    fs::create_dir_all(src.join("empty/nested-empty")).unwrap();
    std::os::unix::fs::symlink("d1/e1/f1.txt", src.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("ünïcødé", src.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    common::chmod(&src.join("d1/e1/f1.txt"), 0o755);
    // Times from the past, as real trees have: rsync skips setting a directory's mtime
    // when it falls in the second the copy was made, on any filesystem.
    sh(
        src,
        "find . -exec touch -h -d '2024-05-06 07:08:09.123456789' {} +",
    );
}

/// `rsync --stats` output's count of regular files transferred.
fn transferred(stats: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix("Number of regular files transferred: "))
        .unwrap_or_else(|| panic!("no transfer count in {stats}"))
        .replace(',', "")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn rsync_in_again_changes_delete_checksum_and_out() {
    let m = Mounted::new();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    make_source(&src);
    let dst = m.drive().join("x");
    let dst = dst.to_str().unwrap();
    let l = local.path();

    let first = sh(l, &format!("rsync -a --stats src/ {dst}/"));
    assert!(transferred(&first) >= 2001, "{first}");
    sh(l, &format!("diff -r --no-dereference src {dst}"));

    // The mount's CID is the importer's for the same tree.
    let expected = peerfs_cid(&src, &["--preserve-mode", "--preserve-mtime"]);
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.peerfs.cid", dst])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected.trim());

    let again = sh(l, &format!("rsync -a --stats src/ {dst}/"));
    assert_eq!(transferred(&again), 0, "{again}");

    for i in (0..2000).step_by(200) {
        let f = src.join(format!("d{}/e{}/f{i}.txt", i % 10, i % 7));
        write(&f, format!("changed {i}\n").as_bytes());
    }
    let changed = sh(l, &format!("rsync -a --stats src/ {dst}/"));
    assert_eq!(transferred(&changed), 10, "{changed}");
    sh(l, &format!("diff -r --no-dereference src {dst}"));

    fs::remove_dir_all(src.join("d3")).unwrap();
    fs::remove_file(src.join("link-to-dir")).unwrap();
    sh(
        l,
        &format!("rsync -a --delete src/ {dst}/ && diff -r --no-dereference src {dst}"),
    );
    let check = sh(l, &format!("rsync -ac --stats src/ {dst}/"));
    assert_eq!(transferred(&check), 0, "{check}");

    sh(
        l,
        &format!("rsync -a {dst}/ out/ && diff -r --no-dereference src out"),
    );
    let back = sh(l, "rsync -a --itemize-changes --dry-run src/ out/");
    assert!(
        back.trim().is_empty(),
        "modes or mtimes differ after a round trip:\n{back}"
    );
}

#[test]
fn rsync_as_root_with_owners_exits_zero() {
    let m = Mounted::new();
    let local = tempfile::tempdir().unwrap();
    sh(
        local.path(),
        "mkdir -p s/a && echo x > s/a/x && echo y > s/y && chown -R 12345:12345 s || true",
    );
    sh(
        local.path(),
        &format!(
            "rsync -a s/ {0}/s/ && diff -r --no-dereference s {0}/s",
            m.drive().display()
        ),
    );
}

/// Issue 12, finding 4: after `rsync -a` of a freshly made tree (2,000 files in 160
/// directories, times from this very second), every directory whose mtime rsync set on
/// the local disk has that same mtime, to the nanosecond, in the mount. (rsync leaves
/// some fresh directories at the time of the copy on any filesystem: those differ on
/// the disk too, and are not the mount's to fix.)
#[test]
fn rsync_of_a_fresh_tree_keeps_every_directory_mtime_the_disk_keeps() {
    let m = Mounted::new();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    for i in 0..2000 {
        let dir = src.join(format!("dir{:02}/sub{}", i % 16, i % 9));
        fs::create_dir_all(&dir).unwrap();
        write(&dir.join(format!("f{i}")), &bytes(i % 300, i as u64));
    }
    let dst = m.drive().join("x");
    sh(
        local.path(),
        &format!("rsync -a src/ disk/ && rsync -a src/ {}/", dst.display()),
    );
    let drifted = sh(
        &src,
        &format!(
            "find . -type d | while read -r d; do \
               s=$(stat -c %y \"$d\"); \
               [ \"$s\" = \"$(stat -c %y \"../disk/$d\")\" ] || continue; \
               [ \"$s\" = \"$(stat -c %y \"{0}/$d\")\" ] || echo \"$d\"; \
             done",
            dst.display()
        ),
    );
    assert!(
        drifted.trim().is_empty(),
        "directory mtimes rsync set on the disk but not in the mount:\n{drifted}"
    );
}
