//! `DIR/ipfs/<CID>/…`: any CID, read-only, fetched on demand from the peers connected
//! (like Kubo's `/ipfs` mount), with the deadline rule of every other read: EIO, never
//! a hang.

mod common;

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{assert_same_tree, bytes, cid_of, follow, wait_for, write, Mounted, TestRepo};

/// A tree with a big file, a subdirectory, a symlink and an empty file.
fn make_tree(root: &std::path::Path) {
    write(&root.join("big.bin"), &bytes(3 << 20, 11));
    write(&root.join("sub/note.txt"), b"a note\n");
    write(&root.join("sub/empty"), b"");
    std::os::unix::fs::symlink("sub/note.txt", root.join("link")).unwrap();
}

#[test]
fn any_cid_a_peer_holds_reads_under_ipfs_and_a_missing_one_fails_in_time() {
    // A holds a tree outside its drive (added, not in any folder), readable by anyone.
    let a = Mounted::readable_by_everyone();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let cid = a
        .repo
        .ok(&["add", "-r", "-q", src.path().to_str().unwrap()])
        .trim()
        .to_string();
    let b_repo = TestRepo::new();
    b_repo.set_config("fetch_timeout", "\"3s\"");
    let b = Mounted::with_repo(b_repo);
    // Following makes the two connected; what B reads is not in A's drive.
    follow(&b, &a, "alice");
    let ipfs = b.mnt.path().join("ipfs");
    let tree = ipfs.join(&cid);
    wait_for("the CID to show", Duration::from_secs(20), || tree.is_dir());

    assert_same_tree(src.path(), &tree);
    assert_eq!(
        std::fs::read_link(tree.join("link")).unwrap(),
        std::path::Path::new("sub/note.txt")
    );
    assert_eq!(std::fs::read(tree.join("link")).unwrap(), b"a note\n");
    assert_eq!(cid_of(&tree), cid);
    // A file's own CID opens it alone (a raw leaf or a UnixFS file root).
    let file_cid = cid_of(&tree.join("sub/note.txt"));
    assert_eq!(std::fs::read(ipfs.join(&file_cid)).unwrap(), b"a note\n");

    // Read-only, not a listing of every CID, and a name that is no CID is not there.
    let err = std::fs::write(tree.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(std::fs::read_dir(&ipfs).unwrap().count(), 0);
    let err = std::fs::metadata(ipfs.join("not-a-cid")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(std::fs::metadata(&ipfs).unwrap().mode() & 0o222, 0);

    // A CID nobody has: EIO within the deadline, not a hang.
    let unknown = src.path().join("unknown.bin");
    write(&unknown, &bytes(4096, 99));
    let missing = a
        .repo
        .ok(&["add", "-q", "--only-hash", unknown.to_str().unwrap()])
        .trim()
        .to_string();
    let started = Instant::now();
    let err = std::fs::metadata(ipfs.join(&missing)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
