//! Several daemons, each its own process with its own repo and mount, talking libp2p
//! over 127.0.0.1: following, reading peers' drives with ordinary tools, live updates,
//! access control, fallback to other holders, lying and dead peers.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    addr, assert_same_tree, bytes, cid_of, follow, kill, peer_id, sh, wait_for, write, Mounted,
    TestRepo,
};

/// A small tree with the shapes tools care about.
fn make_tree(root: &Path) {
    write(&root.join("docs/readme.txt"), b"the needle is here\n");
    write(&root.join("docs/deep/er/notes.md"), b"# notes\n");
    write(
        &root.join("docs/\u{00e9}t\u{00e9} \u{1f600}.txt"),
        b"unicode\n",
    );
    write(&root.join("docs/big.bin"), &bytes(6 << 20, 7));
    std::fs::create_dir_all(root.join("docs/empty")).unwrap();
    std::os::unix::fs::symlink("readme.txt", root.join("docs/link")).unwrap();
}

#[test]
fn peers_read_each_other_with_ordinary_tools_and_see_updates() {
    let a = Mounted::new();
    let b = Mounted::new();
    follow(&b, &a, "alice");
    follow(&a, &b, "bob");
    make_tree(&a.drive());
    let mine = a.drive().join("docs");
    let theirs = b.mnt.path().join("peers/alice/docs");
    wait_for(
        "alice's tree on bob's mount",
        Duration::from_secs(15),
        || theirs.join("big.bin").exists() && cid_of(&theirs) == cid_of(&mine),
    );
    let local = tempfile::tempdir().unwrap();
    let l = local.path().display();
    let out = sh(
        b.mnt.path(),
        &format!(
            "cat peers/alice/docs/readme.txt
             cp -a peers/alice/docs {l}/cp
             find peers/alice | sort > {l}/find.txt
             grep -r needle peers/alice
             rsync -a peers/alice/docs/ {l}/rsync/
             # Reads past the page cache: across two 1 MiB leaves, then inside one.
             for at in 1044480 1052672; do
               dd if=peers/alice/docs/big.bin iflag=direct,skip_bytes skip=$at bs=12288 \
                 count=1 status=none | cmp - <(tail -c +$((at + 1)) {l}/cp/big.bin | head -c 12288)
             done"
        ),
    );
    assert!(out.contains("the needle is here"), "{out}");
    assert_same_tree(&mine, &local.path().join("cp"));
    assert_same_tree(&mine, &local.path().join("rsync"));
    let found = std::fs::read_to_string(local.path().join("find.txt")).unwrap();
    assert!(
        found.contains("peers/alice/docs/deep/er/notes.md"),
        "{found}"
    );

    // Peers' drives are read-only.
    for script in [
        "touch peers/alice/docs/new",
        "echo x >> peers/alice/docs/readme.txt",
        "rm peers/alice/docs/readme.txt",
        "mkdir peers/alice/d",
        "mv peers/alice/docs/link peers/alice/docs/link2",
    ] {
        let out = Command::new("bash")
            .args(["-c", script])
            .current_dir(b.mnt.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Read-only file system"),
            "{script}: {err}"
        );
    }

    // What `ls -l` shows of them says so: no write bits anywhere, and dates from the
    // peer's drive (the time its head was made where an entry records none), not 1970.
    let listed = sh(
        b.mnt.path(),
        "stat -c '%a %Y %n' . peers; find peers/alice -exec stat -c '%a %Y %n' {} +",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for line in listed.lines() {
        let mut f = line.splitn(3, ' ');
        let (mode, mtime) = (f.next().unwrap(), f.next().unwrap());
        let mode = u32::from_str_radix(mode, 8).unwrap();
        let mtime: u64 = mtime.parse().unwrap();
        assert_eq!(mode & 0o222, 0, "write bits: {line}");
        assert!(mtime + 3600 > now && mtime <= now + 60, "date: {line}");
    }

    // Every version A writes reaches B, through the kernel's caches.
    let file = theirs.join("readme.txt");
    let mut waits = Vec::new();
    for i in 0..5 {
        let text = format!("version {i}\n");
        std::fs::write(mine.join("readme.txt"), &text).unwrap();
        waits.push(wait_for("a new version", Duration::from_secs(10), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t == text)
        }));
    }
    println!("update waits: {waits:?}");
    // A removed file disappears, a new one appears.
    std::fs::remove_file(mine.join("link")).unwrap();
    write(&mine.join("fresh.txt"), b"fresh\n");
    wait_for("remove and create", Duration::from_secs(10), || {
        !theirs.join("link").exists()
            && std::fs::read_to_string(theirs.join("fresh.txt")).is_ok_and(|t| t == "fresh\n")
    });

    let peers = b.repo.ok(&["peers"]);
    assert!(
        peers.contains("alice") && peers.contains("connected:   yes"),
        "{peers}"
    );
    assert!(peers.contains("bad blocks:  0"), "{peers}");
}

