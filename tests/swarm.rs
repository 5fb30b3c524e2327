//! Swarming, as daemons on 127.0.0.1 meet it: a file that two peers hold (the owner,
//! and a follower that pinned it) comes from both at once, and from the one left when
//! the other dies in the middle of a read.

mod common;

use std::fs;
use std::io::Read;
use std::time::Duration;

use common::{addr, bytes, cid_of, follow, kill, peer_id, wait_for, write, xattr, Mounted};
use serde_json::Value;

/// Blocks `holder` served `reader` over the last minute, by `holder`'s own count.
fn served_to(holder: &Mounted, reader: &str) -> u64 {
    let out = holder.repo.ok(&["status", "--json"]);
    let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    status["connected_peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["peer_id"] == reader)
        .and_then(|p| p["blocks_served_last_minute"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_file_two_peers_hold_comes_from_both_and_from_one_when_the_other_dies() {
    // A owns the files; its drive is open, so C may pass on what it pinned.
    let a = Mounted::readable_by_everyone();
    let small = bytes(16 << 20, 1);
    // Larger than what a reader fetches ahead (96 MiB), so a read of its first part
    // leaves most of it unasked.
    let big = bytes(192 << 20, 2);
    write(&a.drive().join("swarm/small.bin"), &small);
    write(&a.drive().join("swarm/big.bin"), &big);
    let c = Mounted::readable_by_everyone();
    let b = Mounted::new();
    follow(&c, &a, "alice");
    follow(&b, &a, "alice");
    let mine = a.drive().join("swarm");
    for (m, name) in [(&c, "c"), (&b, "b")] {
        let theirs = m.mnt.path().join("peers/alice/swarm");
        wait_for(
            &format!("{name} sees alice's files"),
            Duration::from_secs(30),
            || theirs.join("big.bin").exists() && cid_of(&theirs) == cid_of(&mine),
        );
    }
    let pinned = c.mnt.path().join("peers/alice/swarm");
    c.repo.ok(&["pin", pinned.to_str().unwrap()]);
    b.repo.ok(&["peer", "add", &addr(&c), "--name", "c"]);
    wait_for(
        "b connects to both holders",
        Duration::from_secs(15),
        || b.repo.ok(&["peers"]).matches("connected:   yes").count() == 2,
    );

    // B reads the small file: both holders serve it blocks.
    let theirs = b.mnt.path().join("peers/alice/swarm");
    assert!(fs::read(theirs.join("small.bin")).unwrap() == small);
    let b_id = peer_id(&b);
    let (from_a, from_c) = (served_to(&a, &b_id), served_to(&c, &b_id));
    assert!(
        from_a > 0 && from_c > 0,
        "A served {from_a} blocks, C {from_c}: both hold the file"
    );
    // B's side says the same, per source.
    let peers: Value = serde_json::from_str(&b.repo.ok(&["peers", "--json"])).unwrap();
    for name in ["alice", "c"] {
        let p = peers
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no {name} in {peers}"));
        assert!(p["blocks_fetched"].as_u64() > Some(0), "{p}");
    }

    // B reads the big file, and A dies 16 MiB into it: C brings the rest.
    let path = theirs.join("big.bin");
    let mut file = fs::File::open(&path).unwrap();
    let mut read = vec![0u8; big.len()];
    let part = 16 << 20;
    file.read_exact(&mut read[..part]).unwrap();
    assert_eq!(
        xattr(&path, "user.peerfs.local").as_deref(),
        Some("no"),
        "the read is not over yet"
    );
    kill(&a);
    file.read_exact(&mut read[part..]).unwrap();
    assert!(read == big, "the file read across A's death differs");
    assert!(served_to(&c, &b_id) > from_c, "C served the rest");
}
