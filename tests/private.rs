//! Private folders between separate daemons on 127.0.0.1: the owner shares `secret/`
//! with one peer; that reader reads it byte-identical, a follower that is no reader
//! gets EACCES and holds nothing of it in clear (its repo files searched for a marker
//! written in every secret file, and for the files' names), even after pinning the
//! whole drive; removing the reader keeps it from what is written afterwards; a sealed
//! block served with a byte flipped fails its file only (EIO), counted as a bad block.

mod common;

use std::time::Duration;

use common::private::{fails_with, files_with, secret_bytes, MARKER, PUBLIC_MARKER};
use common::{bytes, follow, sh, wait_for, write, Mounted, TestRepo};

#[test]
fn a_private_folder_is_read_by_its_readers_only_and_held_by_others_as_ciphertext() {
    let a = Mounted::new();
    let b = Mounted::new();
    let c = Mounted::new();
    follow(&b, &a, "alice");
    follow(&c, &a, "alice");
    // Alice's drive is readable by those she follows: both.
    follow(&a, &b, "bob");
    follow(&a, &c, "carol");
    // A second reader, never running: removing bob leaves the folder private to it.
    let dave = TestRepo::new();
    let dave_id = dave.ok(&["id"]).lines().next().unwrap().trim().to_string();

    let secret = a.drive().join("secret");
    write(&secret.join("one.txt"), &secret_bytes(4000, 1));
    write(&secret.join("sub/two.bin"), &secret_bytes(3 << 20, 2));
    write(&a.drive().join("public/p.txt"), PUBLIC_MARKER.as_bytes());
    let with = format!("bob,{dave_id}");
    a.repo
        .ok(&["share", secret.to_str().unwrap(), "--with", &with]);
    let shown = a.repo.ok(&["share", secret.to_str().unwrap(), "--json"]);
    assert!(
        shown.contains("\"private\": true") && shown.contains("\"bob\""),
        "{shown}"
    );

    // Bob reads it, byte-identical.
    let at_b = b.mnt.path().join("peers/alice/secret");
    wait_for("bob reading secret/", Duration::from_secs(30), || {
        std::fs::read(at_b.join("one.txt")).is_ok_and(|d| d == secret_bytes(4000, 1))
    });
    assert_eq!(
        std::fs::read(at_b.join("sub/two.bin")).unwrap(),
        secret_bytes(3 << 20, 2)
    );
    let listed = sh(b.mnt.path(), "ls peers/alice/secret");
    assert!(
        listed.contains("one.txt") && listed.contains("sub"),
        "{listed}"
    );

    // Carol follows alice too, and reads her public files, but not secret/.
    let at_c = c.mnt.path().join("peers/alice");
    wait_for("carol reading public/", Duration::from_secs(30), || {
        std::fs::read(at_c.join("public/p.txt")).is_ok_and(|d| d == PUBLIC_MARKER.as_bytes())
    });
    assert!(at_c.join("secret").exists());
    fails_with(c.mnt.path(), "ls peers/alice/secret", "Permission denied");
    fails_with(
        c.mnt.path(),
        "cat peers/alice/secret/one.txt",
        "Permission denied",
    );
    // She may hold every block of it (a pin walks sealed blocks like any others).
    c.repo.ok(&["pin", at_c.to_str().unwrap()]);

    // Nothing of the secret in clear on the holders' disks: not the contents, not the
    // names. Alice's own repo has it (her plaintext), and carol's has the public file:
    // the search finds what is there.
    c.unmount();
    b.unmount();
    assert!(!files_with(&a.repo.path(), MARKER).is_empty());
    assert!(!files_with(&c.repo.path(), PUBLIC_MARKER).is_empty());
    for holder in [&c, &b] {
        for needle in [MARKER, "one.txt", "two.bin"] {
            let found = files_with(&holder.repo.path(), needle);
            assert!(found.is_empty(), "{needle} in {found}");
        }
    }
}

