//! Trees built in memory for unit tests, with small shards (directories past 8 entries
//! are HAMTs) so that tests walk both kinds of directory.

use super::build::{build_directory, build_symlink, FileBuilder};
use super::{DirEntry, ImportOptions, Metadata, Profile};
use crate::store::MemoryBlocks;

pub fn small_shards() -> ImportOptions {
    ImportOptions {
        shard_threshold: 8,
        ..Profile::V1_2025.options()
    }
}

fn entry(built: super::Built) -> DirEntry {
    DirEntry {
        name: Vec::new(),
        cid: built.cid,
        tsize: built.tsize,
    }
}

pub fn file(store: &MemoryBlocks, content: &[u8], meta: Metadata) -> DirEntry {
    let mut sink = store;
    let opts = small_shards();
    let mut b = FileBuilder::new(&opts, meta);
    b.push(content.to_vec(), &mut sink).unwrap();
    entry(b.finish(&mut sink).unwrap())
}

pub fn dir<N: Into<String>>(store: &MemoryBlocks, entries: Vec<(N, DirEntry)>) -> DirEntry {
    let mut sink = store;
    let entries = entries
        .into_iter()
        .map(|(name, e)| DirEntry {
            name: name.into().into_bytes(),
            ..e
        })
        .collect();
    entry(build_directory(entries, Metadata::default(), &small_shards(), &mut sink).unwrap())
}

pub fn symlink(store: &MemoryBlocks, target: &str) -> DirEntry {
    let mut sink = store;
    let built = build_symlink(
        target.as_bytes(),
        Metadata::default(),
        &small_shards(),
        &mut sink,
    );
    entry(built.unwrap())
}
