//! The network side of a newcomer's first hour, as the user meets it: who may read my
//! drive by default and who is reading it now, what `peer add` says about an address
//! that does not work, what `peers` says about a peer that went away, and what the
//! daemon's log says about all of it.

mod common;

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{addr, cid_of, follow, kill, peer_id, wait_for, write, Mounted, TestRepo};
use serde_json::Value;

fn json(repo: &TestRepo, args: &[&str]) -> Value {
    let out = repo.ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The `peers --json` element named `name`.
fn peer_json(repo: &TestRepo, name: &str) -> Value {
    let peers = json(repo, &["peers", "--json"]);
    peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no peer {name} in {peers}"))
}

/// A peer ID nobody runs.
fn nobodys_id() -> String {
    libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string()
}

/// A loopback TCP port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn log_of(m: &Mounted) -> String {
    fs::read_to_string(m.repo.path().join("daemon.log")).unwrap_or_default()
}

fn seq_of(m: &Mounted) -> u64 {
    let mut seq = 0;
    wait_for("a commit", Duration::from_secs(15), || {
        let s = json(&m.repo, &["status", "--json"]);
        seq = s["seq"].as_u64().unwrap_or(0);
        s["uncommitted_changes"] == false && seq > 0
    });
    seq
}

/// Item 4: a fresh repo lets in only the peers it follows. A stranger that dials me
/// (it follows me; I do not follow it) is refused; the peer I follow reads, and
/// `status` names it as reading; once I stop following it, it gets nothing new.
#[test]
fn a_stranger_cannot_read_my_drive_by_default_and_status_names_who_reads() {
    let me = Mounted::new();
    let config = fs::read_to_string(me.repo.path().join("config.toml")).unwrap();
    assert!(
        config.contains("\"following\""),
        "default readers: {config}"
    );
    let fran = Mounted::new();
    let stranger = Mounted::new();
    write(&me.drive().join("diary.txt"), b"dear diary\n");
    follow(&me, &fran, "fran");
    follow(&fran, &me, "me");
    follow(&stranger, &me, "me");

    let for_fran = fran.mnt.path().join("peers/me/diary.txt");
    wait_for("fran reads my diary", Duration::from_secs(20), || {
        fs::read_to_string(&for_fran).is_ok_and(|t| t == "dear diary\n")
    });
    let top = stranger.mnt.path().join("peers/me");
    wait_for("the stranger sees my head", Duration::from_secs(20), || {
        !cid_of(&top).is_empty()
    });
    let err = fs::read_dir(&top)
        .and_then(|mut r| r.next().transpose())
        .and_then(|_| fs::read(top.join("diary.txt")))
        .expect_err("a stranger must not read my drive");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");

    // Who is connected and reading, by name.
    let status = json(&me.repo, &["status", "--json"]);
    assert_eq!(status["readers"], "following", "{status}");
    let connected = status["connected_peers"]
        .as_array()
        .expect("connected_peers");
    let fran_id = peer_id(&fran);
    let stranger_id = peer_id(&stranger);
    let entry = |id: &str| {
        connected
            .iter()
            .find(|p| p["peer_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {status}"))
    };
    let f = entry(&fran_id);
    assert_eq!(f["name"], "fran", "{f}");
    assert_eq!(f["followed"], true, "{f}");
    assert!(f["blocks_served_last_minute"].as_u64() > Some(0), "{f}");
    assert!(f["bytes_served_last_minute"].as_u64() > Some(0), "{f}");
    assert!(f["last_request"].is_string(), "{f}");
    assert!(f["address"]
        .as_str()
        .unwrap()
        .starts_with("/ip4/127.0.0.1/"));
    let s = entry(&stranger_id);
    assert_eq!(s["followed"], false, "{s}");
    assert!(s["name"].is_null(), "{s}");
    assert_eq!(s["blocks_served_last_minute"], 0, "{s}");
    assert!(s["requests_refused_last_minute"].as_u64() > Some(0), "{s}");
    let text = me.repo.ok(&["status"]);
    assert!(
        text.contains("readers:") && text.contains("peers I follow"),
        "{text}"
    );
    let fran_line = text
        .lines()
        .find(|l| l.contains("fran"))
        .unwrap_or_else(|| panic!("fran not in {text}"));
    assert!(fran_line.contains("read"), "{text}");

    // Unfollowing revokes at once: the next version of my drive is closed to fran.
    me.repo.ok(&["peer", "rm", "fran"]);
    write(&me.drive().join("after.txt"), b"not for fran\n");
    let seq = seq_of(&me);
    wait_for("fran sees my new head", Duration::from_secs(20), || {
        peer_json(&fran.repo, "me")["head_seq"].as_u64() >= Some(seq)
    });
    // Fran's view cannot load the new version (it keeps showing the last one it
    // could read), so the new file is not there for fran; my daemon refused fran.
    let start = Instant::now();
    let read = fs::read(fran.mnt.path().join("peers/me/after.txt"));
    assert!(
        read.is_err(),
        "fran read my new file after I unfollowed fran"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    let status = json(&me.repo, &["status", "--json"]);
    let f = status["connected_peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["peer_id"] == fran_id.as_str()))
        .unwrap_or_else(|| panic!("fran not in {status}"));
    assert_eq!(f["followed"], false, "{f}");
    assert!(f["requests_refused_last_minute"].as_u64() > Some(0), "{f}");
}

/// Item 6: with the daemon running, `peer add` tries the address at once and says what
/// happened, within a bound; `peers` then shows each failure and when, and a peer
/// whose daemon died shows why it is not connected, with no stale RTT.
#[test]
fn peer_add_says_at_once_what_the_address_did_and_peers_shows_why_not_connected() {
    let me = Mounted::new();
    let other = Mounted::new();
    let bound = Duration::from_secs(15);
    let add = |target: &str, name: &str| {
        let start = Instant::now();
        let out = me.repo.ok(&["peer", "add", target, "--name", name]);
        let took = start.elapsed();
        assert!(took < bound, "peer add {name} took {took:?}: {out}");
        out
    };

    let out = add(&addr(&other), "other");
    assert!(out.contains("connected") && out.contains("rtt"), "{out}");

    let typo_port = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", closed_port(), nobodys_id());
    let out = add(&typo_port, "typo-port");
    assert!(out.contains("refused"), "{out}");

    // Something listens there but never speaks libp2p: the dial times out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        silent.local_addr().unwrap().port(),
        nobodys_id()
    );
    let out = add(&silent_addr, "silent");
    assert!(out.contains("timed out"), "{out}");

    // The other node's address with a mistyped peer ID: the remote is someone else.
    let other_addr = addr(&other);
    let (at, _) = other_addr.rsplit_once("/p2p/").unwrap();
    let out = add(&format!("{at}/p2p/{}", nobodys_id()), "typo-id");
    assert!(out.contains("wrong peer ID"), "{out}");
    assert!(out.contains(&peer_id(&other)), "names who answered: {out}");

    let out = add(&nobodys_id(), "unknown");
    assert!(out.contains("no address known"), "{out}");

    for name in ["typo-port", "silent", "typo-id"] {
        let p = peer_json(&me.repo, name);
        assert_eq!(p["connected"], false, "{p}");
        assert!(p["rtt_ms"].is_null(), "{p}");
        assert!(p["last_dial_error"].is_string(), "{p}");
        assert!(p["last_dial_error_at"].is_string(), "{p}");
    }
    let text = me.repo.ok(&["peers"]);
    assert!(text.contains("last dial"), "{text}");

    // The other daemon dies: no stale RTT, and the reason the redial fails.
    assert!(peer_json(&me.repo, "other")["rtt_ms"].is_number());
    kill(&other);
    wait_for("other's failed redial", Duration::from_secs(20), || {
        let p = peer_json(&me.repo, "other");
        p["connected"] == false
            && p["rtt_ms"].is_null()
            && p["last_dial_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused"))
    });
    let text = me.repo.ok(&["peers"]);
    let other_part: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "other")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    let other_part = other_part.join("\n");
    assert!(other_part.contains("connected:   no"), "{text}");
    assert!(!other_part.contains("rtt"), "a stale RTT: {text}");
    assert!(other_part.contains("refused"), "{text}");
}

