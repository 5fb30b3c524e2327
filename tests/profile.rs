//! Peers introduce themselves, as daemons on 127.0.0.1 meet them: A's profile (name,
//! about, avatar) names its folder on B when B follows it without a name, and shows in
//! `peers --json` with A's capabilities; a new profile name changes what `peers` says
//! but not the folder; a follower that only finds A's head in the DHT, A gone, still
//! learns the profile; friends that share whom they follow give suggestions, others
//! none; a hostile profile name becomes a safe folder name; a hostile HELLO is refused.

mod common;

use std::time::Duration;

use libp2p::{Multiaddr, StreamProtocol};
use serde_json::Value;

use common::raw::{frame, send_all};
use common::{addr, kill, peer_id, wait_for, write, Mounted, TestRepo};

const WAIT: Duration = Duration::from_secs(30);

fn json(m: &Mounted, args: &[&str]) -> Value {
    let out = m.repo.ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// What `peers --json` on `m` says of the peer with `id`.
fn peer(m: &Mounted, id: &str) -> Value {
    let all = json(m, &["peers", "--json"]);
    all.as_array()
        .and_then(|a| a.iter().find(|p| p["peer_id"] == id).cloned())
        .unwrap_or_else(|| panic!("no peer {id} in {all}"))
}

/// A tiny PNG (only its signature and header matter to peerfs).
fn png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend((0u8..=255).cycle().take(3000));
    v
}

fn peer_dirs(m: &Mounted) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(m.mnt.path().join("peers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_peer_followed_without_a_name_gets_its_profile_name_and_keeps_it() {
    let a = Mounted::readable_by_everyone();
    let avatar = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(avatar.path(), png()).unwrap();
    let not_image = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_image.path(), b"#!/bin/sh\necho hi\n").unwrap();
    let refused = a.repo.fails(&[
        "profile",
        "set",
        "--avatar",
        not_image.path().to_str().unwrap(),
    ]);
    assert!(refused.contains("not a PNG"), "{refused}");
    let refused = a.repo.fails(&["profile", "set", "--name", &"x".repeat(65)]);
    assert!(refused.contains("at most 64"), "{refused}");
    a.repo.ok(&[
        "profile",
        "set",
        "--name",
        "Alice",
        "--about",
        "photos and notes",
        "--avatar",
        avatar.path().to_str().unwrap(),
    ]);
    let mine = json(&a, &["profile", "--json"]);
    assert_eq!(mine["name"], "Alice");
    let avatar_cid = mine["avatar"].as_str().expect("an avatar CID").to_string();

    let b = Mounted::new();
    let said = b.repo.ok(&["peer", "add", &addr(&a)]);
    assert!(said.contains("following Alice"), "{said}");
    assert_eq!(peer_dirs(&b), vec!["Alice".to_string()]);
    let alice = peer_id(&a);
    let seen = peer(&b, &alice);
    assert_eq!(seen["name"], "Alice");
    assert_eq!(seen["profile_name"], "Alice");
    assert_eq!(seen["about"], "photos and notes");
    assert_eq!(seen["avatar"], avatar_cid.as_str());
    let caps: Vec<&str> = seen["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        caps.contains(&"inbox") && caps.contains(&"bitswap"),
        "{caps:?}"
    );
    assert!(!caps.contains(&"mirror"), "{caps:?}");
    // The avatar itself, fetched from A.
    let image = b.repo.command(&["cat", &avatar_cid]).output().unwrap();
    assert_eq!(image.stdout, png());

    // A new name: the folder stays, `peers` says what A calls itself now.
    a.repo
        .ok(&["profile", "set", "--name", "Alicia", "--no-avatar"]);
    wait_for("b sees alice's new name", WAIT, || {
        peer(&b, &alice)["profile_name"] == "Alicia"
    });
    let seen = peer(&b, &alice);
    assert_eq!(seen["name"], "Alice");
    assert_eq!(seen["about"], "photos and notes");
    assert_eq!(seen["avatar"], Value::Null);
    assert_eq!(peer_dirs(&b), vec!["Alice".to_string()]);
    let text = b.repo.ok(&["peers"]);
    assert!(text.contains("Alice (calls itself Alicia)"), "{text}");
    write(&a.drive().join("hello.txt"), b"hi\n");
    let there = b.mnt.path().join("peers/Alice/hello.txt");
    wait_for("alice's file under peers/Alice", WAIT, || there.exists());
}

/// A daemon that joins the DHT through `bootstrap`, open to everyone.
fn bootstrapped(bootstrap: &str, dht_server: bool) -> TestRepo {
    let repo = TestRepo::readable_by_everyone();
    repo.set_config("bootstrap", &format!("[\"{bootstrap}\"]"));
    repo.set_config("dht_server", &dht_server.to_string());
    repo
}

#[test]
fn the_profile_travels_with_the_head_while_its_owner_is_offline() {
    let d = Mounted::new();
    let dht = addr(&d);
    // Set while no daemon runs: the daemon carries it in a head when it starts.
    let repo = bootstrapped(&dht, true);
    repo.ok(&["profile", "set", "--name", "Alice", "--about", "away a lot"]);
    let a = Mounted::with_repo(repo);
    write(&a.drive().join("f.txt"), b"one\n");
    let alice = peer_id(&a);
    let b = Mounted::with_repo(bootstrapped(&dht, false));
    b.repo.ok(&["peer", "add", &addr(&a), "--name", "al"]);
    wait_for("b sees alice's profile", WAIT, || {
        peer(&b, &alice)["profile_name"] == "Alice"
    });
    kill(&a);

    // C never met A: the head, with the profile in it, comes from the DHT.
    let c = Mounted::with_repo(bootstrapped(&dht, false));
    c.repo.ok(&["peer", "add", &alice]);
    wait_for("c learns alice's head and profile", WAIT, || {
        peer(&c, &alice)["profile_name"] == "Alice"
    });
    let seen = peer(&c, &alice);
    assert_eq!(seen["about"], "away a lot");
    // Not known when it was added: the folder keeps the peer ID.
    assert_eq!(seen["name"], alice.as_str());
}

