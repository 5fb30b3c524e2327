//! The HAMT checked against the reference importer: its hash and slots, edits along a
//! hash path equal to a fresh build, and entries where their hash puts them.

use super::*;
use crate::block::{Block, RAW};
use crate::store::MemoryBlocks;
use crate::unixfs::Profile;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// From @multiformats/murmur3 as ipfs-unixfs-importer uses it (its hash bytes read
/// from the end, as hamt-sharding consumes them): "a" sits in slot 0x85 of a root shard.
#[test]
fn hash_matches_the_reference_importer() {
    assert_eq!(hex(&hash_name(b"a")), "85555565f6597889");
    assert_eq!(hex(&hash_name(b"hello")), "cbd8a7b341bd9b02");
    assert_eq!(hex(&hash_name(b"file-0001.txt")), "c6b80999e8fbb598");
    assert_eq!(hex(&hash_name(b"")), "0000000000000000");
}

#[test]
fn slots_take_bits_from_the_front() {
    let g = Geometry::of(256);
    let h = [0xab, 0xcd, 0, 0, 0, 0, 0, 0];
    assert_eq!(g.slot(&h, 0).unwrap(), 0xab);
    assert_eq!(g.slot(&h, 1).unwrap(), 0xcd);
    assert!(g.slot(&h, 8).is_err());
    assert_eq!(g.label(0xab), "AB");
    let g16 = Geometry::of(16);
    assert_eq!(g16.slot(&h, 1).unwrap(), 0xb);
    assert_eq!(g16.label(3), "3");
}

fn entry(i: usize, version: u32) -> DirEntry {
    let leaf = Block::hash(cid::Version::V1, RAW, format!("{i}.{version}").into_bytes());
    DirEntry {
        name: format!("entry-{i}").into_bytes(),
        cid: *leaf.cid(),
        tsize: leaf.len(),
    }
}

fn shard_at(store: &MemoryBlocks, root: &Built) -> ShardNode {
    match load_node(store, &root.cid).unwrap() {
        Node::Shard(s) => s,
        other => panic!("root is not a shard: {other:?}"),
    }
}

fn remove_entry(store: &MemoryBlocks, root: &Built, i: usize) -> Result<Option<Built>, Error> {
    let opts = Profile::V1_2025.options();
    remove(
        store,
        &root.cid,
        &shard_at(store, root),
        &entry(i, 0).name,
        &opts,
        &mut &*store,
    )
}

fn built_from_scratch(
    store: &MemoryBlocks,
    entries: &BTreeMap<usize, DirEntry>,
    meta: Metadata,
) -> Built {
    build(
        entries.values().cloned().collect(),
        meta,
        &Profile::V1_2025.options(),
        &mut &*store,
    )
    .unwrap()
}

/// Any sequence of edits lands on the CID a fresh build of the same set gets.
#[test]
fn edits_along_the_hash_path_equal_a_fresh_build() {
    let store = MemoryBlocks::default();
    let opts = Profile::V1_2025.options();
    let meta = Metadata {
        mode: Some(0o750),
        mtime: None,
    };
    let mut set: BTreeMap<usize, DirEntry> = (0..600).map(|i| (i, entry(i, 0))).collect();
    let mut root = built_from_scratch(&store, &set, meta);
    // A deterministic walk of inserts, replacements and removals, some of them misses.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for step in 0..1500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % 900) as usize;
        if x.is_multiple_of(3) {
            let removed = remove_entry(&store, &root, i).unwrap();
            assert_eq!(
                removed.is_some(),
                set.remove(&i).is_some(),
                "step {step}: presence of {i}"
            );
            if let Some(b) = removed {
                root = b;
            }
        } else {
            let e = entry(i, step % 2);
            set.insert(i, e.clone());
            root = insert(
                &store,
                &root.cid,
                &shard_at(&store, &root),
                e,
                &opts,
                &mut &store,
            )
            .unwrap();
        }
        if step % 100 == 0 || step == 1499 {
            assert_eq!(root, built_from_scratch(&store, &set, meta), "step {step}");
        }
    }
    // And down to a handful of names: deep sub-shards fold back up.
    for i in set.keys().copied().collect::<Vec<_>>().into_iter().skip(3) {
        root = remove_entry(&store, &root, i).unwrap().unwrap();
        set.remove(&i);
    }
    assert_eq!(root, built_from_scratch(&store, &set, meta));
}

