//! DAGs made by someone else, as a CAR from an untrusted source: whatever their
//! directories say, `peerfs get` writes only inside the directory it was given.
//!
//! The hostile DAGs are built block by block here, with the format's own encoders and
//! none of its builders' rules (unique, sorted names), then imported with `peerfs import`.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use cid::Cid;
use common::*;
use peerfs::block::{Block, DAG_PB, RAW};
use peerfs::store::{BlockSink, MemoryBlocks};
use peerfs::unixfs::dagpb::{PbLink, PbNode};
use peerfs::unixfs::data::{DataType, UnixFsData};
use peerfs::unixfs::hamt::hash_name;

/// Blocks of a DAG under construction, any shape at all.
#[derive(Default)]
struct Dag {
    blocks: MemoryBlocks,
}

impl Dag {
    fn node(&self, links: Vec<PbLink>, data: UnixFsData) -> Cid {
        let bytes = PbNode {
            links,
            data: Some(data.encode()),
        }
        .encode();
        self.put(Block::hash(cid::Version::V1, DAG_PB, bytes))
    }

    fn put(&self, block: Block) -> Cid {
        let cid = *block.cid();
        (&self.blocks).put(block).unwrap();
        cid
    }

    fn file(&self, content: &[u8]) -> Cid {
        self.put(Block::hash(cid::Version::V1, RAW, content.to_vec()))
    }

    fn symlink(&self, target: &Path) -> Cid {
        let mut d = UnixFsData::new(DataType::Symlink);
        d.data = Some(target.as_os_str().as_encoded_bytes().to_vec());
        self.node(Vec::new(), d)
    }

    /// A flat directory with exactly these links, in this order.
    fn dir(&self, entries: &[(&str, Cid)]) -> Cid {
        let links = entries
            .iter()
            .map(|(name, cid)| PbLink::new(*cid, name.as_bytes(), 1))
            .collect();
        self.node(links, UnixFsData::new(DataType::Directory))
    }

    /// A one-level HAMT shard (fanout 256) with these (slot, name, CID) links.
    fn shard(&self, entries: &[(u8, &str, Cid)]) -> Cid {
        let mut bitfield = [0u8; 32];
        let links = entries
            .iter()
            .map(|&(slot, name, cid)| {
                bitfield[31 - slot as usize / 8] |= 1 << (slot % 8);
                PbLink::new(cid, format!("{slot:02X}{name}"), 1)
            })
            .collect();
        let mut d = UnixFsData::new(DataType::HamtShard);
        let first = bitfield.iter().position(|&b| b != 0).unwrap_or(32);
        d.data = Some(bitfield[first..].to_vec());
        d.fanout = Some(256);
        d.hash_type = Some(0x22);
        self.node(links, d)
    }

    /// The DAG under `root` as a CAR file at `path`.
    fn car(&self, root: &Cid, path: &Path) {
        let mut out = Vec::new();
        peerfs::car::export(&self.blocks, root, &mut out, &mut |_| {}).unwrap();
        fs::write(path, out).unwrap();
    }
}

/// Imports the DAG under `root` into `repo` as a user would: `peerfs import x.car`.
fn import(repo: &TestRepo, dag: &Dag, root: &Cid, dir: &Path) -> String {
    let car = dir.join(format!("{root}.car"));
    dag.car(root, &car);
    let out = repo.ok(&["import", car.to_str().unwrap()]);
    assert!(out.contains(&root.to_string()), "{out}");
    root.to_string()
}

