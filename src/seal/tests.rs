//! A folder sealed by its owner and read back by readers that hold only the sealed
//! blocks: what a follower or a mirror holds.

use std::sync::Arc;

use cid::Cid;
use libp2p_identity::Keypair;

use super::keys::{recipient_of, wrap, FolderKey, ReaderKey, Stanza};
use super::tree::{envelope, MemoryMemo, Sealer, VersionRoot};
use super::unseal::{Unsealer, Unsealing};
use crate::block::Block;
use crate::store::{Blocks, MemoryBlocks, StoreError, Unavailable};
use crate::unixfs::testing::{dir, file};
use crate::unixfs::{list, load_node, resolve, DirEntry, FileReader, Metadata};

const MARKER: &[u8] = b"MARKER-7f3a";
const FOLDER: [u8; 16] = [9; 16];

fn content(n: usize, salt: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..n).map(|i| (i % 251) as u8 ^ salt).collect();
    v[..MARKER.len()].copy_from_slice(MARKER);
    v
}

/// `secret/`: a small file, a big one (three leaves), a subfolder.
fn plain_tree(p: &MemoryBlocks, extra: Option<(&str, &[u8])>) -> DirEntry {
    let sub = dir(
        p,
        vec![("b.txt", file(p, &content(100, 2), Metadata::default()))],
    );
    let mut entries = vec![
        (
            "a.txt".to_string(),
            file(p, &content(300, 1), Metadata::default()),
        ),
        (
            "big.bin".to_string(),
            file(p, &content(2_500_000, 3), Metadata::default()),
        ),
        ("sub".to_string(), sub),
    ];
    if let Some((name, bytes)) = extra {
        entries.push((name.to_string(), file(p, bytes, Metadata::default())));
    }
    dir(p, entries)
}

struct Sealed {
    root: crate::unixfs::Built,
    blocks: Vec<Block>,
    sealed_count: u64,
}

fn seal(p: &MemoryBlocks, memo: &MemoryMemo, key: &FolderKey, gen: u32, root: &Cid) -> Sealed {
    let mut blocks = Vec::new();
    // The owner's store holds both, as the memo expects.
    let mut write = |batch: Vec<Block>| -> Result<(), StoreError> {
        p.put_many(&batch, false)?;
        blocks.extend(batch);
        Ok(())
    };
    let mut s = Sealer::new(p, memo, FOLDER, key, gen, &mut write);
    let built = s.seal(root).unwrap();
    let sealed_count = s.finish().unwrap();
    Sealed {
        root: built,
        blocks,
        sealed_count,
    }
}

fn stanzas(key: &FolderKey, gen: u32, to: &[&Keypair]) -> Vec<Stanza> {
    to.iter()
        .map(|k| wrap(key, gen, &recipient_of(&k.public().to_peer_id()).unwrap()).unwrap())
        .collect()
}

fn reader(store: MemoryBlocks, who: &Keypair) -> Unsealing<MemoryBlocks> {
    Unsealing {
        inner: store,
        unsealer: Arc::new(Unsealer::new(Some(ReaderKey::from_identity(who).unwrap()))),
    }
}

fn read_file(b: &dyn Blocks, root: &Cid, path: &str) -> Result<Vec<u8>, crate::unixfs::Error> {
    let (cid, _) = resolve(b, root, path)?;
    let r = FileReader::open(b, &cid)?;
    let mut out = vec![0; r.size() as usize];
    let n = r.read_at(0, &mut out)?;
    out.truncate(n);
    Ok(out)
}