#[test]
fn a_reader_not_listed_is_refused_and_gets_no_block() {
    let b = Mounted::new();
    let d = Mounted::new();
    let a_repo = TestRepo::new();
    let b_id = b.repo.ok(&["id"]).lines().next().unwrap().to_string();
    a_repo.set_config("readers", &format!("[\"{b_id}\"]"));
    let a = Mounted::with_repo(a_repo);
    write(&a.drive().join("secret.txt"), b"for bob only\n");
    follow(&b, &a, "alice");
    follow(&d, &a, "alice");
    let for_b = b.mnt.path().join("peers/alice/secret.txt");
    wait_for("bob reads", Duration::from_secs(15), || {
        std::fs::read_to_string(&for_b).is_ok_and(|t| t == "for bob only\n")
    });
    // D knows the head (heads are public) but gets no block of the drive.
    let top = d.mnt.path().join("peers/alice");
    wait_for("dave sees alice's head", Duration::from_secs(15), || {
        !cid_of(&top).is_empty()
    });
    let err = std::fs::read_dir(&top)
        .and_then(|mut r| r.next().transpose())
        .and_then(|_| std::fs::read(top.join("secret.txt")))
        .expect_err("dave must not read alice's drive");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let log = std::fs::read_to_string(a.repo.path().join("daemon.log")).unwrap();
    assert!(log.contains("refused blocks to"), "{log}");
}