#[test]
fn a_removed_reader_keeps_what_it_could_read_and_nothing_written_after() {
    let a = Mounted::new();
    let b = Mounted::new();
    follow(&b, &a, "alice");
    follow(&a, &b, "bob");
    let dave = TestRepo::new();
    let dave_id = dave.ok(&["id"]).lines().next().unwrap().trim().to_string();
    let secret = a.drive().join("secret");
    write(&secret.join("old.txt"), &secret_bytes(5000, 3));
    let with = format!("bob,{dave_id}");
    a.repo
        .ok(&["share", secret.to_str().unwrap(), "--with", &with]);
    let at_b = b.mnt.path().join("peers/alice");
    wait_for("bob reading old.txt", Duration::from_secs(30), || {
        std::fs::read(at_b.join("secret/old.txt")).is_ok_and(|d| d == secret_bytes(5000, 3))
    });

    // Bob removed (through the attribute this time): a new generation, then a new
    // file, and a public one, to know when bob has the new head.
    let readers = common::xattr(&secret, "user.peerfs.readers").unwrap_or_default();
    let mut readers: Vec<&str> = readers.split(',').collect();
    readers.sort();
    let mut expected = vec!["bob", dave_id.as_str()];
    expected.sort();
    assert_eq!(readers, expected);
    sh(
        a.mnt.path(),
        &format!("setfattr -n user.peerfs.readers -v {dave_id} drive/secret"),
    );
    assert_eq!(
        common::xattr(&secret, "user.peerfs.readers").as_deref(),
        Some(dave_id.as_str())
    );
    let shown = a.repo.ok(&["share", secret.to_str().unwrap()]);
    assert!(shown.contains("2 key generations"), "{shown}");
    write(&secret.join("new.txt"), &secret_bytes(5000, 4));
    write(&a.drive().join("after.txt"), b"after");
    sh(a.mnt.path(), "sync");
    wait_for(
        "bob seeing alice's next head",
        Duration::from_secs(30),
        || at_b.join("after.txt").exists(),
    );
    assert!(!at_b.join("secret/new.txt").exists());
    let listed = sh(b.mnt.path(), "ls peers/alice/secret");
    assert!(
        !listed.contains("new.txt") && listed.contains("old.txt"),
        "{listed}"
    );
    assert_eq!(
        std::fs::read(at_b.join("secret/old.txt")).unwrap(),
        secret_bytes(5000, 3)
    );
}

/// Whether any `bad_blocks` in `json` is above zero.
fn counts_bad_blocks(json: &serde_json::Value) -> bool {
    match json {
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| {
            (k == "bad_blocks" && v.as_u64().is_some_and(|n| n > 0)) || counts_bad_blocks(v)
        }),
        serde_json::Value::Array(a) => a.iter().any(counts_bad_blocks),
        _ => false,
    }
}

