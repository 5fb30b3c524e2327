//! Mirrors, as daemons on 127.0.0.1 meet them: C keeps every head of A's drive in
//! full and tells A so; A's status counts who holds its newest head; B reads A's
//! files from C once A is gone; a head A made while C was down is fetched when C
//! returns; gc on C drops what only an older head reached; a quota stops a mirror.
//! A restricted drive with a private folder: its mirror passes it on to the owner's
//! readers only, as ciphertext, and the folder's own readers alone can open it.

mod common;

use std::fs;
use std::time::Duration;

use common::private::{fails_with, files_with, secret_bytes, MARKER};
use common::{
    addr, bytes, cid_of, follow, fsync_tree, kill, peer_id, sh, wait_for, write, Mounted, TestRepo,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn json(m: &Mounted, args: &[&str]) -> Value {
    let out = m.repo.ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A's drive committed: its seq once nothing is pending.
fn committed_seq(a: &Mounted) -> u64 {
    fsync_tree(&a.drive());
    let mut seq = 0;
    wait_for("the drive committed", WAIT, || {
        let s = json(a, &["status", "--json"]);
        seq = s["seq"].as_u64().unwrap_or(0);
        s["uncommitted_changes"] == false
    });
    seq
}

/// `m`'s mirror of the peer named `name`, as `mirrors --json` shows it.
fn mirror(m: &Mounted, name: &str) -> Value {
    let all = json(m, &["mirrors", "--json"]);
    all.as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no mirror {name} in {all}"))
}

fn wait_synced(m: &Mounted, name: &str, seq: u64) {
    wait_for(&format!("mirror {name} synced at {seq}"), WAIT, || {
        let x = mirror(m, name);
        x["state"] == "synced" && x["held_seq"] == seq
    });
}

/// The names of the peers A's status says hold its newest head in full.
fn replicas(a: &Mounted) -> Vec<String> {
    let s = json(a, &["status", "--json"]);
    let mut names: Vec<String> = s["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A repo whose node serves no DHT: in these tests, a peer finds a mirror through the
/// owner's list of mirrors, not through the holder records followers put in the DHT.
fn no_dht() -> TestRepo {
    let repo = TestRepo::new();
    repo.set_config("dht_server", "false");
    repo
}

#[test]
fn a_mirror_keeps_every_head_and_serves_it_while_the_owner_is_away() {
    // A's drive is open, so that C may pass it on.
    let a_repo = no_dht();
    a_repo.set_config("readers", r#"["*"]"#);
    a_repo.set_config("min_replicas", "2");
    let a = Mounted::with_repo(a_repo);
    let old = bytes(8 << 20, 1);
    let kept = bytes(3 << 20, 2);
    write(&a.drive().join("docs/old.bin"), &old);
    write(&a.drive().join("docs/kept.bin"), &kept);
    write(&a.drive().join("note.txt"), b"hello from a");
    let seq1 = committed_seq(&a);
    let old_cid = cid_of(&a.drive().join("docs/old.bin"));

    // C's cache is far smaller than A's drive: what a mirror keeps is not cache.
    let c_repo = no_dht();
    c_repo.set_config("cache_size", "\"1 MiB\"");
    let mut c = Mounted::with_repo(c_repo);
    follow(&c, &a, "alice");
    follow(&a, &c, "c");
    c.repo.ok(&["mirror", "add", "alice"]);
    wait_synced(&c, "alice", seq1);
    let m = mirror(&c, "alice");
    assert!(m["bytes"].as_u64() > Some(11 << 20), "{m}");
    wait_for("A counts C as a replica", WAIT, || replicas(&a) == ["c"]);
    let status = json(&a, &["status", "--json"]);
    assert!(
        status["replicas_warning"].is_string(),
        "1 of min_replicas 2 is warned of: {status}"
    );

    // E mirrors A too, named by its address (so it follows A as it mirrors).
    let e = Mounted::with_repo(no_dht());
    follow(&a, &e, "e");
    e.repo.ok(&["mirror", "add", &addr(&a)]);
    let a_id = peer_id(&a);
    wait_synced(&e, &a_id, seq1);
    wait_for("A counts C and E", WAIT, || replicas(&a) == ["c", "e"]);
    let status = json(&a, &["status", "--json"]);
    assert!(status["replicas_warning"].is_null(), "{status}");
    assert!(
        a.repo.ok(&["status"]).contains("2 peers hold head"),
        "{}",
        a.repo.ok(&["status"])
    );

    // A drops the big file and writes a new one while C is down; C fetches that head
    // when it returns.
    c.unmount();
    fs::remove_file(a.drive().join("docs/old.bin")).unwrap();
    let new = bytes(2 << 20, 3);
    write(&a.drive().join("docs/new.bin"), &new);
    let seq2 = committed_seq(&a);
    assert!(seq2 > seq1);
    c.remount();
    wait_synced(&c, "alice", seq2);
    // Only what changed was read: kept.bin, held already, was not.
    let log = fs::read_to_string(c.repo.path().join("daemon.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("head {seq2} held in full")))
        .unwrap_or_else(|| panic!("no line on head {seq2} in {log}"));
    let held_already: u64 = line
        .split(" bytes held already")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(held_already >= kept.len() as u64, "{line}");
    wait_for("A counts C again at the new head", WAIT, || {
        replicas(&a).contains(&"c".to_string())
    });

    // B follows A and C, reads nothing yet; D follows only A, and learns from A that
    // C mirrors it. Then A dies, and B and D read all from C.
    let b = Mounted::with_repo(no_dht());
    follow(&b, &a, "alice");
    follow(&b, &c, "c");
    let d = Mounted::with_repo(no_dht());
    follow(&d, &a, "alice");
    let c_id = peer_id(&c);
    for (m, who) in [(&b, "B"), (&d, "D")] {
        wait_for(&format!("{who} knows A's newest head"), WAIT, || {
            alice(m)["head_seq"] == seq2
        });
    }
    wait_told_of_mirror(&d, &c_id);
    kill(&a);
    let on_d = d.mnt.path().join("peers/alice/docs/kept.bin");
    assert!(
        fs::read(on_d).unwrap() == kept,
        "D, who does not follow C, reads A's file from C"
    );
    let theirs = b.mnt.path().join("peers/alice");
    assert!(fs::read(theirs.join("docs/kept.bin")).unwrap() == kept);
    assert!(fs::read(theirs.join("docs/new.bin")).unwrap() == new);
    assert_eq!(fs::read(theirs.join("note.txt")).unwrap(), b"hello from a");
    assert!(!theirs.join("docs/old.bin").exists());

    // gc on C drops the blocks only the older head reached, and keeps the newest.
    c.repo.ok(&["gc"]);
    c.unmount();
    let root = m_root(&c);
    let offline_cat = |target: &str| c.repo.run(&["cat", target]);
    let got = offline_cat(&format!("{root}/docs/new.bin"));
    assert!(
        got.status.success() && got.stdout == new,
        "the newest head stays"
    );
    let gone = offline_cat(&old_cid);
    assert!(
        !gone.status.success(),
        "old.bin's blocks, only the older head's, went at gc"
    );
}

/// What `m`'s `peers --json` says of the peer it calls alice.
fn alice(m: &Mounted) -> Value {
    let peers = json(m, &["peers", "--json"]);
    peers
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "alice").cloned())
        .unwrap_or_else(|| panic!("no alice in {peers}"))
}

/// Waits until `m` has heard from its alice that `mirror` mirrors her.
fn wait_told_of_mirror(m: &Mounted, mirror: &str) {
    wait_for("learning who mirrors alice", WAIT, || {
        alice(m)["mirrors"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|x| x == mirror))
    });
}

#[test]
fn a_mirror_passes_a_private_folder_to_its_readers_only_while_the_owner_is_away() {
    // A's drive is restricted: open to the peers A follows (B, C and D). Its folder
    // secret/ is B's alone.
    let a_repo = no_dht();
    a_repo.set_config("readers", r#"["following"]"#);
    let mut a = Mounted::with_repo(a_repo);
    let (b, c, d) = (
        Mounted::with_repo(no_dht()),
        Mounted::with_repo(no_dht()),
        Mounted::with_repo(no_dht()),
    );
    for (m, name) in [(&b, "b"), (&c, "c"), (&d, "d")] {
        follow(&a, m, name);
        follow(m, &a, "alice");
    }
    follow(&d, &c, "c");
    let secret = a.drive().join("secret");
    let (one, two) = (secret_bytes(4000, 1), secret_bytes(3 << 20, 2));
    write(&secret.join("one.txt"), &one);
    write(&secret.join("sub/two.bin"), &two);
    write(&a.drive().join("public.txt"), b"for A's readers");
    a.repo
        .ok(&["share", secret.to_str().unwrap(), "--with", "b"]);
    let seq1 = committed_seq(&a);
    let status = json(&a, &["status", "--json"]);
    assert!(
        status["published_root"].is_string() && status["published_root"] != status["root"],
        "peers see the sealed root: {status}"
    );

    c.repo.ok(&["mirror", "add", "alice"]);
    wait_synced(&c, "alice", seq1);
    wait_for("A counts C as a replica", WAIT, || replicas(&a) == ["c"]);
    let c_id = peer_id(&c);
    for m in [&b, &d] {
        wait_for("knowing A's newest head", WAIT, || {
            alice(m)["head_seq"] == seq1
        });
        wait_told_of_mirror(m, &c_id);
    }

    // A dies. B, who does not follow C, reads secret/ in full from C.
    kill(&a);
    let at_b = b.mnt.path().join("peers/alice");
    assert!(fs::read(at_b.join("secret/one.txt")).unwrap() == one);
    assert!(fs::read(at_b.join("secret/sub/two.bin")).unwrap() == two);
    // D, a reader of A's drive but not of secret/, follows A and C: it reads A's
    // public file from C, and nothing of secret/. Neither can C itself.
    let at_d = d.mnt.path().join("peers/alice");
    assert_eq!(
        fs::read(at_d.join("public.txt")).unwrap(),
        b"for A's readers"
    );
    for m in [&c, &d] {
        fails_with(m.mnt.path(), "ls peers/alice/secret", "Permission denied");
        fails_with(
            m.mnt.path(),
            "cat peers/alice/secret/one.txt",
            "Permission denied",
        );
    }

    // A returns, removes B (dave, never running, stays the folder's reader) and
    // writes a new file: B cannot read it and still reads the old ones, from C once A
    // is gone again; C mirrors the new head whole.
    a.remount();
    let dave = TestRepo::new();
    let dave_id = dave.ok(&["id"]).lines().next().unwrap().trim().to_string();
    sh(
        a.mnt.path(),
        &format!("setfattr -n user.peerfs.readers -v {dave_id} drive/secret"),
    );
    let new = secret_bytes(5000, 3);
    write(&secret.join("new.txt"), &new);
    let seq2 = committed_seq(&a);
    assert!(seq2 > seq1);
    wait_synced(&c, "alice", seq2);
    wait_for("B knowing A's head after the new file", WAIT, || {
        alice(&b)["head_seq"] == seq2
    });
    assert!(!at_b.join("secret/new.txt").exists());
    kill(&a);
    assert!(fs::read(at_b.join("secret/sub/two.bin")).unwrap() == two);
    assert!(!at_b.join("secret/new.txt").exists());
    let listed = sh(b.mnt.path(), "ls peers/alice/secret");
    assert!(
        listed.contains("one.txt") && !listed.contains("new.txt"),
        "{listed}"
    );

    // C holds all of it, and none of it in clear: neither the marker written into
    // every secret file nor the files' names (A's repo, which has them, shows the
    // search would find them).
    c.unmount();
    assert!(!files_with(&a.repo.path(), MARKER).is_empty());
    for needle in [MARKER, "one.txt", "two.bin", "new.txt"] {
        let found = files_with(&c.repo.path(), needle);
        assert!(found.is_empty(), "{needle} in {found}");
    }
}

/// The root of the head C's mirror holds, read from its saved mirrors.
fn m_root(c: &Mounted) -> String {
    let text = fs::read_to_string(c.repo.path().join("mirrors.json")).unwrap();
    let saved: Value = serde_json::from_str(&text).unwrap();
    saved[0]["held"]["root"].as_str().unwrap().to_string()
}

#[test]
fn a_head_over_the_quota_is_not_fetched_and_says_so() {
    let a = Mounted::readable_by_everyone();
    write(&a.drive().join("big.bin"), &bytes(4 << 20, 7));
    let seq = committed_seq(&a);
    let c = Mounted::new();
    follow(&c, &a, "alice");
    c.repo.ok(&["mirror", "add", "alice", "--quota", "1MiB"]);
    wait_for("the mirror is over quota", WAIT, || {
        let m = mirror(&c, "alice");
        m["state"] == "over quota" && m["newest_seq"] == seq
    });
    let m = mirror(&c, "alice");
    assert!(m["held_seq"].is_null() && m["bytes"] == 0, "{m}");
    assert!(c.repo.ok(&["mirrors"]).contains("over quota"));
    // A larger quota: fetched.
    c.repo.ok(&["mirror", "add", "alice", "--quota", "10MiB"]);
    wait_synced(&c, "alice", seq);
    // A takes the statement only from a peer in its peer book.
    wait_for("A refuses C's statement", WAIT, || {
        fs::read_to_string(c.repo.path().join("daemon.log"))
            .unwrap_or_default()
            .contains("does not know you")
    });
    assert!(replicas(&a).is_empty());
    assert_eq!(mirror(&c, "alice")["owner_told"], false);
    follow(&a, &c, "c");
    wait_for("A takes it once it follows C", WAIT, || {
        replicas(&a) == ["c"]
    });
    assert_eq!(mirror(&c, "alice")["owner_told"], true);
    c.repo.ok(&["mirror", "rm", "alice"]);
    assert_eq!(json(&c, &["mirrors", "--json"]), serde_json::json!([]));
}
