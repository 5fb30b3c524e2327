//! The content commands with the drive mounted: `add`, `cat`, `ls`, `get`, `export` and
//! `import` go through the running daemon (which holds the repo), fetch from peers
//! what is not here, and a hostile client on the control socket cannot hurt the
//! daemon.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    assert_same_tree, bytes, follow, mount_capped, peerfs_cid, wait_for, write, Mounted, TestRepo,
};

/// A small tree with the shapes `get` and `ls -l` care about, and a multi-block file.
fn make_tree(root: &Path) {
    write(&root.join("readme.txt"), b"hello from the CLI\n");
    write(&root.join("sub/deep/notes.md"), b"# notes\n");
    write(&root.join("sub/big.bin"), &bytes(5 << 20, 11));
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("readme.txt", root.join("link")).unwrap();
}

#[test]
fn the_cli_works_while_the_drive_is_mounted_and_what_it_adds_stays() {
    let m = Mounted::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    let src_arg = src.to_str().unwrap();

    // add -r prints the root CID an offline add prints, and pins it as offline.
    let root = m.repo.ok(&["add", "-r", "-q", src_arg]).trim().to_string();
    assert_eq!(root, peerfs_cid(&src, &[]), "the same root as offline");
    let pins = m.repo.ok(&["pins"]);
    assert!(pins.contains(&format!("{root}  add {src_arg}")), "{pins}");
    let added = m.repo.ok(&["add", "-r", src_arg]);
    assert!(added.contains(&format!("added {root} src")), "{added}");

    // cat, ls -l, get.
    let cat = m.repo.run(&["cat", &format!("{root}/sub/big.bin")]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(
        cat.stdout == bytes(5 << 20, 11),
        "cat gives the file's bytes"
    );
    let ls = m.repo.ok(&["ls", "-l", &root]);
    for line in ["-rw-r--r--", "readme.txt", "sub", "link -> readme.txt"] {
        assert!(ls.contains(line), "{line} in {ls}");
    }
    let out = work.path().join("got");
    m.repo.ok(&["get", &root, out.to_str().unwrap()]);
    assert_same_tree(&src, &out);

    // export, then import into another repo round-trips.
    let car = work.path().join("tree.car");
    m.repo.ok(&["export", &root, "-o", car.to_str().unwrap()]);
    let other = TestRepo::new();
    let imported = other.ok(&["import", car.to_str().unwrap()]);
    assert!(imported.contains(&format!("imported {root}")), "{imported}");
    let again = work.path().join("again");
    other.ok(&["get", &root, again.to_str().unwrap()]);
    assert_same_tree(&src, &again);

    // import into the mounted repo: a tree it has not seen.
    write(&work.path().join("theirs/only-here.txt"), b"imported\n");
    let theirs = other
        .ok(&[
            "add",
            "-r",
            "-q",
            work.path().join("theirs").to_str().unwrap(),
        ])
        .trim()
        .to_string();
    let car2 = work.path().join("theirs.car");
    other.ok(&["export", &theirs, "-o", car2.to_str().unwrap()]);
    let car2_arg = car2.to_str().unwrap();
    let imported = m.repo.ok(&["import", car2_arg]);
    assert!(
        imported.contains(&format!("imported {theirs}")),
        "{imported}"
    );
    let pins = m.repo.ok(&["pins"]);
    assert!(
        pins.contains(&format!("{theirs}  import {car2_arg}")),
        "{pins}"
    );
    assert_eq!(
        m.repo.ok(&["cat", &format!("{theirs}/only-here.txt")]),
        "imported\n"
    );

    // Durable: after an unmount, the repo opened directly has every block.
    m.unmount();
    wait_for("the daemon to exit", Duration::from_secs(15), || !m.alive());
    let offline = work.path().join("offline");
    m.repo.ok(&["get", &root, offline.to_str().unwrap()]);
    assert_same_tree(&src, &offline);
    m.repo.ok(&["export", &theirs, "-o", "/dev/null"]);
    let pins = m.repo.ok(&["pins"]);
    assert!(pins.contains(&root) && pins.contains(&theirs), "{pins}");
}

#[test]
fn add_of_many_small_files_through_the_daemon_gives_the_offline_root() {
    let m = Mounted::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("many");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..9000 {
        std::fs::write(src.join(format!("f{i:05}")), format!("{i}\n")).unwrap();
    }
    let root = m
        .repo
        .ok(&["add", "-r", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    assert_eq!(root, peerfs_cid(&src, &[]));
    assert_eq!(m.repo.ok(&["cat", &format!("{root}/f08999")]), "8999\n");
}

#[test]
fn cat_on_one_node_fetches_from_a_peer_and_names_a_block_nobody_has() {
    let a_repo = TestRepo::new();
    a_repo.set_config("fetch_timeout", "\"3s\"");
    let a = Mounted::with_repo(a_repo);
    let b = Mounted::new();
    follow(&a, &b, "bob");
    follow(&b, &a, "alice");
    let work = tempfile::tempdir().unwrap();
    let data = bytes(6 << 20, 5);
    write(&work.path().join("dir/only-b.bin"), &data);
    write(&work.path().join("dir/small.txt"), b"small\n");
    let dir = b
        .repo
        .ok(&["add", "-r", "-q", work.path().join("dir").to_str().unwrap()])
        .trim()
        .to_string();

    let start = Instant::now();
    let cat = a.repo.run(&["cat", &format!("{dir}/only-b.bin")]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(cat.stdout == data, "A's cat gives B's bytes");
    println!("cat of 6 MiB over the network: {:?}", start.elapsed());
    let ls = a.repo.ok(&["ls", &dir]);
    assert!(
        ls.contains("small.txt") && ls.contains("only-b.bin"),
        "{ls}"
    );
    let out = work.path().join("got");
    a.repo.ok(&["get", &dir, out.to_str().unwrap()]);
    assert_same_tree(&work.path().join("dir"), &out);

    // A block nobody has: an error naming it, within the fetch timeout.
    write(&work.path().join("nowhere.bin"), &bytes(1000, 99));
    let nowhere = peerfs_cid(&work.path().join("nowhere.bin"), &[]);
    let start = Instant::now();
    let err = a.repo.fails(&["cat", &nowhere]);
    let waited = start.elapsed();
    assert!(err.contains(&nowhere), "{err}");
    assert!(waited < Duration::from_secs(8), "failed after {waited:?}");
    println!("nobody has it: {waited:?}: {err}");
}

#[test]
fn cat_takes_nothing_from_a_peer_whose_blocks_do_not_match_their_cid() {
    let a_repo = TestRepo::new();
    a_repo.set_config("fetch_timeout", "\"3s\"");
    let a = Mounted::with_repo(a_repo);
    let mut liar_repo = TestRepo::new();
    liar_repo
        .env
        .push(("PEERFS_TEST_CORRUPT_BLOCKS".into(), "1".into()));
    let liar = Mounted::with_repo(liar_repo);
    follow(&a, &liar, "liar");
    follow(&liar, &a, "alice");
    let work = tempfile::tempdir().unwrap();
    write(&work.path().join("f.txt"), b"the truth\n");
    let cid = liar
        .repo
        .ok(&["add", "-q", work.path().join("f.txt").to_str().unwrap()])
        .trim()
        .to_string();
    let start = Instant::now();
    let out = a.repo.run(&["cat", &cid]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(err.contains(&cid), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    // It failed because the liar's block was refused, not for want of a source.
    let peers = a.repo.ok(&["peers"]);
    assert!(
        peers.contains("bad blocks:") && !peers.contains("bad blocks:  0"),
        "{peers}"
    );
}

#[test]
fn cat_into_a_closed_pipe_ends_quietly_and_the_daemon_serves_on() {
    let m = Mounted::new();
    let work = tempfile::tempdir().unwrap();
    let data = bytes(8 << 20, 3);
    write(&work.path().join("f.bin"), &data);
    let cid = m
        .repo
        .ok(&["add", "-q", work.path().join("f.bin").to_str().unwrap()])
        .trim()
        .to_string();
    let (status, stderr) = m.repo.run_into_closed_pipe(&["cat", &cid]);
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!(
            "{} --repo {} cat {cid} | head -c1 | wc -c",
            common::bin(),
            m.repo.path().display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(m.repo.run(&["cat", &cid]).stdout == data);
    // A reader that left is no trouble worth logging, even one gone before its answer.
    let conn = blocks_session(&m.repo);
    let cid_bytes = cid::Cid::try_from(cid.as_str()).unwrap().to_bytes();
    (&conn).write_all(&frame(1, &cid_bytes)).unwrap();
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    assert!(m.repo.run(&["cat", &cid]).stdout == data);
    let log = std::fs::read_to_string(m.repo.path().join("daemon.log")).unwrap();
    assert!(!log.contains("control connection"), "{log}");
}

/// A raw connection to the daemon's control socket, switched to a blocks session.
fn blocks_session(repo: &TestRepo) -> UnixStream {
    let conn = UnixStream::connect(repo.path().join("peerfs.sock")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (&conn).write_all(b"{\"op\":\"blocks\"}\n").unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte != *b"\n" {
        (&conn).read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    assert!(line.contains("\"blocks\""), "{line}");
    conn
}

/// Reads one answer frame: (status, payload).
fn answer(conn: &UnixStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    (&*conn).read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes(header[1..].try_into().unwrap());
    let mut payload = vec![0; len as usize];
    (&*conn).read_exact(&mut payload).unwrap();
    (header[0], payload)
}

fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![op];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn part(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_hostile_client_gets_errors_and_the_daemon_stays_up_and_small() {
    // The heap is capped: a daemon that allocated what a header claims would die.
    let repo = TestRepo::new();
    let mnt = tempfile::tempdir().unwrap();
    let pid = mount_capped(&repo, mnt.path(), 2 << 30);
    let m = Mounted { repo, mnt, pid };
    let work = tempfile::tempdir().unwrap();
    write(&work.path().join("f.txt"), b"kept\n");
    let cid = m
        .repo
        .ok(&["add", "-q", work.path().join("f.txt").to_str().unwrap()])
        .trim()
        .to_string();

    // Junk where a JSON request belongs.
    let conn = UnixStream::connect(m.repo.path().join("peerfs.sock")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (&conn).write_all(b"\x00\xffjunk\n").unwrap();
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    assert!(line.contains("bad request"), "{line}");

    // A huge length prefix: an error, then the session ends.
    let conn = blocks_session(&m.repo);
    (&conn).write_all(&[3, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let (status, payload) = answer(&conn);
    assert_eq!(status, 1);
    assert!(String::from_utf8_lossy(&payload).contains("at most"));
    let mut rest = Vec::new();
    assert_eq!(
        (&conn).read_to_end(&mut rest).unwrap(),
        0,
        "the session ended"
    );

    // An unknown request, a block whose bytes lie, a CID that is not one.
    let conn = blocks_session(&m.repo);
    (&conn).write_all(&frame(77, b"")).unwrap();
    let (status, payload) = answer(&conn);
    assert_eq!(status, 1, "{}", String::from_utf8_lossy(&payload));
    let honest = peerfs_cid(&work.path().join("f.txt"), &[]);
    let honest = cid::Cid::try_from(honest.as_str()).unwrap().to_bytes();
    let mut put = Vec::new();
    part(&mut put, &honest);
    part(&mut put, b"not what the CID says");
    (&conn).write_all(&frame(3, &put)).unwrap();
    let (status, payload) = answer(&conn);
    assert_eq!(status, 1);
    assert!(
        String::from_utf8_lossy(&payload).contains("do not hash"),
        "{}",
        String::from_utf8_lossy(&payload)
    );
    (&conn).write_all(&frame(1, b"\x01\x02junk")).unwrap();
    assert_eq!(answer(&conn).0, 1);
    // Pins: of a block that is not here, under a label that would read as two.
    write(&work.path().join("absent.txt"), b"never added\n");
    let absent = peerfs_cid(&work.path().join("absent.txt"), &[]);
    let absent = cid::Cid::try_from(absent.as_str()).unwrap().to_bytes();
    for (target, label) in [(&absent, &b"add x"[..]), (&honest, &b"a\0b"[..])] {
        let mut pin = Vec::new();
        part(&mut pin, target);
        pin.extend_from_slice(label);
        (&conn).write_all(&frame(5, &pin)).unwrap();
        assert_eq!(answer(&conn).0, 1, "a pin of {label:?}");
    }
    assert!(!m.repo.ok(&["pins"]).contains("a\0b"));
    // Too many blocks in one frame, every one of them honest.
    let mut put = Vec::new();
    for i in 0u32..8193 {
        let b = peerfs::block::Block::hash(
            cid::Version::V1,
            peerfs::block::RAW,
            i.to_le_bytes().to_vec(),
        );
        part(&mut put, &b.cid().to_bytes());
        part(&mut put, b.data());
    }
    (&conn).write_all(&frame(3, &put)).unwrap();
    let (status, payload) = answer(&conn);
    assert_eq!(status, 1);
    assert!(
        String::from_utf8_lossy(&payload).contains("blocks in one frame"),
        "{}",
        String::from_utf8_lossy(&payload)
    );
    drop(conn);

    // Many clients claiming big frames and sending part of them, or junk, then
    // leaving: memory comes back.
    let before = rss_kib(m.pid);
    for round in 0..8 {
        let conns: Vec<UnixStream> = (0..12)
            .map(|i| {
                let conn = blocks_session(&m.repo);
                let mut f = vec![3];
                f.extend_from_slice(&(8u32 << 20).to_be_bytes());
                let junk = bytes(1 << 20, round * 100 + i);
                f.extend_from_slice(&junk);
                (&conn).write_all(&f).unwrap();
                conn
            })
            .collect();
        drop(conns);
    }
    wait_for(
        "the clients' sessions to end",
        Duration::from_secs(10),
        || m.repo.run(&["cat", &cid]).stdout == b"kept\n",
    );
    // A session slot for everyone who asks, up to the bound; past it, "busy".
    let held: Vec<UnixStream> = (0..16).map(|_| blocks_session(&m.repo)).collect();
    let busy = m.repo.fails(&["cat", &cid]);
    assert!(busy.contains("busy"), "{busy}");
    drop(held);
    let ok = wait_for("the sessions to close", Duration::from_secs(10), || {
        m.repo.run(&["cat", &cid]).stdout == b"kept\n"
    });
    println!("sessions freed after {ok:?}");
    let after = rss_kib(m.pid);
    println!("daemon RSS before {before} KiB, after {after} KiB");
    assert!(m.alive(), "the daemon is up");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

#[test]
fn a_large_cat_into_a_closed_pipe_ends_quietly_without_a_daemon_too() {
    let repo = TestRepo::new();
    let work = tempfile::tempdir().unwrap();
    write(&work.path().join("f.bin"), &bytes(8 << 20, 4));
    let cid = repo
        .ok(&["add", "-q", work.path().join("f.bin").to_str().unwrap()])
        .trim()
        .to_string();
    let (status, stderr) = repo.run_into_closed_pipe(&["cat", &cid]);
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
}

/// Seconds `peerfs ARGS` takes, its stdout thrown away.
fn timed(repo: &TestRepo, args: &[&str]) -> f64 {
    let start = Instant::now();
    let status = repo
        .command(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `add -r` of a 200 MiB tree and `cat` of a 200 MiB file, through the daemon and
/// offline, interleaved. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_the_daemon_path_against_offline() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    for i in 0..20 {
        write(
            &tree.join(format!("d{}/f{i}.bin", i % 4)),
            &bytes(10 << 20, 1000 + i),
        );
    }
    let big = work.path().join("big.bin");
    write(&big, &bytes(200 << 20, 7));
    let offline = TestRepo::new();
    let mounted = Mounted::new();
    let (tree, big) = (tree.to_str().unwrap(), big.to_str().unwrap());
    let (mut add_off, mut add_on) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let args = ["add", "-r", "-q", tree];
        if round % 2 == 0 {
            add_off.push(timed(&offline, &args));
            add_on.push(timed(&mounted.repo, &args));
        } else {
            add_on.push(timed(&mounted.repo, &args));
            add_off.push(timed(&offline, &args));
        }
    }
    let cid = offline.ok(&["add", "-q", big]).trim().to_string();
    assert_eq!(mounted.repo.ok(&["add", "-q", big]).trim(), cid);
    let (mut cat_off, mut cat_on) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let args = ["cat", &cid];
        if round % 2 == 0 {
            cat_off.push(timed(&offline, &args));
            cat_on.push(timed(&mounted.repo, &args));
        } else {
            cat_on.push(timed(&mounted.repo, &args));
            cat_off.push(timed(&offline, &args));
        }
    }
    println!("add -r 200 MiB offline {add_off:.2?} daemon {add_on:.2?}");
    println!("cat 200 MiB    offline {cat_off:.2?} daemon {cat_on:.2?}");
    println!(
        "median ratios daemon/offline: add {:.2}, cat {:.2}",
        median(add_on) / median(add_off),
        median(cat_on) / median(cat_off)
    );
}
