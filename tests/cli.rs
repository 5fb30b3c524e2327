//! The offline CLI as a user meets it: add, cat, ls, get, export, import, and the errors
//! for bad input, each one plain line and a non-zero exit.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn add_get_round_trips_a_tree_with_modes_mtimes_and_symlinks() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src.join("bin/run.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&src.join("bin/run.sh"), 0o755);
    write(&src.join("secret"), b"0600");
    chmod(&src.join("secret"), 0o600);
    write(&src.join("big/file"), &bytes(2_500_000, 1));
    fs::create_dir_all(src.join("empty")).unwrap();
    symlink("bin/run.sh", src.join("run")).unwrap();
    set_mtime(&src.join("secret"), 1_500_000_000, 123_456_789);
    set_mtime(&src.join("run"), 1_400_000_000, 42);
    set_mtime(&src.join("empty"), 1_300_000_000, 7);

    let out = repo.ok(&[
        "add",
        "-r",
        "--preserve-mode",
        "--preserve-mtime",
        src.to_str().unwrap(),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("added ")), "{out}");
    assert!(
        lines.last().unwrap().ends_with(" src"),
        "the root comes last, as with ipfs add: {out}"
    );
    let root = lines.last().unwrap().split(' ').nth(1).unwrap();

    let got = dir.path().join("got");
    repo.ok(&["get", root, got.to_str().unwrap()]);
    assert_same_tree(&src, &got);

    // A DAG comes from anyone: its setuid and setgid bits are not made real by `get`
    // (the tests run as root, which would make a setuid-root program of a stranger's file).
    let risky = dir.path().join("risky");
    write(&risky.join("tool"), b"#!/bin/sh\n");
    chmod(&risky.join("tool"), 0o4755);
    fs::create_dir_all(risky.join("shared")).unwrap();
    chmod(&risky.join("shared"), 0o3775);
    let out = repo.ok(&[
        "add",
        "-r",
        "-q",
        "--preserve-mode",
        risky.to_str().unwrap(),
    ]);
    let risky_got = dir.path().join("risky-got");
    repo.ok(&["get", out.trim(), risky_got.to_str().unwrap()]);
    let mode = |p: &str| {
        fs::metadata(risky_got.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("tool"), 0o755);
    assert_eq!(
        mode("shared"),
        0o1775,
        "the sticky bit grants nothing: it stays"
    );
    for p in ["bin/run.sh", "secret", "empty", "big/file", "run", ""] {
        let (a, b) = (
            fs::symlink_metadata(src.join(p)).unwrap(),
            fs::symlink_metadata(got.join(p)).unwrap(),
        );
        assert_eq!(
            a.permissions().mode(),
            b.permissions().mode(),
            "mode of {p:?}"
        );
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "mtime of {p:?}"
        );
    }

    assert_eq!(
        repo.ok(&["cat", &format!("{root}/bin/run.sh")]),
        "#!/bin/sh\necho hi\n"
    );
    assert_eq!(repo.ok(&["cat", &format!("/ipfs/{root}/secret")]), "0600");
    let ls = repo.ok(&["ls", root]);
    assert!(
        ls.contains(" bin/") && ls.contains(" run@") && ls.contains(" secret"),
        "{ls}"
    );
    let long = repo.ok(&["ls", "-l", root]);
    assert!(
        long.contains("-rw------- ") && long.contains("2017-07-14T02:40:00Z secret"),
        "{long}"
    );
}

#[test]
fn cat_reads_a_big_file_exactly() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = bytes(5 * 1024 * 1024 + 3, 5);
    write(&f, &data);
    let cid = repo
        .ok(&["add", "-q", f.to_str().unwrap()])
        .trim()
        .to_string();
    let out = repo.command(&["cat", &cid]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == data, "cat returned different bytes");
}