/// A root shard with these (slot, link name after the label, CID) links, by hand.
fn hand_made(store: &MemoryBlocks, links: &[(usize, &[u8], Cid)]) -> (Cid, ShardNode) {
    let geo = Geometry::of(HAMT_FANOUT);
    let mut slots = Slots::new();
    for (slot, name, cid) in links {
        let child = if name.is_empty() {
            Child::Shard(Built {
                cid: *cid,
                tsize: 1,
            })
        } else {
            Child::Entry(DirEntry {
                name: name.to_vec(),
                cid: *cid,
                tsize: 1,
            })
        };
        slots.insert(*slot, child);
    }
    let opts = Profile::V1_2025.options();
    let built = emit_shard(&slots, Metadata::default(), geo, &opts, &mut &*store).unwrap();
    (built.cid, shard_at(store, &built))
}

fn listed(store: &MemoryBlocks, (cid, shard): &(Cid, ShardNode)) -> Result<Vec<Vec<u8>>, Error> {
    Ok(entries(store, cid, shard, usize::MAX)?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

#[test]
fn a_listed_entry_sits_where_its_hash_puts_it() {
    let store = MemoryBlocks::default();
    let leaf = entry(0, 0).cid;
    let slot_of = |name: &[u8]| hash_name(name)[0] as usize;
    let (a, b) = (&b"a"[..], &b"hello"[..]);
    let good = hand_made(&store, &[(slot_of(a), a, leaf), (slot_of(b), b, leaf)]);
    assert_eq!(listed(&store, &good).unwrap().len(), 2);

    // One name in two slots: listed, it would be two entries of one name.
    let other = (slot_of(a) + 1) % 256;
    let twice = hand_made(&store, &[(slot_of(a), a, leaf), (other, a, leaf)]);
    assert!(listed(&store, &twice).is_err());
    // Looking it up still finds the one its hash leads to.
    let found = lookup(&store, &twice.0, &twice.1, a).unwrap();
    assert_eq!(found.map(|e| e.name), Some(a.to_vec()));

    // A sub-shard linked from two slots: its entries are right under one at most.
    let sub_slot = hash_name(a)[1] as usize;
    let (sub, _) = hand_made(&store, &[(sub_slot, a, leaf)]);
    let shared = hand_made(&store, &[(slot_of(a), b"", sub), (other, b"", sub)]);
    assert!(listed(&store, &shared).is_err());
    let once = hand_made(&store, &[(slot_of(a), b"", sub)]);
    assert_eq!(listed(&store, &once).unwrap(), vec![a.to_vec()]);

    // Names no directory can hold are refused, wherever they hash.
    for bad in [&b"."[..], b"..", b"a/b", b"nul\0"] {
        let shard = hand_made(&store, &[(slot_of(bad), bad, leaf)]);
        assert!(listed(&store, &shard).is_err(), "{bad:?}");
    }
}

/// A directory someone else made is listed up to a bound: past it, the walk stops with
/// `TooManyEntries` instead of holding whatever the tree holds.
#[test]
fn a_listing_stops_at_its_bound_of_entries_and_shards() {
    let store = MemoryBlocks::default();
    let all: BTreeMap<usize, DirEntry> = (0..3000).map(|i| (i, entry(i, 0))).collect();
    let root = built_from_scratch(&store, &all, Metadata::default());
    let shard = shard_at(&store, &root);
    let walk = |max| entries(&store, &root.cid, &shard, max);

    assert_eq!(walk(3000).unwrap().len(), 3000);
    for max in [2999, 100] {
        match walk(max) {
            Err(Error::TooManyEntries { cid, max: said }) => {
                assert_eq!((cid, said), (root.cid, max))
            }
            other => panic!("{max}: {:?}", other.map(|e| e.len())),
        }
    }
    // 3,000 entries need more than one shard below the root: a bound of one shard
    // stops the walk while it loads the tree, before any entry is collected.
    assert!(matches!(walk(1), Err(Error::TooManyEntries { .. })));
}
