//! The store on a real RocksDB in a temp dir.

use super::*;
use crate::block::RAW;

fn block(i: u8) -> Block {
    Block::hash(cid::Version::V1, RAW, vec![i; 100 * 1024])
}

#[test]
fn the_order_of_use_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let blocks: Vec<Block> = (1..=3).map(block).collect();
    {
        let store = RocksStore::open(dir.path(), true).unwrap();
        store.enable_cache(u64::MAX).unwrap();
        for b in &blocks {
            store.put_cached(std::slice::from_ref(b), None).unwrap();
        }
        // The first to arrive is the latest used.
        assert!(store.get(blocks[0].cid()).unwrap().is_some());
        store.finish_bulk().unwrap();
    }
    let store = RocksStore::open(dir.path(), false).unwrap();
    // Room for two and a bit: the least recently used one goes.
    store.enable_cache(250 * 1024).unwrap();
    let kept: Vec<bool> = blocks.iter().map(|b| store.has(b.cid()).unwrap()).collect();
    assert_eq!(kept, [true, false, true]);
}

#[test]
fn a_kept_block_of_a_peers_drive_stays_the_peers_until_it_becomes_ours() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (PeerId::random(), PeerId::random());
    let (cached, fresh, mine) = (block(1), block(2), block(3));
    let store = RocksStore::open(dir.path(), true).unwrap();
    store.enable_cache(u64::MAX).unwrap();
    let held = |b: &Block| store.get_held(b.cid()).unwrap().map(|(_, h)| h);
    store
        .put_cached(std::slice::from_ref(&cached), Some(alice))
        .unwrap();
    store.put_many(std::slice::from_ref(&mine), true).unwrap();
    // A pin by CID (no owner given) keeps a cached block its owner's; a pin under a
    // peer's folder marks what it brings; ours stays ours.
    store.keep_block(cached.cid(), cached.data(), None).unwrap();
    store
        .keep_block(fresh.cid(), fresh.data(), Some(bob))
        .unwrap();
    store
        .keep_block(mine.cid(), mine.data(), Some(bob))
        .unwrap();
    store.finish_bulk().unwrap();
    assert_eq!(held(&cached), Some(Holding::Fetched(Some(alice))));
    assert_eq!(held(&fresh), Some(Holding::Fetched(Some(bob))));
    assert_eq!(held(&mine), Some(Holding::Own));
    assert_eq!(store.cache_usage().map(|(used, _)| used), Some(0));

    // Written as ours (the drive or an import), it is ours; deleted, its mark goes.
    store.put_many(std::slice::from_ref(&fresh), true).unwrap();
    assert_eq!(held(&fresh), Some(Holding::Own));
    store.delete_many(&[*cached.cid()]).unwrap();
    let key = cached.cid().hash().to_bytes();
    assert_eq!(store.kept_for(&key).unwrap(), None);
}

#[test]
fn a_cached_block_is_held_for_its_owner_until_it_becomes_ours() {
    let dir = tempfile::tempdir().unwrap();
    let alice = PeerId::random();
    let (fetched, mine) = (block(1), block(2));
    {
        let store = RocksStore::open(dir.path(), true).unwrap();
        store.enable_cache(u64::MAX).unwrap();
        store
            .put_cached(std::slice::from_ref(&fetched), Some(alice))
            .unwrap();
        store.put_many(std::slice::from_ref(&mine), true).unwrap();
        let held = |b: &Block| store.get_held(b.cid()).unwrap().map(|(_, h)| h);
        assert_eq!(held(&fetched), Some(Holding::Fetched(Some(alice))));
        assert_eq!(held(&mine), Some(Holding::Own));
        assert_eq!(held(&block(3)), None);
        store.finish_bulk().unwrap();
    }
    // After a restart, with the index loaded or not (the CLI), the owner is known;
    // once the drive claims the block it is ours.
    let store = RocksStore::open(dir.path(), false).unwrap();
    let held = |s: &RocksStore| s.get_held(fetched.cid()).unwrap().map(|(_, h)| h);
    assert_eq!(held(&store), Some(Holding::Fetched(Some(alice))));
    store.enable_cache(u64::MAX).unwrap();
    assert_eq!(held(&store), Some(Holding::Fetched(Some(alice))));
    store
        .put_many(std::slice::from_ref(&fetched), true)
        .unwrap();
    assert_eq!(held(&store), Some(Holding::Own));
}

