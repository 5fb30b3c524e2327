//! CAR files both ways with the reference stack: what `peerfs export` writes, the
//! reference exporter reads back byte for byte; what the reference stack writes,
//! `peerfs import` takes.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;

fn sample_tree(root: &std::path::Path) {
    write(&root.join("readme.txt"), b"hello from peerfs\n");
    write(&root.join("data/big.bin"), &bytes(3_500_000, 11));
    write(&root.join("data/sm\u{f6}rg\u{e5}sbord"), b"unicode");
    fs::create_dir_all(root.join("empty")).unwrap();
    symlink("data/big.bin", root.join("big-link")).unwrap();
    for i in 0..5000 {
        write(
            &root.join(format!("wide/entry-{i:05}-with-a-longish-name")),
            i.to_string().as_bytes(),
        );
    }
}

#[test]
fn export_is_read_back_by_the_reference_exporter() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let root = repo
        .ok(&["add", "-r", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    let car = dir.path().join("out.car");
    repo.ok(&["export", &root, "-o", car.to_str().unwrap()]);
    let back = dir.path().join("back");
    oracle(&["extract", car.to_str().unwrap(), back.to_str().unwrap()]);
    assert_same_tree(&src, &back);
}

#[test]
fn import_takes_a_car_written_by_the_reference_stack() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let car = dir.path().join("ref.car");
    let root = oracle(&[
        "car",
        src.to_str().unwrap(),
        r#"{"profile":"unixfs-v0-2015"}"#,
        car.to_str().unwrap(),
    ]);
    let out = repo.ok(&["import", car.to_str().unwrap()]);
    assert!(
        out.contains(&root),
        "import should name the root {root}: {out}"
    );
    let got = dir.path().join("got");
    repo.ok(&["get", &root, got.to_str().unwrap()]);
    assert_same_tree(&src, &got);
    // And the CID peerfs computes for the tree is the one in the CAR.
    assert_eq!(peerfs_cid(&src, &["--profile", "unixfs-v0-2015"]), root);
}
