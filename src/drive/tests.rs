//! The drive's own tests: commits, directories that change before they are listed,
//! HAMT edits against fresh builds, holes.

use super::*;
use crate::store::rocks::RocksStore;
use crate::unixfs::build::{build_directory, DirEntry};
use crate::unixfs::read::FileReader;
use crate::vfs::{Seek, SetAttr};

fn store_in(dir: &std::path::Path) -> Arc<RocksStore> {
    Arc::new(RocksStore::open(dir, true).unwrap())
}

/// The drive over `store`, as the daemon opens it at a mount: a second call is a remount.
fn drive_on(store: &Arc<RocksStore>, opts: ImportOptions) -> Drive {
    let key = Keypair::ed25519_from_bytes([7; 32]).unwrap();
    Drive::load(Arc::clone(store) as Arc<dyn HeadStore>, opts, key).unwrap()
}

fn drive_in(dir: &std::path::Path, opts: ImportOptions) -> Drive {
    drive_on(&store_in(dir), opts)
}

fn drive(dir: &std::path::Path) -> Drive {
    drive_in(dir, ImportOptions::default())
}

/// Replaces the contents of existing file `name`, as an editor saving it does.
fn rewrite(drive: &Drive, parent: u64, name: &str, data: &[u8]) {
    let ino = drive.lookup(parent, name.as_bytes()).unwrap().ino;
    let fh = drive.open(ino, true).unwrap();
    drive.write(fh, 0, data, false).unwrap();
    drive.release(fh).unwrap();
}

fn write_file(drive: &Drive, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = drive.create(parent, name.as_bytes(), 0o644).unwrap();
    drive.write(fh, 0, data, false).unwrap();
    drive.release(fh).unwrap();
    attr.ino
}

/// The CID `build_directory` gives the drive's directory `ino` from scratch.
fn fresh_cid(drive: &Drive, ino: u64) -> Cid {
    let entries = drive
        .list(ino)
        .unwrap()
        .into_iter()
        .map(|(name, a)| {
            let cid = drive.cid(a.ino).unwrap();
            let st = drive.lock();
            let tsize = st.inodes[&a.ino].built().unwrap().tsize;
            DirEntry { name, cid, tsize }
        })
        .collect();
    let meta = drive.lock().inodes[&ino].meta();
    let store = crate::store::MemoryBlocks::default();
    build_directory(entries, meta, &drive.opts, &mut &store)
        .unwrap()
        .cid
}

#[test]
fn a_commit_is_due_when_changes_pause_or_go_on_too_long() {
    let dir = tempfile::tempdir().unwrap();
    let drive = drive(dir.path());
    let (long, none) = (Duration::from_secs(3600), Duration::ZERO);
    assert!(!drive.commit_due(none, none), "nothing changed yet");
    assert!(
        drive.commit().unwrap().is_none(),
        "an untouched drive commits nothing"
    );

    // Writing alone changes nothing committed: the file enters the tree on close.
    let (_, fh) = drive.create(DRIVE_ROOT, b"a.txt", 0o644).unwrap();
    drive.commit().unwrap();
    drive.write(fh, 0, b"hello", false).unwrap();
    assert!(!drive.commit_due(none, none));
    drive.release(fh).unwrap();
    assert!(drive.commit_due(none, long), "changes paused");
    assert!(drive.commit_due(long, none), "changes went on too long");
    assert!(!drive.commit_due(long, long), "neither yet");

    drive.commit().unwrap();
    assert!(!drive.commit_due(none, none), "committed");
    drive.mkdir(DRIVE_ROOT, b"d", 0o755).unwrap();
    assert!(drive.commit_due(none, long));
}

