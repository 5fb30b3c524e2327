//! `peerfs watch`: a followed peer's changes, heads and comings and goings, as they
//! happen, from separate daemons on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{cid_of, follow, kill, wait_for, write, Mounted};
use serde_json::Value;

/// A `peerfs watch --json` running on `m`, its events arriving on a channel; killed on
/// drop.
struct Watch {
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Watch {
    fn start(m: &Mounted, args: &[&str]) -> Watch {
        let mut full = vec!["watch", "--json"];
        full.extend_from_slice(args);
        let mut child = m
            .repo
            .command(&full)
            .stdout(Stdio::piped())
            .spawn()
            .expect("peerfs watch");
        let out = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let w = Watch { child, events };
        w.next_where("the watch to start", |e| e["event"] == "watching");
        w
    }

    /// The first event (from now) that `wanted` accepts, within 20 s.
    fn next_where(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if wanted(&e) => return e,
                Ok(_) => continue,
                Err(_) => panic!("no event: {what}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(e: &Value, event: &str, path: &str) -> bool {
    e["event"] == event && e["peer"] == "alice" && e["path"] == path
}

#[test]
fn watch_prints_a_followed_peers_changes_as_they_happen() {
    let a = Mounted::readable_by_everyone();
    write(&a.drive().join("docs/old.txt"), b"old\n");
    let b = Mounted::new();
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice");
    wait_for("alice's drive", Duration::from_secs(20), || {
        theirs.join("docs/old.txt").exists()
    });
    let watch = Watch::start(&b, &[]);
    let only_bob = Watch::start(&b, &["bob"]);

    // A file added: one event, with its path, kind, size and CID, soon after the
    // commit that made it.
    let file = a.drive().join("docs/new.txt");
    let started = Instant::now();
    write(&file, b"fresh\n");
    std::fs::File::open(&file).unwrap().sync_all().unwrap();
    // The head first, then what changed in it.
    let head = watch.next_where("alice's head", |e| e["event"] == "head");
    assert_eq!(head["peer"], "alice");
    assert_eq!(head["peer_id"], common::peer_id(&a));
    let added = watch.next_where("docs/new.txt added", |e| is(e, "added", "docs/new.txt"));
    let took = started.elapsed();
    eprintln!("added event {took:?} after the write");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(added["kind"], "file");
    assert_eq!(added["size"], 6);
    assert_eq!(added["cid"], cid_of(&file));
    assert!(added["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // Changed and removed, and a directory made is one event.
    write(&a.drive().join("docs/old.txt"), b"new content\n");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir_all(a.drive().join("photos/2026")).unwrap();
    write(&a.drive().join("photos/2026/a.jpg"), b"jpeg");
    std::process::Command::new("sync").status().unwrap();
    // In whatever order (one head or several), each exactly as it happened.
    let (mut changed, mut removed, mut made) = (None, None, None);
    while changed.is_none() || removed.is_none() || made.is_none() {
        let e = watch.next_where("the changes", |e| e["peer"] == "alice");
        if is(&e, "changed", "docs/old.txt") {
            changed = Some(e);
        } else if is(&e, "removed", "docs/new.txt") {
            removed = Some(e);
        } else if is(&e, "added", "photos") {
            made = Some(e);
        } else {
            // The directory may have come in a commit of its own, before its file.
            let inside = e["event"] == "added"
                && e["path"].as_str().is_some_and(|p| p.starts_with("photos/"));
            assert!(
                e["event"] == "head" || inside,
                "an event for nothing that happened: {e}"
            );
        }
    }
    assert_eq!(changed.unwrap()["size"], 12);
    assert_eq!(removed.unwrap()["kind"], "file");
    let made = made.unwrap();
    assert_eq!(made["kind"], "directory");
    assert!(made.get("size").is_none(), "{made}");

    // Alice goes away.
    kill(&a);
    watch.next_where("alice left", |e| {
        e["event"] == "disconnected" && e["peer"] == "alice"
    });
    // A watch of other peers saw nothing of alice.
    while let Ok(e) = only_bob.events.try_recv() {
        assert_ne!(e["peer"], "alice", "{e}");
    }
}
