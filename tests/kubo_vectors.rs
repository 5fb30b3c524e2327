//! CIDs that Kubo itself prints for `ipfs add --preserve-mode/--preserve-mtime` (Kubo's
//! sharness test t0047, CIDv0, 256 KiB chunks): where the JS importer and Kubo differ
//! (default modes, one-chunk files with metadata), Kubo is the one we match.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;

const V0: &[&str] = &["--profile", "unixfs-v0-2015"];

fn cid_v0(path: &Path, flags: &[&str]) -> String {
    let mut args = V0.to_vec();
    args.extend_from_slice(flags);
    peerfs_cid(path, &args)
}

#[test]
fn empty_file_with_mode_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("testfile.txt");
    fs::write(&f, b"").unwrap();
    chmod(&f, 0o644);
    assert_eq!(
        cid_v0(&f, &[]),
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    );

    chmod(&f, 0o640);
    assert_eq!(
        cid_v0(&f, &["--preserve-mode"]),
        "QmQLgxypSNGNFTuUPGCecq6dDEjb6hNB5xSyVmP3cEuNtq"
    );
    set_mtime(&f, 1604320482, 0);
    assert_eq!(
        cid_v0(&f, &["--preserve-mtime"]),
        "QmQ6kErEW8kztQFV8vbwNU8E4dmtGsYpRiboiLxUEwibvj"
    );
    assert_eq!(
        cid_v0(&f, &["--preserve-mode", "--preserve-mtime"]),
        "QmYkvboLsvLFcSYmqVJRxvBdYRQLroLv9kELf3LRiCqBri"
    );

    chmod(&f, 0o764);
    assert_eq!(
        cid_v0(&f, &["--preserve-mode"]),
        "QmchD3BN8TQ3RW6jPLxSaNkqvfuj7syKhzTRmL4EpyY1Nz"
    );
    set_mtime(&f, 1603539720, 0);
    assert_eq!(
        cid_v0(&f, &["--preserve-mtime"]),
        "QmT3aY4avDcYXCWpU8CJzqUkW7YEuEsx36S8cTNoLcuK1B"
    );
    set_mtime(&f, 1603539720, 54321);
    assert_eq!(
        cid_v0(&f, &["--preserve-mtime"]),
        "QmaKH8H5rXBUBCX4vdxi7ktGQEL7wejV7L9rX2qpZjwncz"
    );
    assert_eq!(
        cid_v0(&f, &["--preserve-mode", "--preserve-mtime"]),
        "QmUkxrtBA8tPjwCYz1HrsoRfDz6NgKut3asVeHVQNH4C8L"
    );
}

#[test]
fn symlink_mtime_and_no_mode() {
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().join("linkfile");
    symlink("nothing", &l).unwrap();
    set_mtime(&l, 1604320482, 0);
    assert_eq!(
        cid_v0(&l, &["--preserve-mtime"]),
        "QmbJwotgtr84JxcnjpwJ86uZiyMoxbZuNH4YrdJMypkYaB"
    );
    // A symlink never carries a mode, asked or not.
    assert_eq!(
        cid_v0(&l, &["--preserve-mtime", "--preserve-mode"]),
        "QmbJwotgtr84JxcnjpwJ86uZiyMoxbZuNH4YrdJMypkYaB"
    );
    set_mtime(&l, 1603539720, 0);
    assert_eq!(
        cid_v0(&l, &["--preserve-mtime"]),
        "QmV1Uot2gy4bhY9yvYiZxhhchhyYC6MKKoGV1XtWNmpCLe"
    );
    set_mtime(&l, 1603539720, 54321);
    assert_eq!(
        cid_v0(&l, &["--preserve-mtime"]),
        "QmPHYCxYvvHj6VxiPNJ3kXxcPsnJLDYUJqsDJWjvytmrmY"
    );
}

const DIR_TIME: i64 = 1655158632;

/// The tree of Kubo's directory test, with its modes and mtimes.
fn kubo_tree(root: &Path) {
    for d in ["dir1", "dir2/sub1/sub2", "dir3"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["dir2/sub1/sub2/file3", "dir3/file2", "file1"] {
        fs::write(root.join(f), b"").unwrap();
        chmod(&root.join(f), 0o644);
    }
    symlink("../sub2/file3", root.join("dir2/sub1/link1")).unwrap();
    for d in ["dir1", "dir2", "dir2/sub1", "dir2/sub1/sub2", "dir3"] {
        chmod(&root.join(d), 0o755);
    }
    chmod(root, 0o700);
    for (p, dt) in [
        ("dir2/sub1/sub2/file3", 10),
        ("dir2/sub1/link1", 20),
        ("dir2/sub1/sub2", 30),
        ("dir2/sub1", 40),
        ("dir2", 50),
        ("dir3/file2", 60),
        ("dir3", 70),
        ("file1", 80),
        ("dir1", 90),
        ("", 0),
    ] {
        set_mtime(&root.join(p), DIR_TIME + dt, 0);
    }
}

#[test]
fn a_directory_tree_with_modes_and_mtimes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("testdir");
    kubo_tree(&root);

    let dir1 = root.join("dir1");
    assert_eq!(
        cid_v0(&dir1, &[]),
        "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    );
    // Kubo writes the default mode 0755 too: the JS importer would leave it out.
    assert_eq!(
        cid_v0(&dir1, &["--preserve-mode"]),
        "QmRviohgafvCsbkiTgfQFipbuXJ6k1YtoiaQW4quttJPKu"
    );
    assert_eq!(
        cid_v0(&dir1, &["--preserve-mtime"]),
        "QmYMy7CZGb498QFSQBF5ZFwv1FYbrAtYZMe4VxhDXxAcvf"
    );

    let out = std::process::Command::new(bin())
        .args([
            "add",
            "-r",
            "-n",
            "--profile",
            "unixfs-v0-2015",
            "--preserve-mode",
            "--preserve-mtime",
        ])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut cids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    cids.sort();
    let expected = [
        "QmRCG3Pprg4jbhfYBzVzfJVyneFHnBquPGXwvXU3jSuf5j",
        "QmReHCn4BSJJdtd6Le8Hd8Puai6TmgpPCYb13wyM7FD9AD",
        "QmSioyvQuXetxg7uo8FswGn9XKKEsisDq1HTMzGyWbw2R6",
        "QmTMoVgJKhPrz9DfkvT132mxyBXNae5azXQ42WbM9abdSE",
        "QmVzXqpuQGCAgRwEbGuE9xe8Fidi1HEXaPKsQEFEbPJW9j",
        "QmW6Nqy2nziduAp3UGx2a52gtSUsYzhVcZMuPdxBRnwCyP",
        "QmeQwX5qAX18fcPDxDdkfM6ttuFCZetF5hgeUa6ov8D5oc",
        "QmefofUNwC2U3Xp87rB1x8Aws6AdsDuoXR7B9u2RkEZ4dQ",
        "Qmeu24TFarJwLzJgMTDYDJTr4BMGnzafoSnfxov1513abW",
        "Qmf82bbFg2e8HmcqiewutVVw5NoMpiXZD57LpLdC1poBuH",
    ];
    assert_eq!(cids, expected);
}