/// Issue 12, finding 1: a chmod of a directory nobody listed since the mount made
/// every later commit panic, and everything written after it was lost.
#[test]
fn a_directory_changed_before_it_is_listed_commits_and_keeps_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    {
        let drive = drive_on(&store, ImportOptions::default());
        let d = drive.mkdir(DRIVE_ROOT, b"d", 0o755).unwrap().ino;
        let e = drive.mkdir(d, b"e", 0o755).unwrap().ino;
        write_file(&drive, e, "f", b"one\n");
        drive.commit().unwrap();
    }
    let drive = drive_on(&store, ImportOptions::default());
    let d = drive.lookup(DRIVE_ROOT, b"d").unwrap().ino;
    let mtime = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    drive
        .setattr(
            d,
            SetAttr {
                mode: Some(0o700),
                mtime: Some(mtime),
                ..SetAttr::default()
            },
        )
        .unwrap();
    write_file(&drive, DRIVE_ROOT, "g", b"two\n");
    drive.commit().unwrap().expect("a commit");
    drop(drive);

    let drive = drive_on(&store, ImportOptions::default());
    let d = drive.lookup(DRIVE_ROOT, b"d").unwrap();
    assert_eq!(d.perm, 0o700);
    assert_eq!(d.mtime, mtime);
    let e = drive.lookup(d.ino, b"e").unwrap().ino;
    let f = drive.lookup(e, b"f").unwrap();
    let fh = drive.open(f.ino, false).unwrap();
    assert_eq!(drive.read(fh, 0, 100).unwrap(), b"one\n");
    let g = drive.lookup(DRIVE_ROOT, b"g").unwrap();
    let fh = drive.open(g.ino, false).unwrap();
    assert_eq!(drive.read(fh, 0, 100).unwrap(), b"two\n");
}

/// Commits of a HAMT directory edit it along hash paths, and always land on the CID a
/// fresh build of the same entries gets: through growth past the threshold, edits,
/// renames, metadata changes, and shrinking back to a flat node.
#[test]
fn directory_commits_equal_fresh_builds_across_the_shard_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ImportOptions {
        shard_threshold: 2048,
        ..ImportOptions::default()
    };
    let drive = drive_in(dir.path(), opts);
    let big = drive.mkdir(DRIVE_ROOT, b"big", 0o755).unwrap().ino;
    let mut names = Vec::new();
    for i in 0..300 {
        let name = format!("file-{i:04}");
        write_file(&drive, big, &name, name.as_bytes());
        names.push(name);
        if i % 50 == 0 {
            drive.commit().unwrap();
            assert_eq!(drive.cid(big).unwrap(), fresh_cid(&drive, big), "after {i}");
        }
    }
    drive.commit().unwrap();
    assert_eq!(drive.cid(big).unwrap(), fresh_cid(&drive, big));
    let shard = |drive: &Drive| {
        let st = drive.lock();
        match &st.inodes[&big].body {
            Body::Dir(Dir::Loaded(d)) => d.stored.unwrap().shard,
            _ => panic!("not loaded"),
        }
    };
    assert!(shard(&drive), "300 names are past a 2 KiB threshold");

    // One change per commit: rewrite, rename, delete, chmod the directory.
    rewrite(&drive, big, "file-0007", b"new contents");
    drive
        .rename(big, b"file-0008", big, b"renamed", false)
        .unwrap();
    drive.unlink(big, b"file-0009").unwrap();
    drive.commit().unwrap();
    assert_eq!(drive.cid(big).unwrap(), fresh_cid(&drive, big));
    drive
        .setattr(
            big,
            SetAttr {
                mode: Some(0o700),
                ..SetAttr::default()
            },
        )
        .unwrap();
    drive.commit().unwrap();
    assert_eq!(drive.cid(big).unwrap(), fresh_cid(&drive, big));

    // A subdirectory's change reaches the HAMT through its entry.
    let sub = drive.mkdir(big, b"sub", 0o755).unwrap().ino;
    drive.commit().unwrap();
    write_file(&drive, sub, "inner", b"x");
    drive.commit().unwrap();
    assert_eq!(drive.cid(big).unwrap(), fresh_cid(&drive, big));

    // Down to a few names: back to a flat node.
    for name in names.iter().skip(5) {
        let _ = drive.unlink(big, name.as_bytes());
    }
    drive.commit().unwrap();
    assert!(!shard(&drive));
    assert_eq!(drive.cid(big).unwrap(), fresh_cid(&drive, big));
}