#[test]
fn a_second_process_is_told_which_pid_holds_the_repo() {
    let repo = TestRepo::new();
    // `import -` holds the repo while it waits for stdin.
    let mut holder = repo
        .command(&["import", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id().to_string();
    // Wait until the holder has the lock (it writes its pid into repo.lock).
    let lock_file = repo.path().join("repo.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&lock_file).unwrap_or_default().trim() != pid {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = repo.fails(&[
        "ls",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    ]);
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert!(err.contains(&format!("is in use by pid {pid}")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn unknown_cids_and_missing_paths_are_one_line_errors() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("d/file"), b"x");
    let root = repo
        .ok(&["add", "-r", "-q", dir.path().join("d").to_str().unwrap()])
        .trim()
        .to_string();

    let unknown = "bafkreie5cvv4h45feuqbjtjbwxvqvaupcmsphsuckeuo3gw2kcqb6ybcba";
    for (args, needle) in [
        (
            vec!["cat", unknown],
            format!("block {unknown} is not in the store"),
        ),
        (
            vec!["cat", &format!("{root}/nope")],
            format!("{root}/nope: no such file or directory"),
        ),
        (
            vec!["cat", &format!("{root}/file/deeper")],
            format!("{root}/file: not a directory"),
        ),
        (vec!["cat", &root], "not a file".to_string()),
        (
            vec!["ls", "not-a-cid"],
            "\"not-a-cid\" is not a CID".to_string(),
        ),
    ] {
        let err = repo.fails(&args);
        assert!(
            err.contains(&needle),
            "{args:?}: expected {needle:?} in {err:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line, got {err:?}"
        );
    }
    let err = repo.fails(&["add", dir.path().join("d").to_str().unwrap()]);
    assert!(err.contains("is a directory (use -r"), "{err}");
    let err = TestRepo::uninitialised().fails(&["ls", &root]);
    assert!(err.contains("run `peerfs init` first"), "{err}");
}

/// A CAR with a big file first (more than one write batch) and a small file last.
fn car_with_big_then_small(repo: &TestRepo, dir: &std::path::Path) -> (Vec<u8>, String, String) {
    let src = dir.join("src");
    write(&src.join("a-big"), &bytes(40 * 1024 * 1024, 2));
    write(&src.join("z-small"), b"MARKER-MARKER-MARKER-MARKER");
    let root = repo
        .ok(&["add", "-r", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    let big = peerfs_cid(&src.join("a-big"), &[]);
    let car = dir.join("x.car");
    repo.ok(&["export", &root, "-o", car.to_str().unwrap()]);
    (fs::read(car).unwrap(), root, big)
}

#[test]
fn a_car_with_a_lying_block_is_refused_naming_it_and_nothing_is_kept() {
    let source = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut car, root, big) = car_with_big_then_small(&source, dir.path());
    let small = peerfs_cid(&dir.path().join("src/z-small"), &[]);
    let at = car
        .windows(6)
        .position(|w| w == b"MARKER")
        .expect("marker in the CAR");
    car[at] = b'm';
    let bad = dir.path().join("bad.car");
    fs::write(&bad, &car).unwrap();

    let repo = TestRepo::new();
    let err = repo.fails(&["import", bad.to_str().unwrap()]);
    assert!(err.contains(&small) && err.contains("do not hash"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The blocks before the bad one, a whole write batch of them, were rolled back.
    for cid in [&root, &big] {
        let e = repo.fails(&["cat", cid]);
        assert!(
            e.contains("is not in the store"),
            "{cid} should be gone: {e}"
        );
    }
}

#[test]
fn a_truncated_car_is_refused_and_nothing_is_kept() {
    let source = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let (car, root, _) = car_with_big_then_small(&source, dir.path());
    let repo = TestRepo::new();
    let mut child = repo
        .command(&["import", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&car[..car.len() - 10])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated CAR"), "{err}");
    assert!(repo.fails(&["ls", &root]).contains("is not in the store"));
}

#[test]
fn garbage_is_not_a_car() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in [
        ("empty", vec![]),
        ("junk", b"this is not a CAR file at all".to_vec()),
        ("huge-frame", vec![0xff; 12]),
    ] {
        let p = dir.path().join(name);
        fs::write(&p, data).unwrap();
        let err = repo.fails(&["import", p.to_str().unwrap()]);
        assert!(err.contains("CAR"), "{name}: {err}");
    }
}

/// `peerfs id | head -1`, `peerfs peers | head`, `peerfs add -r DIR | head -1`: the
/// reader goes away early. Output ends quietly and the work does not: the add stores
/// and pins the whole tree.
#[test]
fn a_reader_that_goes_away_ends_output_quietly_and_the_add_still_pins() {
    let repo = TestRepo::new();
    let bob = "12D3KooWGzh2ZPJX1E5tKmTGQw4MaTNqLhhpQdJXoTUkBEBSxqnK";
    repo.ok(&["peer", "add", bob, "--name", "bob"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("many");
    // 3,001 lines of output, none of which reach a reader.
    for i in 0..3000 {
        write(&src.join(format!("f{i:04}")), format!("{i}\n").as_bytes());
    }
    let root = peerfs_cid(&src, &[]);
    let file = peerfs_cid(&src.join("f0001"), &[]);

    for args in [
        // First, so that the listings below have something to list.
        vec!["add", "-r", src.to_str().unwrap()],
        vec!["id"],
        vec!["peers"],
        vec!["pins"],
        vec!["ls", &root],
        vec!["cat", &file],
    ] {
        let (status, stderr) = repo.run_into_closed_pipe(&args);
        assert!(
            status.success() && !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {status}, {stderr}"
        );
    }
    let pins = repo.ok(&["pins"]);
    assert!(pins.contains(&root), "the add finished and pinned: {pins}");
    assert_eq!(repo.ok(&["ls", &root]).lines().count(), 3000);
}
