//! DAG-PB decoding of arbitrary bytes: never panics, and what decodes re-encodes to a
//! node that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerfs::unixfs::dagpb::PbNode;

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = PbNode::decode(data) {
        let again = PbNode::decode(&node.encode()).expect("our own encoding decodes");
        assert_eq!(again, node);
        assert_eq!(node.encode().len() as u64, node.encoded_len());
    }
});