/// Issue 12, finding 2: a terabyte of hole costs nothing, reads as zeros, and keeps its
/// data and its holes across a commit and a reload.
#[test]
fn a_sparse_terabyte_is_cheap_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let tib = 1u64 << 40;
    {
        let drive = drive_on(&store, ImportOptions::default());
        let (attr, fh) = drive.create(DRIVE_ROOT, b"sparse", 0o644).unwrap();
        let set = SetAttr {
            size: Some(tib),
            ..SetAttr::default()
        };
        drive.setattr(attr.ino, set).unwrap();
        drive.write(fh, tib / 2, b"middle", false).unwrap();
        drive.release(fh).unwrap();
        let a = drive.getattr(attr.ino).unwrap();
        assert_eq!(a.size, tib);
        assert_eq!(a.allocated, drive.opts.chunk_size, "one chunk holds data");
        drive.commit().unwrap();
    }
    let drive = drive_on(&store, ImportOptions::default());
    let a = drive.lookup(DRIVE_ROOT, b"sparse").unwrap();
    assert_eq!(a.size, tib);
    let fh = drive.open(a.ino, false).unwrap();
    assert_eq!(drive.read(fh, 12345, 4).unwrap(), vec![0; 4]);
    assert_eq!(drive.read(fh, tib / 2, 6).unwrap(), b"middle");
    assert_eq!(drive.read(fh, tib - 3, 10).unwrap(), vec![0; 3]);
    assert_eq!(drive.seek(fh, 0, Seek::Data).unwrap(), tib / 2);
    assert_eq!(
        drive.seek(fh, tib / 2 + 1, Seek::Data).unwrap(),
        tib / 2 + 1
    );
    assert_eq!(
        drive.seek(fh, tib / 2, Seek::Hole).unwrap(),
        tib / 2 + drive.opts.chunk_size
    );
    assert_eq!(drive.seek(fh, 0, Seek::Hole).unwrap(), 0);
    assert!(matches!(
        drive.seek(fh, tib, Seek::Hole),
        Err(FsError::PastEnd)
    ));

    // The DAG reads back the same through the format's own reader.
    let root = drive.cid(a.ino).unwrap();
    let reader = FileReader::open(&drive.staging, &root).unwrap();
    let mut buf = [1u8; 6];
    reader.read_at(tib / 2, &mut buf).unwrap();
    assert_eq!(&buf, b"middle");
    reader.read_at(7 << 30, &mut buf).unwrap();
    assert_eq!(buf, [0; 6]);

    let set = SetAttr {
        size: Some(MAX_FILE_SIZE + 1),
        ..SetAttr::default()
    };
    assert!(matches!(
        drive.setattr(a.ino, set),
        Err(FsError::FileTooBig)
    ));
}

/// A hole built as shared zero subtrees is the DAG that pushing every zero chunk makes.
#[test]
fn holes_give_the_cid_of_written_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ImportOptions {
        chunk_size: 1024,
        max_links: 4,
        ..ImportOptions::default()
    };
    let drive = drive_in(dir.path(), opts.clone());
    for (size, data_at) in [(40 * 1024 + 5, Some(9000)), (64 * 1024, None), (3000, None)] {
        let (attr, fh) = drive.create(DRIVE_ROOT, b"holes", 0o644).unwrap();
        let set = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        drive.setattr(attr.ino, set).unwrap();
        let mut plain = vec![0u8; size as usize];
        if let Some(at) = data_at {
            drive.write(fh, at, b"data", false).unwrap();
            plain[at as usize..at as usize + 4].copy_from_slice(b"data");
        }
        drive.release(fh).unwrap();

        let meta = drive.lock().inodes[&attr.ino].meta();
        let store = crate::store::MemoryBlocks::default();
        let mut builder = crate::unixfs::FileBuilder::new(&opts, meta);
        for chunk in plain.chunks(1024) {
            builder.push(chunk.to_vec(), &mut &store).unwrap();
        }
        let want = builder.finish(&mut &store).unwrap().cid;
        assert_eq!(drive.cid(attr.ino).unwrap(), want, "size {size}");
        drive.unlink(DRIVE_ROOT, b"holes").unwrap();
    }
}

