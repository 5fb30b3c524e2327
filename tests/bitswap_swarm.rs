//! Bitswap peers as sources of the same fetch scheduler as peerfs peers: a pin of a CID
//! that a Helia node (Bitswap only) and a peerfs node both hold draws on both at once,
//! each counted as a source of the transfer, and finishes from the one left when the
//! other dies in the middle of it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{addr, bytes, peer_id, wait_child, wait_for, write, Mounted, TestRepo};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn helia_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/helia")
}

/// `node helia.mjs mirror ADDR CID [LENGTH]`: a Helia node that copied CID's file (its
/// first LENGTH bytes' blocks) from ADDR over Bitswap, then serves them; killed (by
/// PID) on drop.
struct Helia {
    child: Child,
    addr: String,
}

impl Helia {
    fn mirror(from: &str, cid: &str, length: Option<u64>) -> Helia {
        use std::io::{BufRead, BufReader};
        assert!(
            helia_dir().join("node_modules/helia").is_dir(),
            "Helia is not installed: run scripts/install-deps"
        );
        let mut command = Command::new("node");
        command
            .arg(helia_dir().join("helia.mjs"))
            .args(["mirror", from, cid]);
        if let Some(n) = length {
            command.arg(n.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Helia");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let mut words = line.split_whitespace();
        let (Some(got), Some(addr)) = (words.next(), words.next()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Helia printed {line:?}");
        };
        assert_eq!(got, cid);
        Helia {
            addr: addr.to_string(),
            child,
        }
    }

    fn peer_id(&self) -> &str {
        self.addr.rsplit('/').next().unwrap()
    }
}

impl Drop for Helia {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// B's transfer of `cid`, if it has one.
fn transfer(m: &Mounted, cid: &str) -> Option<Value> {
    let out = m.repo.ok(&["transfers", "--json"]);
    let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    all.as_array()?.iter().find(|t| t["cid"] == cid).cloned()
}

/// The blocks `peer` sent for transfer `t`, and over which protocol.
fn sent_by(t: &Value, peer: &str) -> (u64, String) {
    t["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["peer_id"] == peer)
        .map_or((0, String::new()), |s| {
            let blocks = s["blocks"].as_u64().unwrap_or(0);
            (blocks, s["protocol"].as_str().unwrap_or("").to_string())
        })
}

/// A peerfs node (serving our protocol at a slow `upload_rate`) that added a 32 MiB
/// file, and B connected to it and to `helia` peers; returns A, B, the file and its CID.
fn holder(dir: &Path) -> (Mounted, Vec<u8>, String) {
    let data = bytes(32 << 20, 7);
    let file = dir.join("big.bin");
    write(&file, &data);
    let repo = TestRepo::readable_by_everyone();
    // Slow on our protocol (not over Bitswap, which Helia copies from): the transfer
    // lasts long enough to be caught in the middle.
    repo.set_config("upload_rate", r#""4 MiB""#);
    let cid = repo
        .ok(&["add", "-q", file.to_str().unwrap()])
        .trim()
        .to_string();
    (Mounted::with_repo(repo), data, cid)
}

fn reader(peers: &[&str]) -> Mounted {
    let repo = TestRepo::new();
    let list: Vec<String> = peers.iter().map(|p| format!("{p:?}")).collect();
    repo.set_config("bootstrap", &format!("[{}]", list.join(", ")));
    repo.set_config("fetch_timeout", r#""20s""#);
    Mounted::with_repo(repo)
}

fn pin_in_background(m: &Mounted, cid: &str) -> Child {
    m.repo
        .command(&["pin", cid])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start peerfs pin")
}

#[test]
fn a_pin_draws_on_a_helia_node_and_a_peer_at_once_and_ends_from_the_peer_when_helia_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (a, data, cid) = holder(dir.path());
    // Helia holds the first half of the file's blocks (and the root).
    let helia = Helia::mirror(&addr(&a), &cid, Some(16 * MIB));
    let helia_id = helia.peer_id().to_string();
    let a_id = peer_id(&a);
    let b = reader(&[&addr(&a), &helia.addr]);
    wait_for("b connects to A and Helia", Duration::from_secs(20), || {
        let s = b.repo.ok(&["status", "--json"]);
        s.contains(&a_id) && s.contains(&helia_id)
    });

    let mut pin = pin_in_background(&b, &cid);
    let mut t = Value::Null;
    wait_for(
        "Helia serves blocks of the pin",
        Duration::from_secs(30),
        || {
            t = transfer(&b, &cid).unwrap_or_default();
            sent_by(&t, &helia_id).0 > 0
        },
    );
    assert_eq!(sent_by(&t, &helia_id).1, "bitswap", "{t}");
    assert!(
        t["bytes"].as_u64() < Some(28 * MIB) && t["state"] == "running",
        "caught too late to tell: {t}"
    );
    // Helia dies in the middle; A brings the rest.
    drop(helia);
    let status = wait_child(&mut pin, Duration::from_secs(60)).expect("the pin ends");
    assert!(status.success(), "the pin failed: {:?}", transfer(&b, &cid));
    let t = transfer(&b, &cid).expect("the transfer");
    assert_eq!(t["state"], "done", "{t}");
    let (from_a, how) = sent_by(&t, &a_id);
    let (from_helia, _) = sent_by(&t, &helia_id);
    assert!(from_a > 0 && from_helia > 0, "{t}");
    assert_eq!(how, "peerfs", "{t}");
    assert!(from_a + from_helia >= 32, "{t}");
    let out = b.repo.command(&["cat", &cid]).output().unwrap();
    assert!(out.stdout == data, "the pinned bytes differ");
}

/// Stops (`SIGSTOP`) or continues (`SIGCONT`) a process we started, by PID.
fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) with a PID we started and have not waited for.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

#[test]
fn a_pin_ends_from_helia_when_the_peer_dies_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let (a, data, cid) = holder(dir.path());
    let helia = Helia::mirror(&addr(&a), &cid, None);
    let helia_id = helia.peer_id().to_string();
    let a_id = peer_id(&a);
    let b = reader(&[&addr(&a), &helia.addr]);
    wait_for("b connects to A and Helia", Duration::from_secs(20), || {
        let s = b.repo.ok(&["status", "--json"]);
        s.contains(&a_id) && s.contains(&helia_id)
    });
    // Helia stalls (its identify is in by now): A, slow, serves the first blocks, and
    // the transfer is surely in its middle when A dies.
    std::thread::sleep(Duration::from_secs(1));
    signal(&helia.child, libc::SIGSTOP);
    let mut pin = pin_in_background(&b, &cid);
    let mut t = Value::Null;
    wait_for(
        "A serves blocks of the pin",
        Duration::from_secs(30),
        || {
            t = transfer(&b, &cid).unwrap_or_default();
            sent_by(&t, &a_id).0 > 0
        },
    );
    assert_eq!(t["state"], "running", "{t}");
    common::kill(&a);
    common::detach_mount(a.mnt.path());
    signal(&helia.child, libc::SIGCONT);
    let status = wait_child(&mut pin, Duration::from_secs(60)).expect("the pin ends");
    assert!(status.success(), "the pin failed: {:?}", transfer(&b, &cid));
    let t = transfer(&b, &cid).expect("the transfer");
    assert_eq!(t["state"], "done", "{t}");
    assert!(sent_by(&t, &helia_id).0 > 0, "{t}");
    let out = b.repo.command(&["cat", &cid]).output().unwrap();
    assert!(out.stdout == data, "the pinned bytes differ");
}