/// An import pins its roots: a block of it that was only cache must become ours, or
/// the cache's eviction would take it from under the pin.
#[test]
fn an_imported_block_that_was_cached_becomes_ours() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), true).unwrap();
    store.enable_cache(u64::MAX).unwrap();
    let cached = block(1);
    store
        .put_cached(std::slice::from_ref(&cached), Some(PeerId::random()))
        .unwrap();
    let source = crate::store::MemoryBlocks::default();
    source
        .put_many(std::slice::from_ref(&cached), false)
        .unwrap();
    let mut car = Vec::new();
    crate::car::export(&source, cached.cid(), &mut car, &mut |_| {}).unwrap();
    crate::car::import(&store, car.as_slice(), &mut |_| {}).unwrap();
    assert_eq!(store.holding(cached.cid()).unwrap(), Some(Holding::Own));
}

#[test]
fn big_blocks_go_before_small_ones_and_the_order_is_rebuilt_when_it_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let small = |i: u8| Block::hash(cid::Version::V1, RAW, vec![i; 1000]);
    let blocks = [small(1), block(2), small(3), block(4)];
    {
        let store = RocksStore::open(dir.path(), true).unwrap();
        store.enable_cache(u64::MAX).unwrap();
        for b in &blocks {
            store.put_cached(std::slice::from_ref(b), None).unwrap();
        }
        // Read after it arrived: the newer big block goes first.
        assert!(store.get(blocks[1].cid()).unwrap().is_some());
        store.finish_bulk().unwrap();
        assert_eq!(store.cache_usage(), Some((2000 + 200 * 1024, u64::MAX)));
        // The order of use lost (a repo from before it was kept on disk).
        let ages: Vec<_> = store
            .db
            .iterator_cf(store.cf(CF_CACHE_AGE), IteratorMode::Start)
            .map(|item| item.unwrap().0)
            .collect();
        assert_eq!(ages.len(), 4);
        for key in ages {
            store.db.delete_cf(store.cf(CF_CACHE_AGE), key).unwrap();
        }
        store.finish_bulk().unwrap();
    }
    let store = RocksStore::open(dir.path(), false).unwrap();
    // Room for one big block and the small ones.
    store.enable_cache(150 * 1024).unwrap();
    let kept: Vec<bool> = blocks.iter().map(|b| store.has(b.cid()).unwrap()).collect();
    assert_eq!(kept, [true, true, true, false]);
    // Then room for none of the big ones: the older small one goes after them.
    drop(store);
    let store = RocksStore::open(dir.path(), false).unwrap();
    store.enable_cache(1500).unwrap();
    let kept: Vec<bool> = blocks.iter().map(|b| store.has(b.cid()).unwrap()).collect();
    assert_eq!(kept, [false, false, true, false]);
    assert_eq!(store.cache_usage(), Some((1000, 1500)));
}

#[test]
fn evicted_blocks_stay_garbage_through_compactions_until_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), true).unwrap();
    store.enable_cache(u64::MAX).unwrap();
    let blocks: Vec<Block> = (1..=40).map(block).collect();
    // Eight blob files: collecting in ordinary compactions would rewrite the oldest.
    for some in blocks.chunks(5) {
        store.put_cached(some, None).unwrap();
        store.finish_bulk().unwrap();
    }
    // Every other block used since: the other half goes, from every file.
    for b in blocks.iter().step_by(2) {
        store.get(b.cid()).unwrap();
    }
    store.finish_bulk().unwrap();
    // Eviction goes a sixteenth below the cap: room for twenty.
    store.enable_cache(2_200_000).unwrap();
    let kept: Vec<&Block> = blocks
        .iter()
        .filter(|b| store.has(b.cid()).unwrap())
        .collect();
    assert_eq!(kept.len(), 20);
    let compact = || {
        let cf = store.cf(CF_BLOCKS);
        store.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    };
    compact();
    let (garbage, size) = store.blob_garbage().unwrap();
    assert!(garbage >= 20 * 100 * 1024, "{garbage} of {size}");
    // An ordinary compaction copies no live blob to collect it.
    compact();
    assert_eq!(store.blob_garbage().unwrap(), (garbage, size));
    assert!(!store.reclaim_if_wasteful(size + 1).unwrap());
    assert!(store.reclaim_if_wasteful(1).unwrap());
    let (after, smaller) = store.blob_garbage().unwrap();
    assert_eq!(after, 0);
    assert!(smaller <= size - garbage, "{smaller} of {size}");
    for b in kept {
        assert_eq!(store.get(b.cid()).unwrap().as_deref(), Some(b.data()));
    }
}
