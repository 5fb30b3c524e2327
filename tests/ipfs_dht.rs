//! The IPFS DHT (config `ipfs_dht`): three daemons on 127.0.0.1 (so the LAN DHT,
//! `/ipfs/lan/kad/1.0.0`, is the one that carries them). B is a DHT server; A and C
//! are DHT clients bootstrapped to B and follow nobody. A adds a file; C, which knows
//! only B, `cat`s its CID and gets the bytes through the provider record A put in B.
//!
//! A and C are clients on purpose: in a DHT of three servers every lookup dials every
//! node, so C would be connected to A before it ever asked for a provider, and would
//! get the bytes from a connected peer; with B the only server, C meets A only through
//! the provider record (the test checks C is not connected to A before the `cat`).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const FETCH_TIMEOUT_S: u64 = 6;

fn json(m: &Mounted, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&m.repo.ok(args)).expect("JSON")
}

/// A daemon with `ipfs_dht` as given, a DHT server or a client, bootstrapped to
/// `bootstrap`.
fn daemon(ipfs_dht: bool, server: bool, bootstrap: Option<&str>) -> Mounted {
    let repo = TestRepo::new();
    repo.set_config("ipfs_dht", &ipfs_dht.to_string());
    repo.set_config("dht_server", &server.to_string());
    repo.set_config("fetch_timeout", &format!("\"{FETCH_TIMEOUT_S}s\""));
    // Open: the CIDv0 form of a pinned CIDv1 is served only as a drive's block (pins
    // are kept by their CID).
    repo.set_config("readers", r#"["*"]"#);
    if let Some(b) = bootstrap {
        repo.set_config("bootstrap", &format!("[{b:?}]"));
    }
    Mounted::with_repo(repo)
}

/// `peerfs cat CID` on `m`, killed past `limit`: its exit status (none if killed),
/// stdout and stderr, and how long it took.
fn cat(m: &Mounted, cid: &str, limit: Duration) -> (Option<bool>, Vec<u8>, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let started = Instant::now();
    let mut child = m
        .repo
        .command(&["cat", cid])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run cat");
    let status = wait_child(&mut child, limit);
    let took = started.elapsed();
    let stdout = std::fs::read(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    (status.map(|s| s.success()), stdout, stderr, took)
}

fn connected_to(m: &Mounted, peer: &str) -> bool {
    json(m, &["status", "--json"])["connected_peers"]
        .as_array()
        .expect("connected_peers")
        .iter()
        .any(|p| p["peer_id"] == peer && p["connected"] == true)
}

/// B, then A (with `a_dht`) and C, both bootstrapped to B; A has added a 3 MiB file
/// and a second one, and C is connected to B. Returns them and the CIDs.
fn three(a_dht: bool) -> (Mounted, Mounted, Mounted, String, String, Vec<u8>) {
    let b = daemon(true, true, None);
    let b_addr = addr(&b);
    let a = daemon(a_dht, false, Some(&b_addr));
    let c = daemon(true, false, Some(&b_addr));
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(3 << 20, 61);
    write(&dir.path().join("one.bin"), &data);
    write(&dir.path().join("two.bin"), &bytes(3 << 20, 62));
    let add = |name: &str| {
        a.repo
            .ok(&["add", "-q", dir.path().join(name).to_str().unwrap()])
            .trim()
            .to_string()
    };
    let (one, two) = (add("one.bin"), add("two.bin"));
    let b_id = peer_id(&b);
    wait_for("A and C to reach B", Duration::from_secs(20), || {
        connected_to(&a, &b_id) && connected_to(&c, &b_id)
    });
    (a, b, c, one, two, data)
}

#[test]
fn a_stranger_finds_what_was_added_through_the_provider_record() {
    let (a, b, c, one, two, data) = three(true);
    // A provides its drive's root and the two files, and B holds the records.
    let mut status = serde_json::Value::Null;
    wait_for("A to provide its roots", Duration::from_secs(20), || {
        status = json(&a, &["status", "--json"])["ipfs_dht"].clone();
        status["provided"].as_u64() >= Some(2)
    });
    assert_eq!(status["enabled"], true, "{status}");
    assert!(
        status["lan_routing_table_peers"].as_u64() >= Some(1),
        "{status}"
    );
    wait_for("B to keep A's records", Duration::from_secs(20), || {
        json(&b, &["status", "--json"])["ipfs_dht"]["stored_provider_keys"].as_u64() >= Some(2)
    });
    let a_id = peer_id(&a);
    assert!(!connected_to(&c, &a_id), "C met A before asking the DHT");

    let (ok, got, err, took) = cat(&c, &one, Duration::from_secs(60));
    assert_eq!(ok, Some(true), "C could not cat {one} ({took:?}): {err}");
    assert!(got == data, "C got other bytes for {one}");
    println!("cat through the provider record: {took:?}");
    assert!(connected_to(&c, &a_id), "C got it, but not from A");

    // The provider key is the multihash: the CIDv0 form of A's CIDv1 finds A too. A
    // fourth daemon asks, as C is connected to A now and would ask it directly.
    let d = daemon(true, false, Some(&addr(&b)));
    let b_id = peer_id(&b);
    wait_for("D to reach B", Duration::from_secs(20), || {
        connected_to(&d, &b_id)
    });
    assert!(!connected_to(&d, &a_id), "D met A before asking the DHT");
    let v1: cid::Cid = two.parse().unwrap();
    assert_eq!(v1.codec(), 0x70, "a 3 MiB file's root is dag-pb");
    let v0 = cid::Cid::new_v0(*v1.hash()).unwrap().to_string();
    let (ok, got, err, took) = cat(&d, &v0, Duration::from_secs(60));
    assert_eq!(
        ok,
        Some(true),
        "D could not cat {v0}, the CIDv0 form of {two} ({took:?}): {err}"
    );
    assert!(got == bytes(3 << 20, 62), "D got other bytes for {v0}");
    assert!(a.alive() && b.alive() && c.alive() && d.alive());
}

#[test]
fn without_ipfs_dht_on_the_provider_a_stranger_fails_in_time() {
    let (a, _b, c, one, _, _) = three(false);
    let a_id = peer_id(&a);
    assert_eq!(
        json(&a, &["status", "--json"])["ipfs_dht"]["enabled"],
        false
    );
    // Time to provide, had A been providing.
    std::thread::sleep(Duration::from_secs(3));
    let limit = Duration::from_secs(FETCH_TIMEOUT_S + 15);
    let (ok, _, err, took) = cat(&c, &one, limit);
    assert_ne!(ok, Some(true), "C got {one} with no provider record");
    assert_eq!(ok, Some(false), "C's cat did not give up within {limit:?}");
    println!("gave up after {took:?}: {}", err.trim());
    assert!(!connected_to(&c, &a_id));
}

/// A js-libp2p node with Helia's DHT (`@libp2p/kad-dht`, on the LAN protocol) that knows
/// only B finds A's provider record there, A's address with it: the record is one IPFS
/// nodes read.
#[test]
fn helias_dht_finds_the_provider_record() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/helia");
    assert!(
        dir.join("node_modules/@libp2p/kad-dht").is_dir(),
        "Helia is not installed: run scripts/install-deps"
    );
    let b = daemon(true, true, None);
    let b_addr = addr(&b);
    let a = daemon(true, false, Some(&b_addr));
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("f.bin"), &bytes(100_000, 63));
    let cid = a
        .repo
        .ok(&["add", "-q", src.path().join("f.bin").to_str().unwrap()])
        .trim()
        .to_string();
    wait_for("B to keep A's records", Duration::from_secs(20), || {
        json(&b, &["status", "--json"])["ipfs_dht"]["stored_provider_keys"].as_u64() >= Some(2)
    });
    let out = std::process::Command::new("timeout")
        .args(["60", "node"])
        .arg(dir.join("dht.mjs"))
        .args(["findprovs", &b_addr, &cid, "30000"])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Helia's DHT found no provider of {cid}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(found["id"], peer_id(&a), "{stdout}");
    assert!(
        found["addrs"].as_array().is_some_and(|a| !a.is_empty()),
        "no address for the provider: {stdout}"
    );
}