#[test]
fn a_dead_peer_gives_eio_in_time_and_my_drive_keeps_answering() {
    let a = Mounted::readable_by_everyone();
    let b_repo = TestRepo::new();
    b_repo.set_config("fetch_timeout", "\"3s\"");
    let b = Mounted::with_repo(b_repo);
    follow(&b, &a, "alice");
    write(&a.drive().join("never-read.bin"), &bytes(2 << 20, 3));
    let read_before = bytes(9 << 20, 4);
    write(&a.drive().join("read-before.bin"), &read_before);
    write(&b.drive().join("mine.txt"), b"mine\n");
    let theirs = b.mnt.path().join("peers/alice/never-read.bin");
    let cached = b.mnt.path().join("peers/alice/read-before.bin");
    wait_for("the head", Duration::from_secs(15), || {
        theirs.exists() && cached.exists()
    });
    assert!(std::fs::read(&cached).unwrap() == read_before);
    kill(&a);
    // What B read is cached: it reads it again from its store alone (read ahead),
    // past the kernel's page cache.
    let again = Command::new("dd")
        .arg(format!("if={}", cached.display()))
        .args(["iflag=direct", "bs=1M", "status=none"])
        .output()
        .unwrap();
    assert!(again.status.success() && again.stdout == read_before);

    let reader = std::thread::spawn(move || {
        let start = Instant::now();
        let err = std::fs::read(&theirs).expect_err("nobody can deliver");
        (err.raw_os_error(), start.elapsed(), theirs)
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let listing = sh(&b.drive(), "ls; cat mine.txt");
    let own = start.elapsed();
    assert!(listing.contains("mine.txt") && listing.contains("mine\n"));
    let (errno, waited, theirs) = reader.join().unwrap();
    assert_eq!(errno, Some(libc::EIO));
    assert!(waited < Duration::from_secs(8), "EIO after {waited:?}");
    assert!(own < Duration::from_secs(2), "own drive took {own:?}");
    // A retry fails at once rather than waiting again.
    let start = Instant::now();
    assert!(std::fs::read(&theirs).is_err());
    assert!(start.elapsed() < Duration::from_secs(2));
    // The last known head stays visible.
    assert!(b.mnt.path().join("peers/alice/never-read.bin").exists());
    // The log names the file whose read failed.
    let log = std::fs::read_to_string(b.repo.path().join("daemon.log")).unwrap();
    assert!(
        log.lines().any(
            |l| l.contains(" WARN ") && l.contains("reading peers/alice/never-read.bin failed")
        ),
        "{log}"
    );
}

#[test]
fn blocks_come_from_another_holder_and_lies_are_rejected() {
    // Holders pass on only blocks of drives open to everyone.
    let a = Mounted::readable_by_everyone();
    make_tree(&a.drive());
    // C stays out of DHT routing tables, so B cannot meet it through a lookup before
    // the test introduces them.
    // C serves what it pinned (its own blocks now) to B, which it does not follow.
    let c_repo = TestRepo::readable_by_everyone();
    c_repo.set_config("dht_server", "false");
    let c = Mounted::with_repo(c_repo);
    let mut liar_repo = TestRepo::new();
    liar_repo
        .env
        .push(("PEERFS_TEST_CORRUPT_BLOCKS".into(), "1".into()));
    let liar = Mounted::with_repo(liar_repo);
    let b = Mounted::new();
    for (m, name) in [(&c, "c"), (&liar, "liar"), (&b, "b")] {
        follow(m, &a, "alice");
        let docs = m.mnt.path().join("peers/alice/docs/big.bin");
        wait_for(
            &format!("{name} sees alice"),
            Duration::from_secs(15),
            || docs.exists(),
        );
    }
    // C pins alice's docs, the liar has read them; B has read nothing.
    let docs = c.mnt.path().join("peers/alice/docs");
    let pinned = c.repo.ok(&["pin", docs.to_str().unwrap()]);
    assert!(
        pinned.starts_with(&format!("pinned {}", cid_of(&docs))),
        "{pinned}"
    );
    assert!(c.repo.ok(&["pins"]).contains(docs.to_str().unwrap()));
    sh(
        liar.mnt.path(),
        "find peers/alice/docs -type f -exec cat {} + > /dev/null",
    );
    follow(&b, &liar, "liar");
    wait_for("b connects to the liar", Duration::from_secs(15), || {
        b.repo.ok(&["peers"]).matches("connected:   yes").count() == 2
    });
    kill(&a);
    // The liar is B's only source now; C joins a moment later.
    let adder = std::thread::spawn({
        let c_addr = addr(&c);
        let b_repo = b.repo.path();
        move || {
            std::thread::sleep(Duration::from_secs(1));
            let out = Command::new(common::bin())
                .arg("--repo")
                .arg(b_repo)
                .args(["peer", "add", &c_addr, "--name", "c"])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
    });
    let local = tempfile::tempdir().unwrap();
    sh(
        b.mnt.path(),
        &format!("cp -a peers/alice/docs {}/docs", local.path().display()),
    );
    adder.join().unwrap();
    assert_same_tree(
        &c.mnt.path().join("peers/alice/docs"),
        &local.path().join("docs"),
    );
    let peers = b.repo.ok(&["peers"]);
    let liar_part = peers.split("\nliar").nth(1).unwrap_or_default();
    let bad: u64 = liar_part
        .lines()
        .find_map(|l| l.trim().strip_prefix("bad blocks:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(bad >= 1, "the liar's bad blocks were not counted:\n{peers}");
}

/// A daemon that joins the DHT through `bootstrap`, as a server or only a client. Its
/// drive is open to everyone, and what it pinned it serves to anyone: the peers here
/// meet through the DHT, not by following each other.
fn bootstrapped(bootstrap: &str, dht_server: bool) -> Mounted {
    let repo = TestRepo::readable_by_everyone();
    repo.set_config("bootstrap", &format!("[\"{bootstrap}\"]"));
    repo.set_config("dht_server", &dht_server.to_string());
    Mounted::with_repo(repo)
}

#[test]
fn a_holder_is_found_through_the_dht_when_the_owner_is_gone() {
    // D is only a DHT node; nobody follows it, and it holds nothing of alice's.
    let d = Mounted::new();
    let dht = addr(&d);
    let a = bootstrapped(&dht, true);
    make_tree(&a.drive());
    // B and C only use the DHT, so no routing table lists them and their lookups never
    // meet: B can learn of C only as a holder of alice's blocks.
    let c = bootstrapped(&dht, false);
    follow(&c, &a, "alice");
    let docs = c.mnt.path().join("peers/alice/docs");
    wait_for("c sees alice's docs", Duration::from_secs(15), || {
        docs.join("big.bin").exists()
    });
    c.repo.ok(&["pin", docs.to_str().unwrap()]);
    let alice = peer_id(&a);
    kill(&a);

    // B knows alice by peer ID only, and C not at all: alice's head comes from the
    // DHT's record, her blocks from C, whom the DHT names as a holder.
    let b = bootstrapped(&dht, false);
    b.repo.ok(&["peer", "add", &alice, "--name", "alice"]);
    wait_for(
        "b learns alice's head from the DHT",
        Duration::from_secs(30),
        || b.repo.ok(&["peers"]).contains("head:        seq"),
    );
    let local = tempfile::tempdir().unwrap();
    sh(
        b.mnt.path(),
        &format!("cp -a peers/alice/docs {}/docs", local.path().display()),
    );
    assert_same_tree(&docs, &local.path().join("docs"));
    let peers = b.repo.ok(&["peers"]);
    assert!(!peers.contains(&peer_id(&c)), "b was told of c: {peers}");
}

#[test]
fn peers_talk_over_quic_alone() {
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let a = Mounted::listening(quic);
    let b = Mounted::listening(quic);
    let a_addr = addr(&a);
    assert!(a_addr.contains("/quic-v1/"), "{a_addr}");
    b.repo.ok(&["peer", "add", &a_addr, "--name", "alice"]);
    // Alice follows bob back, so that he may read her drive (readers = following).
    a.repo.ok(&["peer", "add", &addr(&b), "--name", "bob"]);
    make_tree(&a.drive());
    let theirs = b.mnt.path().join("peers/alice/docs");
    wait_for("alice's tree over QUIC", Duration::from_secs(15), || {
        theirs.join("big.bin").exists() && cid_of(&theirs) == cid_of(&a.drive().join("docs"))
    });
    let local = tempfile::tempdir().unwrap();
    sh(
        b.mnt.path(),
        &format!("cp -a peers/alice/docs {}/docs", local.path().display()),
    );
    assert_same_tree(&a.drive().join("docs"), &local.path().join("docs"));
    assert!(b.repo.ok(&["peers"]).contains("connected:   yes"));
}

#[test]
fn followed_peers_get_in_past_the_connection_limit() {
    let repo = TestRepo::new();
    repo.set_config("max_connections", "1");
    let a = Mounted::with_repo(repo);
    write(&a.drive().join("hello.txt"), b"hello\n");
    let connected = |m: &Mounted| m.repo.ok(&["peers"]).contains("connected:   yes");

    // C takes alice's only free slot.
    let c = Mounted::new();
    follow(&c, &a, "alice");
    wait_for(
        "c connects to alice, and gets her head",
        Duration::from_secs(15),
        || c.repo.ok(&["peers"]).contains("head:        seq"),
    );

    // D is turned away, however often it redials: its connection is closed as soon as
    // it is up, before any request, so it never even learns alice's head...
    let d = Mounted::new();
    follow(&d, &a, "alice");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let peers = d.repo.ok(&["peers"]);
        assert!(
            peers.contains("head:        none"),
            "d got in past max_connections = 1:\n{peers}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // ...but a peer alice follows is protected: it gets in, and C stays.
    let b = Mounted::new();
    follow(&a, &b, "bob");
    wait_for("alice connects to bob", Duration::from_secs(15), || {
        connected(&a)
    });
    assert!(connected(&c), "c lost its connection");
}

#[test]
fn a_second_daemon_on_a_taken_port_listens_on_a_free_one_and_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let a = Mounted::listening(&listen);
    let b = Mounted::listening(&listen);
    assert!(addr(&a).contains(&format!("/tcp/{port}/")), "{}", addr(&a));
    let b_addr = addr(&b);
    assert!(!b_addr.contains(&format!("/tcp/{port}/")), "{b_addr}");
    let log = std::fs::read_to_string(b.repo.path().join("daemon.log")).unwrap();
    assert!(log.contains("listening on a free port instead") && log.contains("`listen`"));
    // And it works: A follows B on the port it found (and B A, so A may read).
    follow(&a, &b, "bob");
    follow(&b, &a, "alice");
    write(&b.drive().join("hi.txt"), b"hi\n");
    let theirs = a.mnt.path().join("peers/bob/hi.txt");
    wait_for("alice reads bob", Duration::from_secs(15), || {
        std::fs::read_to_string(&theirs).is_ok_and(|t| t == "hi\n")
    });
}

/// The errno of reading extended attribute `name` of `path` (0 if it has one).
fn xattr_errno(path: &Path, name: &str) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: both are NUL-terminated; a null buffer of size 0 asks for the length only.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if n >= 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }
}

#[test]
fn acls_and_security_labels_are_unsupported_so_ls_stops_asking_for_them() {
    let a = Mounted::readable_by_everyone();
    let b = Mounted::new();
    follow(&b, &a, "alice");
    write(&b.drive().join("mine.txt"), b"mine\n");
    write(&a.drive().join("theirs.txt"), b"theirs\n");
    let theirs = b.mnt.path().join("peers/alice/theirs.txt");
    wait_for("alice's file", Duration::from_secs(15), || theirs.exists());
    for path in [theirs.clone(), b.drive().join("mine.txt")] {
        // EOPNOTSUPP, not ENODATA: `ls -l` asks each entry for both unless told the
        // device has no support, and the kernel caches neither answer.
        for name in ["security.selinux", "system.posix_acl_access"] {
            assert_eq!(
                xattr_errno(&path, name),
                libc::EOPNOTSUPP,
                "{name} of {}",
                path.display()
            );
        }
        assert_eq!(
            xattr_errno(&path, "user.peerfs.cid"),
            0,
            "{}",
            path.display()
        );
        assert_eq!(xattr_errno(&path, "user.other"), libc::ENODATA);
    }
}
