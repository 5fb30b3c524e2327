//! The store's lifecycle on real daemons and a real RocksDB: fetched blocks are a cache
//! under a size cap, `pin` keeps a tree past the cap and past its owner's death, `gc`
//! deletes what no pin and no head reaches and gives the disk space back.

mod common;

use std::time::{Duration, Instant};

use common::{bytes, cid_of, db_size, follow, kill, sh, wait_for, write, Mounted, TestRepo};

/// `peerfs status`'s peer cache line, in bytes: (cached, cap).
fn cache_usage(m: &Mounted) -> (u64, u64) {
    let status = m.repo.ok(&["status"]);
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("peer cache:"))
        .unwrap_or_else(|| panic!("no peer cache line in {status}"));
    let (used, cap) = line.trim().split_once(" of ").expect("X of Y");
    let parse = |s: &str| s.parse::<bytesize::ByteSize>().expect(s).as_u64();
    (parse(used), parse(cap))
}

#[test]
fn a_pin_keeps_a_tree_past_the_cache_cap_and_past_its_owner() {
    let a = Mounted::readable_by_everyone();
    write(&a.drive().join("keep/one.bin"), &bytes(3 << 20, 1));
    write(&a.drive().join("keep/two.bin"), &bytes(3 << 20, 2));
    write(&a.drive().join("stream.bin"), &bytes(12 << 20, 3));
    let b_repo = TestRepo::new();
    b_repo.set_config("cache_size", "\"4 MiB\"");
    b_repo.set_config("fetch_timeout", "\"2s\"");
    let mut b = Mounted::with_repo(b_repo);
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice");
    wait_for("b sees alice", Duration::from_secs(15), || {
        theirs.join("stream.bin").exists()
    });

    // Reading 12 MiB through a 4 MiB cache: the data is right, the cache stays small.
    assert_eq!(
        std::fs::read(theirs.join("stream.bin")).unwrap(),
        bytes(12 << 20, 3)
    );
    let (used, cap) = cache_usage(&b);
    assert_eq!(cap, 4 << 20);
    assert!(used <= cap, "cache holds {used} bytes over a {cap} cap");

    // A pin fetches the whole tree and keeps it outside the cache.
    let keep = theirs.join("keep");
    let out = b.repo.ok(&["pin", keep.to_str().unwrap()]);
    assert!(
        out.starts_with(&format!("pinned {}", cid_of(&keep))),
        "{out}"
    );
    let pins = b.repo.ok(&["pins"]);
    assert!(pins.contains(&cid_of(&keep)) && pins.contains(keep.to_str().unwrap()));
    let (used, _) = cache_usage(&b);
    assert!(used <= cap, "cache holds {used} bytes after the pin");

    // The owner dies and B starts afresh (no memory, no page cache): the pinned tree
    // reads from B's own store; what the cap evicted is gone with the owner.
    kill(&a);
    b.unmount();
    b.remount();
    wait_for("b's peers again", Duration::from_secs(15), || {
        keep.join("one.bin").exists()
    });
    assert_eq!(
        std::fs::read(keep.join("one.bin")).unwrap(),
        bytes(3 << 20, 1)
    );
    assert_eq!(
        std::fs::read(keep.join("two.bin")).unwrap(),
        bytes(3 << 20, 2)
    );
    let start = Instant::now();
    let err = std::fs::read(theirs.join("stream.bin")).expect_err("evicted, owner dead");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(start.elapsed() < Duration::from_secs(6));
}

#[test]
fn gc_frees_old_versions_and_unpinned_trees_and_nothing_else() {
    let m = Mounted::new();
    let file = m.drive().join("f.bin");
    write(&file, &bytes(8 << 20, 1));
    sh(&m.drive(), "sync");
    write(&file, &bytes(8 << 20, 2));
    write(&m.drive().join("small.txt"), b"stays\n");
    sh(&m.drive(), "sync");
    // Mounted, gc frees the first 8 MiB version (8 chunks at 1 MiB) already.
    let out = m.repo.ok(&["gc"]);
    let removed: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(removed >= 8, "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes(8 << 20, 2));
    let root = cid_of(&m.drive());
    m.unmount();

    // An added tree, pinned by `add`, then unpinned.
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("added.bin"), &bytes(4 << 20, 3));
    let added = m
        .repo
        .ok(&["add", "-r", "-q", src.path().to_str().unwrap()]);
    let added = added.trim();
    assert!(m.repo.ok(&["pins"]).contains(added));
    m.repo.ok(&["unpin", added]);
    m.repo.fails(&["unpin", added]);

    let before = db_size(&m.repo);
    let out = m.repo.ok(&["gc"]);
    let removed: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // The 4 MiB tree (4 chunks at 1 MiB), at least.
    assert!(removed >= 4, "{out}");
    let after = db_size(&m.repo);
    assert!(
        after + (3 << 20) < before,
        "gc gave back too little disk: {before} -> {after}"
    );
    assert!(m.repo.ok(&["gc"]).starts_with("removed 0 blocks"));
    m.repo.fails(&["cat", added]);
    m.repo.ok(&["fsck"]);

    // Without a daemon, what is all here can be pinned; what is gone cannot.
    let err = m.repo.fails(&["pin", added]);
    assert!(err.contains("no daemon runs to fetch it"), "{err}");
    assert!(m
        .repo
        .ok(&["pin", &root])
        .starts_with(&format!("pinned {root}")));

    let mut m = m;
    m.remount();
    assert_eq!(std::fs::read(&file).unwrap(), bytes(8 << 20, 2));
    assert_eq!(
        std::fs::read(m.drive().join("small.txt")).unwrap(),
        b"stays\n"
    );
}