fn names(b: &dyn Blocks, root: &Cid) -> Vec<String> {
    let node = load_node(b, root).unwrap();
    list(b, root, &node)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_reader_reads_the_sealed_folder_and_a_stranger_gets_refused() {
    let (bob, carol) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let p = MemoryBlocks::default();
    let plain = plain_tree(&p, None);
    let key = FolderKey::random().unwrap();
    let memo = MemoryMemo::default();
    let sealed = seal(&p, &memo, &key, 0, &plain.cid);
    let env = envelope(
        &[VersionRoot {
            gen: 0,
            key: &key,
            plain: plain.cid,
            sealed: sealed.root,
        }],
        stanzas(&key, 0, &[&bob]),
    )
    .unwrap();
    // What a follower holds: sealed blocks and the envelope, nothing plaintext.
    let held = MemoryBlocks::default();
    held.put_many(&sealed.blocks, false).unwrap();
    held.put_many(std::slice::from_ref(&env), false).unwrap();
    for b in sealed.blocks.iter().chain([&env]) {
        assert!(!has(b.data(), MARKER), "plaintext in {}", b.cid());
        assert!(!has(b.data(), b"big.bin") && !has(b.data(), b"b.txt"));
    }
    let as_bob = reader(held, &bob);
    let root = *env.cid();
    assert_eq!(names(&as_bob, &root), ["a.txt", "big.bin", "sub"]);
    assert_eq!(read_file(&as_bob, &root, "a.txt").unwrap(), content(300, 1));
    assert_eq!(
        read_file(&as_bob, &root, "big.bin").unwrap(),
        content(2_500_000, 3)
    );
    assert_eq!(
        read_file(&as_bob, &root, "sub/b.txt").unwrap(),
        content(100, 2)
    );

    let as_carol = reader(as_bob.inner, &carol);
    let refused = as_carol.get(&root).unwrap_err();
    assert!(matches!(
        refused,
        StoreError::Unavailable {
            why: Unavailable::Refused,
            ..
        }
    ));
    // A sealed node reached by its own CID says nothing either.
    assert!(matches!(
        as_carol.get(&sealed.root.cid),
        Err(StoreError::Unavailable { .. })
    ));
}

#[test]
fn a_tampered_block_fails_its_file_only() {
    let bob = Keypair::generate_ed25519();
    let p = MemoryBlocks::default();
    let plain = plain_tree(&p, None);
    let key = FolderKey::random().unwrap();
    let sealed = seal(&p, &MemoryMemo::default(), &key, 0, &plain.cid);
    let env = envelope(
        &[VersionRoot {
            gen: 0,
            key: &key,
            plain: plain.cid,
            sealed: sealed.root,
        }],
        stanzas(&key, 0, &[&bob]),
    )
    .unwrap();
    let held = MemoryBlocks::default();
    held.put_many(&sealed.blocks, false).unwrap();
    held.put_many(std::slice::from_ref(&env), false).unwrap();
    // The sealed leaf of a.txt (sealing again is deterministic), a byte flipped.
    let a_plain = resolve(&p, &plain.cid, "a.txt").unwrap().0;
    let a_sealed = seal(&p, &MemoryMemo::default(), &key, 0, &a_plain).root.cid;
    let held = Flipping {
        inner: held,
        cid: a_sealed,
    };
    let as_bob = Unsealing {
        inner: held,
        unsealer: Arc::new(Unsealer::new(Some(ReaderKey::from_identity(&bob).unwrap()))),
    };
    let root = *env.cid();
    let err = read_file(&as_bob, &root, "a.txt").unwrap_err();
    assert!(
        matches!(err, crate::unixfs::Error::Store(StoreError::Unsealed(_))),
        "{err}"
    );
    assert_eq!(as_bob.unsealer.tampered(), 1);
    assert_eq!(
        read_file(&as_bob, &root, "sub/b.txt").unwrap(),
        content(100, 2)
    );
}

/// A store whose copy of one block has a byte flipped.
struct Flipping {
    inner: MemoryBlocks,
    cid: Cid,
}

impl Blocks for Flipping {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let mut bytes = self.inner.get(cid)?;
        if *cid == self.cid {
            if let Some(b) = bytes.as_mut().and_then(|b| b.get_mut(40)) {
                *b ^= 1;
            }
        }
        Ok(bytes)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.inner.has(cid)
    }

    fn put_many(&self, blocks: &[Block], durable: bool) -> Result<(), StoreError> {
        self.inner.put_many(blocks, durable)
    }

    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        self.inner.delete_many(cids)
    }
}

#[test]
fn resealing_seals_only_what_changed_and_a_new_generation_keeps_the_removed_reader_out() {
    let (bob, carol) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let p = MemoryBlocks::default();
    let memo = MemoryMemo::default();
    let key0 = FolderKey::random().unwrap();
    let v0 = plain_tree(&p, None);
    let s0 = seal(&p, &memo, &key0, 0, &v0.cid);
    // Bob is removed: generation 1, carol only, and a new file written.
    let key1 = FolderKey::random().unwrap();
    let v1 = plain_tree(&p, Some(("new.txt", b"MARKER-7f3a written after")));
    let s1 = seal(&p, &memo, &key1, 1, &v1.cid);
    // The new file's leaf and the folder's node; everything else came from the memo.
    assert_eq!(s1.sealed_count, 2, "resealed {} blocks", s1.sealed_count);
    let mut st = stanzas(&key0, 0, &[&bob, &carol]);
    st.extend(stanzas(&key1, 1, &[&carol]));
    let env = envelope(
        &[
            VersionRoot {
                gen: 1,
                key: &key1,
                plain: v1.cid,
                sealed: s1.root,
            },
            VersionRoot {
                gen: 0,
                key: &key0,
                plain: v0.cid,
                sealed: s0.root,
            },
        ],
        st,
    )
    .unwrap();
    let held = MemoryBlocks::default();
    held.put_many(&s0.blocks, false).unwrap();
    held.put_many(&s1.blocks, false).unwrap();
    held.put_many(std::slice::from_ref(&env), false).unwrap();
    let root = *env.cid();

    let as_carol = reader(held, &carol);
    assert_eq!(
        names(&as_carol, &root),
        ["a.txt", "big.bin", "new.txt", "sub"]
    );
    assert_eq!(
        read_file(&as_carol, &root, "new.txt").unwrap(),
        b"MARKER-7f3a written after"
    );
    // Unchanged files are still generation 0's blocks, which carol has the key of.
    assert_eq!(
        read_file(&as_carol, &root, "big.bin").unwrap(),
        content(2_500_000, 3)
    );

    let as_bob = reader(as_carol.inner, &bob);
    assert_eq!(names(&as_bob, &root), ["a.txt", "big.bin", "sub"]);
    assert_eq!(read_file(&as_bob, &root, "a.txt").unwrap(), content(300, 1));
    assert!(resolve(&as_bob, &root, "new.txt").is_err());
}
