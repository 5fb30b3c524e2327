//! The CLI beside running daemons, as a user meets it: `--json` listings, the log, pins
//! that outlive what they named, `id` and `unmount` finding the right daemon.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::{follow, wait_for, write, Mounted, TestRepo};
use serde_json::Value;

fn json(repo: &TestRepo, args: &[&str]) -> Value {
    let out = repo.ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Every field the README promises, present (null when not known).
fn assert_fields(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(f).is_some(), "no {f:?} in {v}");
    }
}

const PEER_FIELDS: [&str; 12] = [
    "name",
    "peer_id",
    "connected",
    "connection",
    "transport",
    "addresses",
    "rtt_ms",
    "head_seq",
    "head_root",
    "last_seen",
    "bad_blocks",
    "blocks_fetched",
];

/// A monitoring script reads `status`, `id`, `peers` and `pins` as JSON, with or
/// without a daemon.
#[test]
fn listings_answer_in_json_with_their_documented_fields() {
    let repo = TestRepo::new();
    let id = json(&repo, &["id", "--json"]);
    assert_fields(
        &id,
        &["peer_id", "addresses", "reachability", "daemon_running"],
    );
    assert_eq!(id["daemon_running"], false);
    assert_eq!(json(&repo, &["peers", "--json"]), Value::Array(vec![]));
    assert_eq!(json(&repo, &["pins", "--json"]), Value::Array(vec![]));

    let a = Mounted::new();
    let b = Mounted::with_repo(repo);
    follow(&b, &a, "alice");
    write(&a.drive().join("f"), b"hello\n");
    let status = json(&b.repo, &["status", "--json"]);
    assert_fields(
        &status,
        &[
            "daemon_pid",
            "peer_id",
            "mountpoint",
            "root",
            "seq",
            "uncommitted_changes",
            "last_commit",
            "open_files",
            "store_bytes",
            "cache_bytes",
            "cache_cap_bytes",
            "replicas",
            "min_replicas",
            "replicas_warning",
        ],
    );
    assert_eq!(status["daemon_pid"], b.pid);
    assert_eq!(json(&b.repo, &["mirrors", "--json"]), Value::Array(vec![]));
    let id = json(&b.repo, &["id", "--json"]);
    assert_eq!(id["daemon_running"], true);
    assert_eq!(id["daemon_pid"], b.pid);
    assert!(id["addresses"][0]
        .as_str()
        .unwrap()
        .ends_with(id["peer_id"].as_str().unwrap()));
    wait_for("alice's head", Duration::from_secs(15), || {
        json(&b.repo, &["peers", "--json"])[0]["head_seq"].is_u64()
    });
    let peers = json(&b.repo, &["peers", "--json"]);
    assert_fields(&peers[0], &PEER_FIELDS);
    assert_eq!(peers[0]["name"], "alice");
    assert_eq!(peers[0]["connected"], true);
}

/// `peerfs --help` and each command's help describe every argument, and call the
/// repo REPO and the mount point MOUNTPOINT everywhere.
#[test]
fn help_describes_every_argument_with_one_word_for_each_thing() {
    let repo = TestRepo::uninitialised();
    let top = repo.ok(&["--help"]);
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 10, "{commands:?}");
    let mut subs = vec![
        vec!["peer".to_string(), "add".into()],
        vec!["peer".into(), "rm".into()],
    ];
    subs.extend(commands.into_iter().map(|c| vec![c]));
    for sub in subs {
        let mut args: Vec<&str> = sub.iter().map(String::as_str).collect();
        args.push("--help");
        let help = repo.ok(&args);
        assert!(
            !help.contains("<DIR>") && !help.contains(" DIR"),
            "{args:?}: {help}"
        );
        if let Some(list) = help.split("Arguments:\n").nth(1) {
            for line in list.split("\n\n").next().unwrap().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                assert!(words.len() > 1, "{args:?}: {line:?} is not described");
            }
        }
    }
    assert!(top.contains("--repo <REPO>"), "{top}");
}