/// One `user.peerfs.*` attribute of `path`, as text.
fn xattr(path: &std::path::Path, name: &str) -> String {
    common::xattr(path, name).unwrap_or_else(|| panic!("getfattr -n {name} {}", path.display()))
}

#[test]
fn a_peers_entry_says_where_it_comes_from_whether_it_is_here_and_whether_pinned() {
    let a = Mounted::readable_by_everyone();
    write(&a.drive().join("keep/one.bin"), &bytes(3 << 20, 1));
    write(&a.drive().join("other.txt"), b"other\n");
    let b = Mounted::new();
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice");
    wait_for("b sees alice", Duration::from_secs(15), || {
        theirs.join("keep/one.bin").exists()
    });
    let one = theirs.join("keep/one.bin");
    assert_eq!(xattr(&one, "user.peerfs.peer"), "alice");
    assert_eq!(xattr(&one, "user.peerfs.peer_id"), common::peer_id(&a));
    let seq: u64 = xattr(&one, "user.peerfs.head_seq").parse().unwrap();
    assert!(seq >= 1, "{seq}");
    assert!(xattr(&one, "user.peerfs.head_time").ends_with('Z'));
    assert_eq!(xattr(&one, "user.peerfs.local"), "no", "not read yet");
    assert_eq!(xattr(&one, "user.peerfs.pinned"), "no");
    // getfattr -d lists them all.
    let all = sh(&theirs, "getfattr -d -m user.peerfs keep/one.bin");
    for name in [
        "cid",
        "peer",
        "peer_id",
        "head_seq",
        "head_time",
        "local",
        "pinned",
    ] {
        assert!(
            all.contains(&format!("user.peerfs.{name}=")),
            "{name} in {all}"
        );
    }
    // Read once, it is here; pinned, it and what is below say so, and nothing else.
    assert_eq!(std::fs::read(&one).unwrap(), bytes(3 << 20, 1));
    assert_eq!(xattr(&one, "user.peerfs.local"), "yes");
    b.repo.ok(&["pin", theirs.join("keep").to_str().unwrap()]);
    assert_eq!(xattr(&theirs.join("keep"), "user.peerfs.pinned"), "yes");
    assert_eq!(xattr(&one, "user.peerfs.pinned"), "yes");
    assert_eq!(xattr(&theirs.join("other.txt"), "user.peerfs.pinned"), "no");
    assert_eq!(xattr(&theirs, "user.peerfs.pinned"), "no");

    // setfattr pins (in the background) and -x unpins, as `peerfs pin`/`unpin` do,
    // under the path's label.
    let other = theirs.join("other.txt");
    sh(&theirs, "setfattr -n user.peerfs.pin -v 1 other.txt");
    wait_for("the pin by setfattr", Duration::from_secs(15), || {
        xattr(&other, "user.peerfs.pinned") == "yes"
    });
    assert!(b.repo.ok(&["pins"]).contains(other.to_str().unwrap()));
    sh(&theirs, "setfattr -x user.peerfs.pin other.txt");
    wait_for("the unpin by setfattr", Duration::from_secs(15), || {
        xattr(&other, "user.peerfs.pinned") == "no"
    });
    // Nothing else can be set, and nothing in my own drive this way.
    write(&b.drive().join("mine.txt"), b"mine");
    for (dir, name) in [(&theirs, "other.txt"), (&b.drive(), "mine.txt")] {
        let out = std::process::Command::new("setfattr")
            .args(["-n", "user.peerfs.cid", "-v", "x", name])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "setfattr of the CID on {name}");
    }
}
