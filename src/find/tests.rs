use super::*;
use crate::store::MemoryBlocks;
use crate::unixfs::testing::{self, dir};
use crate::unixfs::{DirEntry, Metadata, Mtime};

#[test]
fn sizes_and_ages_read_as_find_spells_them() {
    assert_eq!("+10M".parse(), Ok(SizeTest::Above(10 << 20)));
    assert_eq!("-3k".parse(), Ok(SizeTest::Below(3 << 10)));
    assert_eq!(
        "512c".parse(),
        Ok(SizeTest::Units {
            count: 512,
            unit: 1
        })
    );
    assert_eq!("7".parse(), Ok(SizeTest::Units { count: 7, unit: 1 }));
    let two_k = SizeTest::Units {
        count: 2,
        unit: 1024,
    };
    assert!(two_k.accepts(1025) && two_k.accepts(2048) && !two_k.accepts(2049));
    for bad in ["", "+", "10X", "M", "-1.5M", "+99999999999T"] {
        assert!(bad.parse::<SizeTest>().is_err(), "{bad}");
    }
    assert_eq!("2d".parse(), Ok(Newer { secs: 2 * 86_400 }));
    assert_eq!("90m".parse(), Ok(Newer { secs: 5400 }));
    for bad in ["", "d", "2", "2y", "-1d"] {
        assert!(bad.parse::<Newer>().is_err(), "{bad}");
    }
    assert!(parse_kind("x").is_err());
}

fn file(store: &MemoryBlocks, len: usize, mtime: Option<i64>) -> DirEntry {
    let meta = Metadata {
        mode: None,
        mtime: mtime.map(|secs| Mtime { secs, nanos: 0 }),
    };
    testing::file(store, &vec![7; len], meta)
}

fn all(blocks: &dyn Blocks, root: &Cid, query: Query) -> (Vec<String>, Walked) {
    let query = query.compile().unwrap();
    let mut hits = Vec::new();
    let hooks = Hooks {
        found: |f: Found| {
            hits.push(f.path);
            Next::Go
        },
        progress: |_: &Walked| Next::Go,
        ahead: |_: &[Cid]| {},
    };
    let walked = search(blocks, root, &query, hooks);
    (hits, walked)
}

#[test]
fn a_search_finds_by_name_kind_size_and_time_through_shards() {
    let store = MemoryBlocks::default();
    // 20 papers in a sharded folder, every third one big and new.
    let papers: Vec<(String, DirEntry)> = (0..20)
        .map(|i| {
            let big = i % 3 == 0;
            let len = if big { 3 << 20 } else { 1000 };
            let mtime = if big { 2_000 } else { 1_000 };
            (format!("p{i:02}.pdf"), file(&store, len, Some(mtime)))
        })
        .chain([("notes.txt".to_string(), file(&store, 5 << 20, Some(3_000)))])
        .collect();
    let docs = dir(&store, papers);
    let root = dir(
        &store,
        vec![
            ("docs", docs),
            ("a.pdf", dir::<&str>(&store, Vec::new())),
            ("raw.pdf", file(&store, 10, None)),
        ],
    );

    let pdfs = |q: Query| all(&store, &root.cid, q).0;
    let named = Query {
        pattern: Some("*.pdf".into()),
        ..Query::default()
    };
    assert_eq!(pdfs(named.clone()).len(), 22, "20 papers, a folder, a file");
    let big: Vec<String> = (0..20)
        .step_by(3)
        .map(|i| format!("docs/p{i:02}.pdf"))
        .collect();
    let found = pdfs(Query {
        size: Some("+1M".parse().unwrap()),
        ..named.clone()
    });
    assert_eq!(found, big);
    let found = pdfs(Query {
        kind: Some(EntryKind::File),
        modified_since: Some(1_500),
        ..named.clone()
    });
    assert_eq!(found, big);
    assert_eq!(
        pdfs(Query {
            kind: Some(EntryKind::Directory),
            ..named
        }),
        ["a.pdf"]
    );
    let (everything, walked) = all(&store, &root.cid, Query::default());
    assert_eq!(everything.len(), 24);
    assert_eq!(walked.entries, 24);
    assert_eq!(walked.unreadable, 0);
}

#[test]
fn a_subtree_that_cannot_be_read_is_counted_and_skipped() {
    let store = MemoryBlocks::default();
    let lost = dir(&store, vec![("x.pdf", file(&store, 100, None))]);
    let kept = dir(&store, vec![("y.pdf", file(&store, 200, None))]);
    let root = dir(&store, vec![("lost", lost.clone()), ("kept", kept)]);
    store.delete_many(&[lost.cid]).unwrap();
    let (found, walked) = all(&store, &root.cid, Query::default());
    assert_eq!(found, ["kept", "kept/y.pdf"]);
    assert_eq!(walked.unreadable, 1);
}
