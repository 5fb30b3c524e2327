//! Sending to a peer's inbox: `peerfs send`, delivery, read receipts, offline peers
//! and refusals, between separate daemons on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{assert_same_tree, bytes, daemon_pid, follow, wait_for, write, Mounted, TestRepo};
use serde_json::Value;

/// Two daemons that follow each other: alice (`a`) and bob (`b`).
fn pair() -> (Mounted, Mounted) {
    let a = Mounted::new();
    let b = Mounted::new();
    follow(&a, &b, "bob");
    follow(&b, &a, "alice");
    (a, b)
}

/// `peerfs watch --json` on `m`, collecting its events until `stop`.
struct Watch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Watch {
    fn start(m: &Mounted) -> Watch {
        let mut child = m
            .repo
            .command(&["watch", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("peerfs watch");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let w = Watch { child, lines };
        let first = w
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("watching");
        assert_eq!(first["event"], "watching");
        w
    }

    /// Every event so far.
    fn events(&self) -> Vec<Value> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn items(m: &Mounted, which: &str) -> Vec<Value> {
    let out = m.repo.ok(&[which, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The state of the outbox item named `name` (`queued`, `delivering`, ...).
fn out_state(m: &Mounted, name: &str) -> Option<String> {
    items(m, "outbox")
        .into_iter()
        .find(|i| i["name"] == name)
        .map(|i| i["state"].as_str().unwrap_or_default().to_string())
}

fn wait_state(m: &Mounted, name: &str, state: &str, limit: Duration) {
    wait_for(&format!("{name} {state}"), limit, || {
        out_state(m, name).as_deref() == Some(state)
    });
}

fn send(m: &Mounted, path: &Path, to: &str) -> String {
    m.repo
        .ok(&["send", path.to_str().unwrap(), "--to", to, "--no-wait"])
}

/// A folder of `n` small files, some in a subfolder.
fn folder(at: &Path, n: usize) {
    for i in 0..n {
        let sub = if i % 3 == 0 { "sub/" } else { "" };
        write(
            &at.join(format!("{sub}f{i:03}.txt")),
            &bytes(100 + i * 7, i as u64),
        );
    }
}

#[test]
fn a_file_and_a_folder_arrive_whole_and_the_sender_sees_delivered_then_read() {
    let (a, b) = pair();
    // The inbox's own directory is kept, and is no pin of the user's.
    assert_eq!(b.repo.ok(&["pins", "--json"]).trim(), "[]");
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    let content = bytes(50 << 20, 7);
    write(&big, &content);
    folder(&src.path().join("photos"), 300);
    let (watch_a, watch_b) = (Watch::start(&a), Watch::start(&b));

    // Waits until delivered, with the time it took.
    let out = Command::new("timeout")
        .arg("90")
        .arg(common::bin())
        .args(["--repo", a.repo.path().to_str().unwrap()])
        .args(["send", big.to_str().unwrap(), "--to", "bob"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("delivered big.bin to bob"), "{said}");
    send(&a, &src.path().join("photos"), "bob");
    wait_state(&a, "photos", "delivered", Duration::from_secs(60));

    let inbox = b.mnt.path().join("inbox/alice");
    // Looked at, not read: still "delivered".
    Command::new("ls")
        .arg("-lR")
        .arg(b.mnt.path().join("inbox"))
        .output()
        .unwrap();
    let meta = std::fs::metadata(inbox.join("big.bin")).unwrap();
    assert_eq!(meta.len(), content.len() as u64);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(out_state(&a, "big.bin").as_deref(), Some("delivered"));

    // Read: byte-identical, and alice hears of it.
    assert!(std::fs::read(inbox.join("big.bin")).unwrap() == content);
    wait_state(&a, "big.bin", "read", Duration::from_secs(20));
    assert_same_tree(&src.path().join("photos"), &inbox.join("photos"));
    wait_state(&a, "photos", "read", Duration::from_secs(20));

    // Bob's list of what came, with sender, names, sizes.
    let got = items(&b, "inbox");
    assert_eq!(got.len(), 2, "{got:?}");
    let file = got.iter().find(|i| i["name"] == "big.bin").unwrap();
    assert_eq!(file["from_name"], "alice");
    assert_eq!(file["size"], content.len() as u64);
    assert_eq!(file["state"], "read");

    // The feed told both sides as it happened.
    let seen = |events: &[Value], event: &str, name: &str| {
        events
            .iter()
            .any(|e| e["event"] == event && e["name"] == name)
    };
    let (on_a, on_b) = (watch_a.events(), watch_b.events());
    assert!(seen(&on_b, "arrived", "big.bin"), "{on_b:?}");
    assert!(seen(&on_b, "arrived", "photos"), "{on_b:?}");
    assert!(seen(&on_a, "delivered", "big.bin"), "{on_a:?}");
    assert!(seen(&on_a, "read", "big.bin"), "{on_a:?}");
    let arrived = on_b.iter().find(|e| e["event"] == "arrived").unwrap();
    assert_eq!(arrived["peer"], "alice");

    // The same name again gets a suffix; nothing is overwritten.
    let again = tempfile::tempdir().unwrap();
    write(&again.path().join("big.bin"), b"second\n");
    send(&a, &again.path().join("big.bin"), "bob");
    wait_for("big (2).bin", Duration::from_secs(30), || {
        inbox.join("big (2).bin").exists()
    });
    assert_eq!(
        std::fs::read(inbox.join("big (2).bin")).unwrap(),
        b"second\n"
    );
    assert_eq!(
        std::fs::metadata(inbox.join("big.bin")).unwrap().len(),
        50 << 20
    );

    // A folder item is deleted from and moved out as on a disk: `mv` copies it (the
    // rename is across file systems), then deletes it entry by entry.
    let err = common::sh(b.mnt.path(), "rmdir inbox/alice/photos 2>&1 || true");
    assert!(err.contains("not empty"), "{err}");
    common::sh(
        b.mnt.path(),
        "rm inbox/alice/photos/f001.txt && test ! -e inbox/alice/photos/f001.txt",
    );
    std::fs::remove_file(src.path().join("photos/f001.txt")).unwrap();
    assert_same_tree(&src.path().join("photos"), &inbox.join("photos"));
    common::sh(b.mnt.path(), "mv inbox/alice/photos drive/kept");
    assert_same_tree(&src.path().join("photos"), &b.drive().join("kept"));
    assert!(!inbox.join("photos").exists());
    let left: Vec<_> = items(&b, "inbox")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        left.len() == 2 && !left.contains(&"photos".to_string()),
        "{left:?}"
    );
}

/// A free TCP port on loopback, for a daemon that must keep its address over restarts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mount_at(m: &mut Mounted, listen: &str) {
    let out = m.repo.ok(&[
        "mount",
        m.mnt.path().to_str().unwrap(),
        "--listen",
        listen,
        "--no-mdns",
    ]);
    m.pid = daemon_pid(&out);
}

#[test]
fn an_item_sent_while_the_recipient_is_away_arrives_when_it_is_back_across_restarts() {
    let (la, lb) = (
        format!("/ip4/127.0.0.1/tcp/{}", free_port()),
        format!("/ip4/127.0.0.1/tcp/{}", free_port()),
    );
    let mut a = Mounted::listening(&la);
    let mut b = Mounted::listening(&lb);
    follow(&a, &b, "bob");
    follow(&b, &a, "alice");
    b.unmount();
    wait_for("bob to stop", Duration::from_secs(20), || !b.alive());

    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("letter.txt");
    write(&file, &bytes(3 << 20, 3));
    send(&a, &file, "bob");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(out_state(&a, "letter.txt").as_deref(), Some("queued"));

    // Alice restarts meanwhile: the item is still queued after.
    a.unmount();
    wait_for("alice to stop", Duration::from_secs(20), || !a.alive());
    mount_at(&mut a, &la);
    assert_eq!(out_state(&a, "letter.txt").as_deref(), Some("queued"));

    // Bob comes back; nobody does anything.
    mount_at(&mut b, &lb);
    wait_state(&a, "letter.txt", "delivered", Duration::from_secs(60));
    assert_eq!(
        std::fs::read(b.mnt.path().join("inbox/alice/letter.txt")).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

#[test]
fn a_stranger_is_refused_with_the_reason_and_the_inbox_stays_untouched() {
    let b = Mounted::new();
    let d = Mounted::new();
    follow(&d, &b, "bob");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("spam.txt");
    write(&file, b"buy now\n");
    send(&d, &file, "bob");
    wait_for("the refusal", Duration::from_secs(30), || {
        out_state(&d, "spam.txt").as_deref() == Some("refused")
    });
    let item = items(&d, "outbox").remove(0);
    let status = item["status"].as_str().unwrap();
    assert!(
        status.starts_with("refused: ") && status.contains("does not follow you"),
        "{status}"
    );
    assert!(items(&b, "inbox").is_empty());
    let shown: Vec<_> = std::fs::read_dir(b.mnt.path().join("inbox"))
        .unwrap()
        .collect();
    assert!(shown.is_empty(), "{shown:?}");

    // `send` without --no-wait says so too, and fails.
    let out = d
        .repo
        .fails(&["send", file.to_str().unwrap(), "--to", "bob"]);
    assert!(out.contains("refused"), "{out}");
}

#[test]
fn blocks_that_do_not_verify_never_show_in_the_inbox_and_are_counted() {
    let mut liar_repo = TestRepo::new();
    liar_repo
        .env
        .push(("PEERFS_TEST_CORRUPT_BLOCKS".into(), "1".into()));
    let a = Mounted::with_repo(liar_repo);
    // Giving up on a block takes the fetch timeout: a short one keeps the test short.
    let b_repo = TestRepo::new();
    b_repo.set_config("fetch_timeout", "\"5s\"");
    let b = Mounted::with_repo(b_repo);
    follow(&a, &b, "bob");
    follow(&b, &a, "alice");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("forged.bin");
    write(&file, &bytes(1 << 20, 9));
    send(&a, &file, "bob");
    wait_for("bad blocks counted", Duration::from_secs(40), || {
        let out = b.repo.ok(&["peers", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .or_else(|| v["peers"].as_array())
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "alice" && p["bad_blocks"].as_u64() > Some(0))
    });
    // The sender hears why; nothing shows.
    wait_state(&a, "forged.bin", "refused", Duration::from_secs(40));
    let status = items(&a, "outbox")[0]["status"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(status.contains("do not verify"), "{status}");
    assert!(!b.mnt.path().join("inbox/alice/forged.bin").exists());
    let got = items(&b, "inbox");
    assert_eq!(got[0]["state"], "failed", "{got:?}");
    assert_eq!(
        std::fs::read_dir(b.mnt.path().join("inbox"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn what_is_copied_into_the_outbox_is_sent_and_its_delivery_shows_in_an_xattr() {
    let (a, b) = pair();
    let outbox = a.mnt.path().join("outbox/bob");
    assert!(outbox.is_dir(), "outbox/bob for the followed peer bob");
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("film.bin");
    let content = bytes(20 << 20, 11);
    write(&big, &content);
    folder(&src.path().join("album"), 300);

    common::sh(
        src.path(),
        &format!("cp film.bin {0}/ && cp -r album {0}/", outbox.display()),
    );
    wait_state(&a, "film.bin", "delivered", Duration::from_secs(60));
    wait_state(&a, "album", "delivered", Duration::from_secs(60));
    let delivery = |name: &str| common::xattr(&outbox.join(name), "user.peerfs.delivery");
    assert!(
        delivery("film.bin").is_some_and(|d| d.starts_with("delivered ")),
        "{:?}",
        delivery("film.bin")
    );

    let inbox = b.mnt.path().join("inbox/alice");
    assert!(std::fs::read(inbox.join("film.bin")).unwrap() == content);
    assert_same_tree(&src.path().join("album"), &inbox.join("album"));
    wait_for("film.bin read", Duration::from_secs(20), || {
        delivery("film.bin").is_some_and(|d| d.starts_with("read "))
    });
    // Sent once: the copy was one item each, not one per write.
    assert_eq!(items(&a, "outbox").len(), 2, "{:?}", items(&a, "outbox"));
}

#[test]
fn with_read_receipts_off_the_sender_sees_delivered_only() {
    let a = Mounted::new();
    let b_repo = TestRepo::new();
    b_repo.set_config("read_receipts", "false");
    let b = Mounted::with_repo(b_repo);
    follow(&a, &b, "bob");
    follow(&b, &a, "alice");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("quiet.txt");
    write(&file, b"read me quietly\n");
    send(&a, &file, "bob");
    wait_state(&a, "quiet.txt", "delivered", Duration::from_secs(30));
    let inbox = b.mnt.path().join("inbox/alice/quiet.txt");
    assert_eq!(std::fs::read(&inbox).unwrap(), b"read me quietly\n");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(out_state(&a, "quiet.txt").as_deref(), Some("delivered"));

    // The recipient may move an item out, or delete one; it leaves the inbox list.
    common::sh(
        b.mnt.path(),
        "mv inbox/alice/quiet.txt drive/ && test -f drive/quiet.txt",
    );
    assert_eq!(
        std::fs::read(b.drive().join("quiet.txt")).unwrap(),
        b"read me quietly\n"
    );
    assert!(!inbox.exists());
    assert!(items(&b, "inbox").is_empty(), "{:?}", items(&b, "inbox"));
    write(&file, b"second\n");
    send(&a, &file, "bob");
    wait_for("the second", Duration::from_secs(30), || inbox.exists());
    std::fs::remove_file(&inbox).unwrap();
    assert!(!inbox.exists());
    assert!(items(&b, "inbox").is_empty());
}

/// A delivery cut by a crash goes on after the restart, and does not fetch again what
/// it had stored. Fetched blocks skip the write-ahead log; a transfer makes them durable
/// every 8 MiB, so a crash may lose that much and what the fetcher held ahead in memory,
/// never what was stored before it (before that flush: 56-97 blocks stored before the
/// crash, 128-143 fetched after, for 161).
#[test]
fn a_fetch_cut_by_a_crash_resumes_after_the_restart_without_fetching_what_it_stored() {
    let (la, lb) = (
        format!("/ip4/127.0.0.1/tcp/{}", free_port()),
        format!("/ip4/127.0.0.1/tcp/{}", free_port()),
    );
    // Paced, so that the kill surely comes before the end: unpaced, a fast machine
    // fetched the rest between the count and the kill.
    let a_repo = TestRepo::new();
    a_repo.set_config("upload_rate", r#""32 MiB""#);
    let a = Mounted::listening_with(a_repo, &la);
    let mut b = Mounted::listening(&lb);
    follow(&a, &b, "bob");
    follow(&b, &a, "alice");
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("long.bin");
    let content = bytes(160 << 20, 5);
    write(&file, &content);
    send(&a, &file, "bob");
    // Killed while a good part of it is stored (so that losing it would show) and not
    // all of it.
    wait_for("bob fetching", Duration::from_secs(60), || {
        stored_for_delivery(&b) >= 48
            && items(&b, "inbox")
                .first()
                .is_some_and(|i| i["state"] == "fetching")
    });
    let stored = stored_for_delivery(&b);
    common::kill(&b);
    assert_ne!(out_state(&a, "long.bin").as_deref(), Some("delivered"));
    mount_at(&mut b, &lb);
    wait_state(&a, "long.bin", "delivered", Duration::from_secs(60));
    assert!(std::fs::read(b.mnt.path().join("inbox/alice/long.bin")).unwrap() == content);
    // The rest, and at most what was not yet durable: 8 MiB, and what the walk stored
    // between the count and the kill.
    let after = fetched_from(&b, "alice");
    let blocks = 160 + 1;
    assert!(
        after <= blocks - stored + 24,
        "{stored} blocks stored before the crash and {after} fetched after, of {blocks}"
    );
}

/// Blocks the walk of the delivery being fetched has stored.
fn stored_for_delivery(m: &Mounted) -> u64 {
    let out = m.repo.ok(&["transfers", "--json"]);
    let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    all.as_array()
        .and_then(|l| l.iter().find(|t| t["kind"] == "delivery"))
        .and_then(|t| t["blocks"].as_u64())
        .unwrap_or(0)
}

/// Good blocks `name` sent `m` since `m`'s daemon started.
fn fetched_from(m: &Mounted, name: &str) -> u64 {
    let out = m.repo.ok(&["peers", "--json"]);
    let peers: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .and_then(|p| p["blocks_fetched"].as_u64())
        .unwrap_or(0)
}
