//! CAR reading and importing of arbitrary bytes: never panics, never keeps a block
//! from a CAR that fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerfs::car;
use peerfs::store::MemoryBlocks;

fuzz_target!(|data: &[u8]| {
    let store = MemoryBlocks::default();
    if car::import(&store, data, &mut |_| {}).is_err() {
        assert!(store.is_empty(), "a failed import keeps nothing");
    }
});