#[test]
fn friends_that_share_whom_they_follow_make_suggestions() {
    let d = Mounted::new();
    d.repo.ok(&["profile", "set", "--name", "Dana"]);
    let sharing = TestRepo::new();
    sharing.set_config("share_following", "true");
    let a = Mounted::with_repo(sharing);
    a.repo.ok(&["profile", "set", "--name", "Alice"]);
    // E follows D too, but shares nothing (the default).
    let e = Mounted::new();
    let b = Mounted::new();
    let (dana, bob) = (peer_id(&d), peer_id(&b));
    a.repo.ok(&["peer", "add", &addr(&d)]);
    a.repo.ok(&["peer", "add", &addr(&b), "--name", "bob"]);
    e.repo.ok(&["peer", "add", &addr(&d), "--name", "dana"]);
    b.repo.ok(&["peer", "add", &addr(&e), "--name", "erin"]);
    let none = json(&b, &["suggestions", "--json"]);
    assert_eq!(none, serde_json::json!([]), "erin shares nothing");
    b.repo.ok(&["peer", "add", &addr(&a)]);
    let mut list = Value::Null;
    wait_for("b is offered dana", WAIT, || {
        list = json(&b, &["suggestions", "--json"]);
        list.as_array().is_some_and(|l| !l.is_empty())
    });
    // Dana through Alice only; not bob himself.
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["peer_id"], dana.as_str());
    assert_eq!(list[0]["profile_name"], "Dana");
    assert_eq!(list[0]["through"], serde_json::json!(["Alice"]));
    let to = list[0]["addresses"][0].as_str().expect("an address");
    assert!(to.ends_with(&format!("/p2p/{dana}")), "{to}");
    assert!(!list.iter().any(|s| s["peer_id"] == bob.as_str()));
    // Ready for `peer add`: once followed, it is no longer suggested.
    let said = b.repo.ok(&["peer", "add", to]);
    assert!(said.contains("following Dana"), "{said}");
    assert_eq!(json(&b, &["suggestions", "--json"]), serde_json::json!([]));
}

#[test]
fn hostile_profile_names_become_safe_unique_folder_names() {
    let a = Mounted::new();
    let a2 = Mounted::new();
    for m in [&a, &a2] {
        m.repo.ok(&["profile", "set", "--name", "../../etc/.."]);
    }
    let b = Mounted::new();
    b.repo.ok(&["peer", "add", &addr(&a)]);
    b.repo.ok(&["peer", "add", &addr(&a2)]);
    assert_eq!(
        peer_dirs(&b),
        vec!["_.._etc_..".to_string(), "_.._etc_..-2".to_string()]
    );
    let mut top: Vec<String> = std::fs::read_dir(b.mnt.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert!(!top.iter().any(|n| n.contains("etc")), "{top:?}");
    // A name that is only dots leaves nothing safe: the peer ID names the folder.
    let a3 = Mounted::new();
    a3.repo.ok(&["profile", "set", "--name", ".."]);
    b.repo.ok(&["peer", "add", &addr(&a3)]);
    assert!(peer_dirs(&b).contains(&peer_id(&a3)));
}

/// Sends each message as a HELLO to the daemon at `addr`: the answers' bytes, or why not.
fn hellos(addr: &Multiaddr, messages: Vec<Vec<u8>>) -> Vec<Result<Vec<u8>, String>> {
    let protocol = StreamProtocol::new("/peerfs/hello/1.0.0");
    send_all(addr, protocol, messages, Duration::from_secs(40))
}

#[test]
fn hostile_hellos_are_refused_and_the_daemon_still_introduces_itself() {
    let a = Mounted::new();
    a.repo.ok(&["profile", "set", "--name", "Alice"]);
    let at: Multiaddr = addr(&a).parse().unwrap();
    let good = peerfs::net::protocol::encode(
        &peerfs::profile::hello::Hello::default(),
        peerfs::profile::hello::MAX_HELLO,
    )
    .unwrap();
    let results = hellos(
        &at,
        vec![
            good.clone(),
            frame(u32::MAX, b""),          // oversized, by its length alone
            frame(64 << 20, &[0u8; 4096]), // oversized and partly sent
            frame(100, &[0xa1, 0x64]),     // truncated
            frame(3, &[0xff, 0x00, 0x13]), // not DAG-CBOR
        ],
    );
    let answer = results[0].as_ref().expect("a good HELLO is answered");
    assert!(
        answer.windows(5).any(|w| w == b"Alice"),
        "the answer carries the profile"
    );
    for (i, r) in results.iter().enumerate().skip(1) {
        assert!(
            r.as_ref().map_or(true, Vec::is_empty),
            "hostile HELLO {i} got an answer: {r:?}"
        );
    }
    // Still alive and answering.
    let again = hellos(&at, vec![good]);
    assert!(again[0].as_ref().is_ok_and(|a| !a.is_empty()));
    assert!(a.alive());
}