#[test]
fn a_tampered_sealed_block_fails_its_file_only_and_is_counted() {
    let mut a = Mounted::new();
    let repo_b = TestRepo::new();
    repo_b.set_config("fetch_timeout", "\"4s\"");
    let b = Mounted::with_repo(repo_b);
    follow(&a, &b, "bob");
    let secret = a.drive().join("secret");
    // Two 1 MiB leaves and a root: the root stays good (a listing reads it), a leaf not.
    let one_bytes = secret_bytes(3 << 19, 5);
    write(&secret.join("one.bin"), &one_bytes);
    write(&secret.join("two.txt"), &secret_bytes(6000, 6));
    a.repo
        .ok(&["share", secret.to_str().unwrap(), "--with", "bob"]);
    let one = peerfs::block::cid_of(cid::Version::V1, peerfs::block::RAW, &one_bytes[..1 << 20])
        .to_string();

    // Alice again, now serving the sealed form of one.bin's first leaf, a byte flipped.
    a.unmount();
    wait_for("alice's daemon to exit", Duration::from_secs(20), || {
        !a.alive()
    });
    let out = a
        .repo
        .command(&[
            "mount",
            a.mnt.path().to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .env("PEERFS_TEST_CORRUPT_SEALED", &one)
        .output()
        .expect("mount");
    assert!(out.status.success(), "{out:?}");
    a.pid = common::daemon_pid(&String::from_utf8_lossy(&out.stdout));
    follow(&b, &a, "alice");

    let at_b = b.mnt.path().join("peers/alice/secret");
    wait_for("bob reading two.txt", Duration::from_secs(30), || {
        std::fs::read(at_b.join("two.txt")).is_ok_and(|d| d == secret_bytes(6000, 6))
    });
    fails_with(
        b.mnt.path(),
        "cat peers/alice/secret/one.bin > /dev/null",
        "Input/output error",
    );
    let peers: serde_json::Value =
        serde_json::from_str(&b.repo.ok(&["peers", "--json"])).expect("peers --json");
    assert!(counts_bad_blocks(&peers), "{peers}");
    // The other file still reads.
    assert_eq!(
        std::fs::read(at_b.join("two.txt")).unwrap(),
        secret_bytes(6000, 6)
    );
}

/// Benchmark (run by hand: `cargo test --test private -- --ignored --nocapture`): a cold
/// read by a reader of two private files against two public ones of the same size, owner
/// to reader on loopback; `PEERFS_BENCH_MIB` sets the size (default 1024).
#[test]
#[ignore]
fn bench_cold_read_private_against_public() {
    let mib: usize = std::env::var("PEERFS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let a = Mounted::new();
    let b = Mounted::new();
    follow(&b, &a, "alice");
    follow(&a, &b, "bob");
    // Two files of each kind, read private, public, public, private: whichever goes
    // first meets a colder daemon, and a load that comes and goes falls on both.
    for dir in ["secret", "public"] {
        for n in 1..=2 {
            let path = a.drive().join(dir).join(format!("big{n}.bin"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            sh(
                a.mnt.path(),
                &format!("head -c {}M /dev/urandom > {}", mib, path.display()),
            );
        }
    }
    sh(a.mnt.path(), "sync");
    let sealing = std::time::Instant::now();
    let secret = a.drive().join("secret");
    a.repo
        .ok(&["share", secret.to_str().unwrap(), "--with", "bob"]);
    let sealing = sealing.elapsed();
    let at_b = b.mnt.path().join("peers/alice");
    wait_for("bob seeing both", Duration::from_secs(60), || {
        at_b.join("secret/big2.bin").exists() && at_b.join("public/big2.bin").exists()
    });
    let time = |file: &str| {
        // Cold: nothing of it in the page cache, A's store files included.
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
        let t = std::time::Instant::now();
        sh(b.mnt.path(), &format!("cat peers/alice/{file} > /dev/null"));
        t.elapsed()
    };
    let private = time("secret/big1.bin");
    let public = time("public/big1.bin") + time("public/big2.bin");
    let private = private + time("secret/big2.bin");
    let rate = |d: Duration| 2.0 * mib as f64 / d.as_secs_f64();
    eprintln!(
        "2 x {mib} MiB each: sealing {sealing:?}; cold read public {public:?} ({:.0} MiB/s), \
         private {private:?} ({:.0} MiB/s): private/public throughput {:.2}x",
        rate(public),
        rate(private),
        public.as_secs_f64() / private.as_secs_f64()
    );
}

/// Benchmark (by hand, as the one above): `rsync -a` of a tree of small files
/// (`PEERFS_BENCH_FILES`, default 2,000) into a private folder against a public one,
/// each until committed (and, for the private one, sealed and published).
#[test]
#[ignore]
fn bench_rsync_into_private_against_public() {
    let files: usize = std::env::var("PEERFS_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let a = Mounted::new();
    let b = Mounted::new();
    follow(&a, &b, "bob");
    let src = tempfile::tempdir().unwrap();
    for i in 0..files {
        write(
            &src.path().join(format!("d{}/f{i}.txt", i % 20)),
            &bytes(2000 + i % 3000, i as u64),
        );
    }
    std::fs::create_dir_all(a.drive().join("secret")).unwrap();
    std::fs::create_dir_all(a.drive().join("public")).unwrap();
    a.repo.ok(&[
        "share",
        a.drive().join("secret").to_str().unwrap(),
        "--with",
        "bob",
    ]);
    let time = |dir: &str| {
        let t = std::time::Instant::now();
        sh(
            a.mnt.path(),
            &format!("rsync -a {}/ drive/{dir}/ && sync", src.path().display()),
        );
        t.elapsed()
    };
    let private = time("secret");
    let public = time("public");
    eprintln!(
        "rsync -a of {files} files: private {private:?}, public {public:?}: private takes {:.2}x",
        private.as_secs_f64() / public.as_secs_f64()
    );
}