/// Every path under `dir` (recursively, symlinks not followed), for "nothing is here".
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        out.push(e.path().display().to_string());
        if e.file_type().unwrap().is_dir() {
            out.extend(tree(&e.path()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_directory_naming_an_entry_twice_cannot_write_through_its_own_symlink() {
    let repo = TestRepo::new();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dag = Dag::default();
    let pwned = dag.file(b"pwned\n");
    // A symlink out of the tree, then a file of the same name: a writer that creates
    // the second over the first writes through the link.
    let file_twice = dag.dir(&[("x", dag.symlink(&outside.join("victim"))), ("x", pwned)]);
    // The same with a directory: its entries land in whatever the link names.
    let dir_twice = dag.dir(&[
        ("d", dag.symlink(&outside)),
        ("d", dag.dir(&[("planted", pwned)])),
    ]);
    // And in a HAMT: one name in two slots, only one of them the slot its hash picks.
    let slot = hash_name(b"x")[0];
    let other = slot.wrapping_add(1);
    let (first, second) = if slot < other {
        (slot, other)
    } else {
        (other, slot)
    };
    let shard_twice = dag.shard(&[
        (first, "x", dag.symlink(&outside.join("victim"))),
        (second, "x", pwned),
    ]);

    for (what, root) in [
        ("file twice", file_twice),
        ("directory twice", dir_twice),
        ("HAMT name twice", shard_twice),
    ] {
        let root = import(&repo, &dag, &root, tmp.path());
        let out = tmp.path().join(format!("out-{}", what.replace(' ', "-")));
        let got = repo.run(&["get", &root, out.to_str().unwrap()]);
        assert_eq!(
            tree(&outside),
            Vec::<String>::new(),
            "{what}: written outside"
        );
        let err = String::from_utf8_lossy(&got.stderr);
        assert!(!got.status.success(), "{what}: get should fail");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(
            err.contains("twice") || err.contains("slot"),
            "{what}: the error says what is wrong: {err}"
        );
        // Listing it is refused the same way, never half a listing.
        let err = repo.fails(&["ls", &root]);
        assert!(
            err.contains(&root) || err.contains("block"),
            "{what}: {err}"
        );
    }
}

#[test]
fn names_no_filesystem_can_hold_are_refused_when_a_directory_is_read() {
    let repo = TestRepo::new();
    let tmp = tempfile::tempdir().unwrap();
    let dag = Dag::default();
    let f = dag.file(b"x");
    for bad in ["", ".", "..", "a/b", "nul\0byte"] {
        let root = import(&repo, &dag, &dag.dir(&[(bad, f)]), tmp.path());
        let err = repo.fails(&["ls", &root]);
        assert!(err.contains("name"), "{bad:?}: {err}");
        let out = tmp.path().join("out");
        repo.fails(&["get", &root, out.to_str().unwrap()]);
        assert!(!tmp.path().join("b").exists() && !tmp.path().join("x").exists());
    }
}

/// A tree fetched earlier left symlinks in the output directory (links out of the tree
/// are legitimate content); a second `get` into the same directory replaces them, as
/// `tar x` does, and never writes through them.
#[test]
fn get_replaces_symlinks_it_meets_and_never_writes_through_them() {
    let repo = TestRepo::new();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let a = tmp.path().join("a");
    fs::create_dir(&a).unwrap();
    symlink(outside.join("victim"), a.join("x")).unwrap();
    symlink(&outside, a.join("d")).unwrap();
    let b = tmp.path().join("b");
    write(&b.join("x"), b"new x\n");
    write(&b.join("d/planted"), b"new d/planted\n");
    write(&b.join("keep/me"), b"kept\n");
    let add = |p: &Path| {
        repo.ok(&["add", "-r", "-q", p.to_str().unwrap()])
            .trim()
            .to_string()
    };
    let (a_root, b_root) = (add(&a), add(&b));

    let out = tmp.path().join("out");
    repo.ok(&["get", &a_root, out.to_str().unwrap()]);
    assert_eq!(
        fs::read_link(out.join("x")).unwrap(),
        outside.join("victim")
    );
    // What the user already had in the output directory stays beside what `get` writes.
    write(&out.join("mine"), b"mine\n");
    repo.ok(&["get", &b_root, out.to_str().unwrap()]);
    assert_eq!(tree(&outside), Vec::<String>::new(), "written outside");
    assert_eq!(fs::read(out.join("x")).unwrap(), b"new x\n");
    assert!(fs::symlink_metadata(out.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(out.join("d/planted")).unwrap(), b"new d/planted\n");
    assert_eq!(fs::read(out.join("mine")).unwrap(), b"mine\n");
    // And a second get of the same tree rewrites it in place.
    repo.ok(&["get", &b_root, out.to_str().unwrap()]);
    assert_eq!(fs::read(out.join("keep/me")).unwrap(), b"kept\n");
    // A file where the tree has a directory (or the other way) is the user's: refused.
    let c = tmp.path().join("c");
    write(&c.join("mine/inner"), b"?");
    let c_root = add(&c);
    let err = repo.fails(&["get", &c_root, out.to_str().unwrap()]);
    assert!(err.contains("mine"), "{err}");
    assert_eq!(fs::read(out.join("mine")).unwrap(), b"mine\n");
}