/// A private folder: the mount and the plaintext head keep it readable, the published
/// head has it sealed (a reader opens it; the rest of the drive stays in clear), and
/// its plaintext blocks are never served, even to a peer allowed to read the drive.
#[test]
fn a_private_folder_is_published_sealed_and_its_plaintext_never_served() {
    use crate::head::PLAIN_HEAD;
    use crate::net::protocol::{BlockRequest, BlockResponse};
    use crate::seal::publish::Publisher;
    use crate::seal::unseal::{Unsealer, Unsealing};
    use crate::unixfs::resolve;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let d = drive_on(&store, ImportOptions::default());
    let publisher = Arc::new(Publisher::open(repo.path(), Arc::clone(&store) as _).unwrap());
    d.set_publisher(Arc::clone(&publisher));
    let secret = d.mkdir(DRIVE_ROOT, b"secret", 0o755).unwrap().ino;
    let open = d.mkdir(DRIVE_ROOT, b"open", 0o755).unwrap().ino;
    write_file(&d, secret, "a.txt", b"MARKER-1 the secret");
    write_file(&d, open, "p.txt", b"public words");
    let bob = Keypair::generate_ed25519();
    publisher
        .set_readers("secret", &[bob.public().to_peer_id()])
        .unwrap();
    let head = d.commit().unwrap().unwrap().head;
    let published = head.head().root;
    let plain_head = SignedHead::verify(&store.head(PLAIN_HEAD).unwrap().unwrap()).unwrap();
    let plain = plain_head.head().root;
    assert_ne!(published, plain);
    assert_eq!(
        SignedHead::verify(&store.head(OWN_HEAD).unwrap().unwrap())
            .unwrap()
            .head()
            .root,
        published
    );
    // In clear outside the folder, sealed inside it.
    assert!(resolve(store.as_ref(), &published, "open/p.txt").is_ok());
    assert!(resolve(store.as_ref(), &published, "secret/a.txt").is_err());
    let as_bob = Unsealing {
        inner: Shared(Arc::clone(&store)),
        unsealer: Arc::new(Unsealer::new(Some(
            crate::seal::keys::ReaderKey::from_identity(&bob).unwrap(),
        ))),
    };
    let (a, _) = resolve(&as_bob, &published, "secret/a.txt").unwrap();
    let r = FileReader::open(&as_bob, &a).unwrap();
    let mut buf = vec![0; 64];
    let n = r.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"MARKER-1 the secret");

    // Asked by CID, even by a reader of the drive: nothing of the plaintext.
    let (plain_a, _) = resolve(store.as_ref(), &plain, "secret/a.txt").unwrap();
    let (plain_p, _) = resolve(store.as_ref(), &plain, "open/p.txt").unwrap();
    let ask = |cid: &Cid| BlockRequest {
        want: vec![serde_bytes::ByteBuf::from(cid.to_bytes())],
        owner: None,
    };
    let served = |cid: &Cid| match crate::net::serve::answer(
        store.as_ref(),
        ask(cid),
        true,
        &Default::default(),
        &|_| false,
    ) {
        BlockResponse::Blocks { blocks, .. } => blocks.len(),
        _ => 0,
    };
    assert_eq!(served(&plain_a), 0);
    assert_eq!(served(&plain_p), 1);

    // A remount shows the plaintext.
    drop(d);
    let d = drive_on(&store, ImportOptions::default());
    let secret = d.lookup(DRIVE_ROOT, b"secret").unwrap().ino;
    let a = d.lookup(secret, b"a.txt").unwrap().ino;
    let fh = d.open(a, false).unwrap();
    assert_eq!(d.read(fh, 0, 64).unwrap(), b"MARKER-1 the secret");
}

/// The store, as a reader's `Blocks` holds it.
struct Shared(Arc<RocksStore>);

impl Blocks for Shared {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(cid)
    }
    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.0.has(cid)
    }
    fn put_many(&self, blocks: &[crate::block::Block], durable: bool) -> Result<(), StoreError> {
        self.0.put_many(blocks, durable)
    }
    fn delete_many(&self, cids: &[Cid]) -> Result<(), StoreError> {
        self.0.delete_many(cids)
    }
}
