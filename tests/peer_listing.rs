//! A peer's directories through the mount, two daemons over 127.0.0.1: the inode
//! table following what the kernel holds, the bounds on it and on one listing, cold
//! listings of wide and sharded directories (requests, not entries), and lookups that
//! load only the entry they name.

mod common;

use std::time::Duration;

use common::{follow, sh, wait_for, Mounted, TestRepo};

/// The `peer inodes:` line of `peerfs status`.
fn peer_inodes(m: &Mounted) -> u64 {
    let status = m.repo.ok(&["status"]);
    status
        .lines()
        .find_map(|l| l.strip_prefix("peer inodes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peer inodes in {status}"))
}

/// A drive of 4,000 entries in 40 directories, readable by everyone.
fn alice_with_4000_entries() -> Mounted {
    let a = Mounted::readable_by_everyone();
    sh(
        &a.drive(),
        "for d in $(seq 40); do mkdir d$d; for f in $(seq 100); do : > d$d/f$f; done; done",
    );
    a
}

/// `b` follows `a` as alice; returns alice's folder once her whole tree shows.
fn follow_alice(b: &Mounted, a: &Mounted) -> std::path::PathBuf {
    follow(b, a, "alice");
    let theirs = b.mnt.path().join("peers/alice");
    wait_for("alice's tree", Duration::from_secs(20), || {
        theirs.join("d40/f100").exists()
    });
    theirs
}

#[test]
fn the_kernel_forgetting_a_peer_drive_empties_its_inode_table() {
    let a = alice_with_4000_entries();
    let b = Mounted::new();
    let theirs = follow_alice(&b, &a);
    let listed = sh(&theirs, "ls -lR . | wc -l");
    assert!(listed.trim().parse::<u64>().unwrap() > 4000, "{listed}");
    let held = peer_inodes(&b);
    assert!(held > 4000, "after ls -lR the view holds {held} inodes");
    // The kernel drops what nothing uses, and forgets each inode; the view follows.
    let mut now = held;
    wait_for("the view to forget", Duration::from_secs(20), || {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
        now = peer_inodes(&b);
        now < 50
    });
    eprintln!("peer inodes: {held} after ls -lR, {now} after the kernel forgot them");
    // What was forgotten comes back on use, with the same content.
    assert!(theirs.join("d7/f3").exists());
    assert_eq!(sh(&theirs, "ls d7 | wc -l").trim(), "100");
}

#[test]
fn listing_more_of_a_peer_than_peer_inode_limit_keeps_the_view_near_it() {
    let a = alice_with_4000_entries();
    let repo = TestRepo::new();
    repo.set_config("peer_inode_limit", "1000");
    let b = Mounted::with_repo(repo);
    let theirs = follow_alice(&b, &a);
    // The view's size while `ls -lR` walks all 4,000 entries, sampled as it goes.
    let listing = std::thread::scope(|s| {
        let walk = s.spawn(|| sh(&theirs, "ls -lR ."));
        let mut most = 0;
        while !walk.is_finished() {
            most = most.max(peer_inodes(&b));
            std::thread::sleep(Duration::from_millis(20));
        }
        let listing = walk.join().unwrap();
        eprintln!("peer inodes: at most {most} during ls -lR");
        // The limit, plus the directory being listed and forgets still on their way.
        assert!(most < 1500, "the view held {most} inodes, limit 1000");
        listing
    });
    assert!(listing.lines().count() > 4000, "{listing}");
    wait_for(
        "the view back under its limit",
        Duration::from_secs(10),
        || peer_inodes(&b) <= 1000,
    );
    // What was dropped comes back on use, the same.
    assert_eq!(sh(&theirs, "ls -lR ."), listing);
}

#[test]
fn a_peer_directory_past_peer_listing_limit_fails_to_list_with_efbig_and_says_why() {
    let a = alice_with_4000_entries();
    let repo = TestRepo::new();
    // Alice's top has 40 entries, each of her folders 100.
    repo.set_config("peer_listing_limit", "60");
    let b = Mounted::with_repo(repo);
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice");
    wait_for("alice's tree", Duration::from_secs(20), || {
        theirs.join("d40").exists()
    });
    let listed = std::fs::read_dir(theirs.join("d7"))
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map(|d| d.len());
    assert_eq!(
        listed.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::EFBIG)),
        "{listed:?}"
    );
    // Its files open by name all the same (a lookup loads only its entry), the rest
    // still lists, and the daemon says why that one did not.
    assert!(theirs.join("d7/f3").is_file());
    assert_eq!(sh(&theirs, "ls | wc -l").trim(), "40");
    assert!(b.alive());
    let log = std::fs::read_to_string(b.repo.path().join("daemon.log")).unwrap();
    assert!(log.contains("more than 60 entries"), "{log}");
}