/// Item 9: the log says who connected and left, names a dial that fails once rather
/// than at every retry, and a read that ended in EIO names the block and whom it asked.
#[test]
fn the_log_tells_who_came_and_went_which_dials_failed_and_which_reads_failed() {
    let alice = Mounted::readable_by_everyone();
    let carol = Mounted::new();
    let repo = TestRepo::new();
    repo.set_config("fetch_timeout", "\"3s\"");
    let me = Mounted::with_repo(repo);
    follow(&me, &alice, "alice");
    follow(&me, &carol, "carol");
    write(
        &alice.drive().join("unread.bin"),
        &common::bytes(3 << 20, 9),
    );
    let unread = me.mnt.path().join("peers/alice/unread.bin");
    wait_for("alice's file", Duration::from_secs(20), || unread.exists());

    let log = log_of(&me);
    let alice_at = addr(&alice);
    let (alice_ip_port, _) = alice_at.rsplit_once("/p2p/").unwrap();
    assert!(
        log.lines().any(|l| l.contains(" INFO ")
            && l.contains("alice")
            && l.contains("connected")
            && l.contains(alice_ip_port)),
        "no connect line for alice: {log}"
    );

    kill(&alice);
    // Redials with backoff: wait for several failures.
    let mut failures = Vec::new();
    wait_for("three failed redials", Duration::from_secs(20), || {
        if let Some(at) = peer_json(&me.repo, "alice")["last_dial_error_at"].as_str() {
            if failures.last().map(String::as_str) != Some(at) {
                failures.push(at.to_string());
            }
        }
        failures.len() >= 3
    });
    let err = fs::read(&unread).expect_err("nobody has alice's file");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));

    let log = log_of(&me);
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("alice") && l.contains("left")),
        "no leave line for alice: {log}"
    );
    let dial_warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("alice") && l.contains("refused"))
        .collect();
    assert_eq!(dial_warnings.len(), 1, "{failures:?} {log}");
    // The block that failed is the file's root or one of its leaves: a CID either way.
    assert!(
        log.lines().any(|l| l.contains(" WARN ")
            && l.contains("EIO")
            && l.contains(" baf")
            && l.contains("alice")
            && l.contains("carol")),
        "the failed read names the block, the drive and the sources asked: {log}"
    );
}