/// Typos in what a user types are named, not just refused.
#[test]
fn errors_name_the_bad_part_of_an_address_and_a_path_given_for_a_cid() {
    let repo = TestRepo::new();
    let bob = "12D3KooWGzh2ZPJX1E5tKmTGQw4MaTNqLhhpQdJXoTUkBEBSxqnK";
    for (addr, part) in [
        (
            format!("/ip4/10.0.0.300/tcp/4011/p2p/{bob}"),
            "`/ip4/10.0.0.300`",
        ),
        (format!("/ip4/10.0.0.3/tpc/4011/p2p/{bob}"), "`/tpc`"),
        (format!("/ip4/10.0.0.3/tcp/40x1/p2p/{bob}"), "`/tcp/40x1`"),
        (
            "/ip4/10.0.0.3/tcp/4011/p2p/12D3KooW0typo".to_string(),
            "`/p2p/12D3KooW0typo`",
        ),
    ] {
        let err = repo.fails(&["peer", "add", &addr]);
        assert!(err.contains(part), "{addr}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("notes.txt"), b"x");
    for cmd in ["cat", "ls"] {
        let err = repo.fails(&[cmd, dir.path().join("notes.txt").to_str().unwrap()]);
        assert!(
            err.contains("is a path, but a CID is expected"),
            "{cmd}: {err}"
        );
    }
}

/// The same tree pinned from two places keeps both labels; pins whose path now leads
/// elsewhere, is gone, or belongs to a peer no longer followed say so.
#[test]
fn pins_keep_every_label_and_flag_the_stale_ones() {
    let repo = TestRepo::new();
    assert!(repo.ok(&["pins"]).contains("no pins"));
    let dir = tempfile::tempdir().unwrap();
    for copy in ["one", "two"] {
        write(&dir.path().join(copy).join("f"), b"same\n");
    }
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    let cid = repo.ok(&["add", "-r", "-q", one.to_str().unwrap()]);
    assert_eq!(repo.ok(&["add", "-r", "-q", two.to_str().unwrap()]), cid);
    let pins = repo.ok(&["pins"]);
    assert!(
        pins.contains(&format!("add {}", one.display()))
            && pins.contains(&format!("add {}", two.display())),
        "both labels kept: {pins}"
    );
    // Unpinning one label keeps the pin under the other.
    let out = repo.ok(&["unpin", &format!("add {}", one.display())]);
    assert!(out.contains("still pinned as"), "{out}");
    assert!(repo.ok(&["pins"]).contains(cid.trim()));

    let a = Mounted::readable_by_everyone();
    let b = Mounted::with_repo(repo);
    write(&a.drive().join("docs/readme"), b"from alice\n");
    write(&b.drive().join("mine/a"), b"a\n");
    write(&b.drive().join("gone/a"), b"a\n");
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice/docs");
    wait_for("the docs of alice", Duration::from_secs(15), || {
        theirs.join("readme").exists()
    });
    for p in [
        theirs.clone(),
        b.drive().join("mine"),
        b.drive().join("gone"),
    ] {
        b.repo.ok(&["pin", p.to_str().unwrap()]);
    }
    let pins = b.repo.ok(&["pins"]);
    assert!(!pins.contains("stale"), "{pins}");

    write(&b.drive().join("mine/b"), b"b\n");
    fs::remove_dir_all(b.drive().join("gone")).unwrap();
    b.repo.ok(&["peer", "rm", "alice"]);
    let pins = b.repo.ok(&["pins"]);
    let line = |p: &std::path::Path| {
        let p = format!("{}  ", p.display());
        pins.lines()
            .find(|l| l.contains(&p) || l.ends_with(p.trim_end()))
            .unwrap_or_else(|| panic!("no pin of {p} in {pins}"))
            .to_string()
    };
    let mine = line(&b.drive().join("mine"));
    assert!(mine.contains("stale: the path now leads to"), "{pins}");
    let gone = line(&b.drive().join("gone"));
    assert!(gone.contains("stale: the path no longer exists"), "{pins}");
    let alice = line(&theirs);
    assert!(
        alice.contains("stale: peer alice is no longer followed"),
        "{pins}"
    );
    let listed = json(&b.repo, &["pins", "--json"]);
    let stale = listed
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["labels"].as_array().unwrap())
        .filter(|l| l["stale"].is_string())
        .count();
    assert_eq!(stale, 3, "{listed}");
}

/// What a person at a terminal sees of `peerfs id` (through `script`, which gives it a
/// terminal).
fn id_at_a_terminal(repo: &TestRepo) -> String {
    let line = format!("{} --repo {} id", common::bin(), repo.path().display());
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .expect("script");
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

/// `peerfs id` hands out addresses another machine can dial, says who can reach each,
/// and whether the daemon runs.
#[test]
fn id_prints_dialable_labelled_addresses_and_whether_the_daemon_runs() {
    let repo = TestRepo::new();
    let wildcard = r#"["/ip4/0.0.0.0/tcp/4011", "/ip4/0.0.0.0/udp/4011/quic-v1"]"#;
    repo.set_config("listen", wildcard);
    let out = repo.run(&["id"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let me = text.lines().next().unwrap().to_string();
    let loopback = format!("/ip4/127.0.0.1/tcp/4011/p2p/{me}");
    assert!(!text.contains("0.0.0.0"), "{text}");
    assert!(text.lines().any(|l| l == loopback), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no daemon is running"), "{err}");

    let shown = id_at_a_terminal(&repo);
    assert!(shown.contains("not running"), "{shown}");
    assert!(!shown.contains("0.0.0.0"), "{shown}");
    let labelled = shown
        .lines()
        .find(|l| l.contains(&loopback))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(labelled.contains("(this machine only)"), "{shown}");

    let m = Mounted::with_repo(repo);
    let shown = id_at_a_terminal(&m.repo);
    assert!(
        shown.contains(&format!("running (pid {})", m.pid)),
        "{shown}"
    );
}

/// `peerfs unmount DIR` finds the daemon serving DIR whatever repo it is; with no DIR,
/// it unmounts this repo's mount.
#[test]
fn unmount_finds_the_daemon_of_any_repo_and_needs_no_dir_for_its_own() {
    let a = Mounted::new();
    let b = Mounted::new();
    let out = b.repo.ok(&["unmount", a.mnt.path().to_str().unwrap()]);
    let a_repo = format!("repo {}", a.repo.path().display());
    assert!(out.contains(&a_repo), "{out}");
    wait_for("the daemon of a to exit", Duration::from_secs(10), || {
        !a.alive()
    });
    assert!(b.alive(), "the daemon of b must stay");
    b.repo.ok(&["unmount"]);
    wait_for("the daemon of b to exit", Duration::from_secs(10), || {
        !b.alive()
    });
    let err = b.repo.fails(&["unmount"]);
    assert!(err.contains("nothing to unmount"), "{err}");
    let err = b.repo.fails(&["unmount", a.mnt.path().to_str().unwrap()]);
    assert!(err.contains("nothing is mounted at"), "{err}");
}

/// The daemon's log, read with `less` or `cat`: plain text, values as a person writes
/// them, no warning when nothing is wrong.
#[test]
fn the_daemon_log_is_plain_text_without_internal_formatting() {
    let m = Mounted::new();
    write(&m.drive().join("f"), b"x\n");
    m.unmount();
    let log = fs::read_to_string(m.repo.path().join("daemon.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "colour codes in the log: {log:?}");
    for internal in ["None", "Some("] {
        assert!(!log.contains(internal), "{internal} in the log: {log}");
    }
    assert!(log.contains("drive root none (empty drive)"), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warnings.is_empty(),
        "a clean start and stop warns: {warnings:?}"
    );
}

/// Repeated `peer add` keeps a short list of addresses, newest first, each once; a new
/// name is announced, and no name keeps the one there is.
#[test]
fn peer_add_keeps_a_bounded_fresh_address_list_and_says_when_it_renames() {
    let repo = TestRepo::new();
    let bob = "12D3KooWGzh2ZPJX1E5tKmTGQw4MaTNqLhhpQdJXoTUkBEBSxqnK";
    let at = |port: u32| format!("/ip4/10.0.0.2/tcp/{port}/p2p/{bob}");
    let first = repo.ok(&["peer", "add", &at(4000), "--name", "bob"]);
    assert!(first.contains("following bob"), "{first}");
    for port in 4001..4012 {
        repo.ok(&["peer", "add", &at(port), "--name", "bob"]);
    }
    repo.ok(&["peer", "add", &at(4005), "--name", "bob"]);
    let peers = json(&repo, &["peers", "--json"]);
    let addrs: Vec<&str> = peers[0]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(addrs.len(), 8, "{addrs:?}");
    assert_eq!(
        addrs[0], "/ip4/10.0.0.2/tcp/4005",
        "newest first: {addrs:?}"
    );
    assert_eq!(addrs[1], "/ip4/10.0.0.2/tcp/4011", "{addrs:?}");
    assert_eq!(addrs.iter().filter(|a| a.ends_with("/4005")).count(), 1);

    let out = repo.ok(&["peer", "add", &at(4012), "--name", "robert"]);
    assert!(out.contains("renamed bob to robert"), "{out}");
    repo.ok(&["peer", "add", bob]);
    assert_eq!(json(&repo, &["peers", "--json"])[0]["name"], "robert");
}