/// Block requests and blocks `m` answered over the last minute, all peers together
/// (`status --json`).
fn served(m: &Mounted) -> (u64, u64) {
    let out = m.repo.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let peers = v["connected_peers"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| peers.iter().filter_map(|p| p[k].as_u64()).sum();
    (
        sum("requests_served_last_minute"),
        sum("blocks_served_last_minute"),
    )
}

/// What `m` served (requests, blocks) while `work` ran.
fn served_while<T>(m: &Mounted, work: impl FnOnce() -> T) -> (T, u64, u64) {
    let (requests0, blocks0) = served(m);
    let done = work();
    let (requests, blocks) = served(m);
    (done, requests - requests0, blocks - blocks0)
}

/// Alice (returned first) with `wide/`, a directory of `entries` files `f1`, `f2`...
/// holding their number, and B following her, none of `wide/` listed yet; the path of
/// her drive on B.
fn alice_with_wide(entries: u32) -> (Mounted, Mounted, std::path::PathBuf) {
    let a = Mounted::readable_by_everyone();
    sh(
        &a.drive(),
        &format!(
            "mkdir wide && for f in $(seq {entries}); do echo $f > wide/f$f; done && echo > done"
        ),
    );
    let b = Mounted::new();
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice");
    wait_for("alice's tree", Duration::from_secs(30), || {
        theirs.join("done").exists()
    });
    (a, b, theirs)
}

/// Lists a peer's directory of `entries` files cold with `ls -l`: the blocks the
/// owner served for it, and in how many requests.
fn cold_listing(entries: u32) -> (u64, u64) {
    let (a, _b, theirs) = alice_with_wide(entries);
    let (listed, requests, blocks) = served_while(&a, || sh(&theirs, "ls -l wide | wc -l"));
    assert_eq!(listed.trim(), (entries + 1).to_string(), "{listed}");
    eprintln!("ls -l of {entries} entries: {blocks} blocks in {requests} requests");
    // Each entry's node (for its attributes) and the directory's shards came.
    assert!(
        blocks >= entries as u64,
        "{blocks} blocks in {requests} requests"
    );
    (blocks, requests)
}

#[test]
fn a_cold_listing_of_a_wide_peer_directory_asks_for_many_nodes_a_request() {
    let (blocks, requests) = cold_listing(3000);
    // 64 a request (`MAX_WANT`), asked 128 at a time: 47-48 requests for 3,000, where
    // a want sent as each entry was loaded made 135-246.
    assert!(
        requests <= blocks / 50,
        "{blocks} blocks in {requests} requests"
    );
}

#[test]
fn a_cold_listing_of_a_sharded_peer_directory_asks_for_a_level_of_shards_at_once() {
    // Past the sharding threshold: a HAMT of three levels, some 250 of whose 256
    // second-level shards have sub-shards of their own. Walked shard by shard, each
    // second-level shard's sub-shards came in a request of their own (about 400
    // requests, 27 blocks each); a level at a time, some 175.
    let (blocks, requests) = cold_listing(10000);
    assert!(
        requests <= blocks / 40,
        "{blocks} blocks in {requests} requests"
    );
}

#[test]
fn a_lookup_in_a_huge_peer_directory_never_listed_loads_only_its_entry() {
    use std::os::unix::fs::MetadataExt;
    // A HAMT (7,000 links of some 41 bytes are past the 256 KiB sharding threshold)
    // that B never listed.
    let (a, b, theirs) = alice_with_wide(7000);
    let wide = theirs.join("wide");
    let one = wide.join("f1234");
    let (ino, requests, blocks) = served_while(&a, || {
        let ino = std::fs::metadata(&one).unwrap().ino();
        assert_eq!(std::fs::read_to_string(&one).unwrap(), "1234\n");
        let missing = std::fs::metadata(wide.join("f7001")).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT), "{missing}");
        ino
    });
    eprintln!("stat, cat and a missing name: {blocks} blocks in {requests} requests");
    // The shards on the two names' paths and the file, where the whole listing is
    // 7,000 nodes and more.
    assert!(blocks <= 10, "{blocks} blocks in {requests} requests");
    assert!(peer_inodes(&b) < 10, "{} inodes", peer_inodes(&b));

    // The listing that follows has every entry once, and the one looked up keeps its
    // inode.
    let listed = sh(
        &wide,
        "ls | sort | uniq -c | awk '$1 != 1' | wc -l; ls | wc -l",
    );
    assert_eq!(listed, "0\n7000\n");
    assert_eq!(std::fs::metadata(&one).unwrap().ino(), ino);
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "1234\n");
    let held = peer_inodes(&b);
    assert!((7000..7010).contains(&held), "{held} inodes after ls");

    // What a lookup added goes when the kernel forgets the directory.
    wait_for("the view to forget", Duration::from_secs(20), || {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
        peer_inodes(&b) < 10
    });
    assert_eq!(std::fs::read_to_string(wide.join("f77")).unwrap(), "77\n");
}

#[test]
fn entries_looked_up_in_a_peer_directory_never_listed_follow_her_new_head() {
    use std::os::unix::fs::MetadataExt;
    let (a, b, theirs) = alice_with_wide(7000);
    let wide = theirs.join("wide");
    let kept = wide.join("f1234");
    let ino = std::fs::metadata(&kept).unwrap().ino();
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "1234\n");
    assert!(wide.join("f77").is_file() && wide.join("f5").is_file());
    // Changed, removed, and replaced by a directory.
    sh(
        &a.drive(),
        "echo changed > wide/f1234 && rm wide/f77 wide/f5 && mkdir wide/f5",
    );
    wait_for("alice's new f1234", Duration::from_secs(30), || {
        std::fs::read_to_string(&kept).is_ok_and(|t| t == "changed\n")
    });
    assert_eq!(std::fs::metadata(&kept).unwrap().ino(), ino);
    wait_for("f77 gone, f5 a directory", Duration::from_secs(10), || {
        !wide.join("f77").exists() && wide.join("f5").is_dir()
    });
    // Still looked up one by one: the listing was never loaded.
    assert!(peer_inodes(&b) < 10, "{} inodes", peer_inodes(&b));
    assert_eq!(sh(&wide, "ls | wc -l"), "6999\n");
    assert_eq!(std::fs::metadata(&kept).unwrap().ino(), ino);
}
