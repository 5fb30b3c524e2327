//! `peerfs find` over my drive and two followed drives, each a real daemon on
//! 127.0.0.1: the follower has listed nothing of theirs, so the search fetches what it
//! walks.

mod common;

use std::time::Duration;

use common::*;

fn wait_for_heads(b: &Mounted) {
    wait_for("b has every head", Duration::from_secs(20), || {
        b.repo
            .ok(&["peers", "--json"])
            .matches("\"head_seq\": null")
            .count()
            == 0
    });
}

fn find(m: &Mounted, args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.insert(0, "find");
    let mut out: Vec<String> = m.repo.ok(&args).lines().map(str::to_string).collect();
    out.sort();
    out
}

#[test]
fn find_searches_every_followed_drive_by_name_size_type_and_age() {
    let a = Mounted::readable_by_everyone();
    write(&a.drive().join("papers/big.pdf"), &bytes(3 << 20, 1));
    write(&a.drive().join("papers/small.pdf"), &bytes(1000, 2));
    write(&a.drive().join("papers/old.pdf"), &bytes(2 << 20, 3));
    set_mtime(&a.drive().join("papers/old.pdf"), 1_000_000_000, 0);
    write(&a.drive().join("notes.txt"), &bytes(5 << 20, 4));
    let c = Mounted::readable_by_everyone();
    for i in 0..300 {
        write(&c.drive().join(format!("many/f{i:03}.txt")), b"x");
    }
    write(&c.drive().join("many/huge.pdf"), &bytes(2 << 20, 5));
    let b = Mounted::new();
    write(&b.drive().join("mine.pdf"), &bytes(4 << 20, 6));
    follow(&b, &a, "alice");
    follow(&b, &c, "carol");
    let peers = b.mnt.path().join("peers");
    wait_for_heads(&b);
    // find searches my drive as last committed: an fsync commits.
    fsync_tree(&b.drive());

    let at = |p: &str| {
        if p.starts_with("mine") {
            b.drive().join(p)
        } else {
            peers.join(p)
        }
        .display()
        .to_string()
    };
    let big_pdfs = find(&b, &["*.pdf", "--size", "+1M"]);
    assert_eq!(
        big_pdfs,
        [
            at("mine.pdf"),
            at("alice/papers/big.pdf"),
            at("alice/papers/old.pdf"),
            at("carol/many/huge.pdf"),
        ]
    );
    // Asked of their owners, the same set.
    assert_eq!(find(&b, &["*.pdf", "--size", "+1M", "--remote"]), big_pdfs);
    assert_eq!(
        find(
            &b,
            &["*.pdf", "--size", "+1M", "--newer", "1d", "--peer", "alice"]
        ),
        [at("alice/papers/big.pdf")]
    );
    assert_eq!(
        find(&b, &["--type", "d"]),
        [at("alice/papers"), at("carol/many")]
    );
    assert_eq!(
        find(&b, &["f1*", "--peer", "carol", "--size", "-2"]).len(),
        100
    );

    // The JSON shape of the README, a list.
    let json: serde_json::Value =
        serde_json::from_str(&b.repo.ok(&["find", "huge.pdf", "--json"])).unwrap();
    let hits = json.as_array().expect("a list");
    assert_eq!(hits.len(), 1, "{json}");
    let hit = &hits[0];
    assert_eq!(hit["path"], at("carol/many/huge.pdf"));
    assert_eq!(hit["peer"], "carol");
    assert_eq!(hit["kind"], "file");
    assert_eq!(hit["size"], 2 << 20);
    assert_eq!(hit["cid"], cid_of(&peers.join("carol/many/huge.pdf")));
    assert!(hit["mtime"].as_i64().is_some(), "{hit}");

    let err = b.repo.fails(&["find", "--peer", "dave"]);
    assert!(err.contains("dave: not a followed peer"), "{err}");
    let err = b.repo.fails(&["find", "--size", "lots"]);
    assert!(err.contains("not a size"), "{err}");
}

fn blocks_fetched_from(m: &Mounted, name: &str) -> u64 {
    let peers: serde_json::Value = serde_json::from_str(&m.repo.ok(&["peers", "--json"])).unwrap();
    let peer = peers
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {peers}"));
    peer["blocks_fetched"].as_u64().unwrap_or(0)
}

#[test]
fn find_remote_asks_each_owner_and_walks_the_drives_of_owners_that_refuse() {
    let a = Mounted::readable_by_everyone();
    for i in 0..200 {
        write(&a.drive().join(format!("docs/d{i:03}.txt")), b"x");
    }
    write(&a.drive().join("docs/deep/report.pdf"), &bytes(2 << 20, 7));
    // C's drive is open to the peers it follows, and it does not follow B.
    let c = Mounted::new();
    write(&c.drive().join("c.pdf"), &bytes(100, 8));
    let b = Mounted::new();
    follow(&b, &a, "alice");
    follow(&b, &c, "carol");
    wait_for_heads(&b);
    let peers = b.mnt.path().join("peers");
    let before = blocks_fetched_from(&b, "alice");

    let out = b.repo.run(&["find", "--remote", "*.pdf", "--size", "+1M"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [peers
            .join("alice/docs/deep/report.pdf")
            .display()
            .to_string()]
    );
    // Alice searched her own drive: not one of her blocks came here for it.
    assert_eq!(blocks_fetched_from(&b, "alice"), before);
    // Carol refused, so her drive was walked here, and her blocks were refused too.
    assert!(
        stderr.contains("carol: not searched by its owner")
            && stderr.contains("`readers` do not include you"),
        "{stderr}"
    );
    assert!(stderr.contains("could not be fetched"), "{stderr}");
    assert!(!stderr.contains("alice"), "{stderr}");

    // The same search by walking finds the same, and fetches Alice's directories.
    assert_eq!(
        find(&b, &["*.pdf", "--size", "+1M", "--peer", "alice"]),
        [peers
            .join("alice/docs/deep/report.pdf")
            .display()
            .to_string()]
    );
    assert!(blocks_fetched_from(&b, "alice") > before);

    // The JSON of a remote search has the shape of a walked one.
    let json: serde_json::Value = serde_json::from_str(&b.repo.ok(&[
        "find", "--remote", "--peer", "alice", "--type", "d", "--json",
    ]))
    .unwrap();
    let dirs: Vec<_> = json
        .as_array()
        .expect("a list")
        .iter()
        .map(|h| (h["path"].as_str().unwrap().to_string(), h["kind"].clone()))
        .collect();
    assert_eq!(
        dirs,
        [
            (
                peers.join("alice/docs").display().to_string(),
                "directory".into()
            ),
            (
                peers.join("alice/docs/deep").display().to_string(),
                "directory".into()
            ),
        ]
    );
}
