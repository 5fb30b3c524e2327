//! UnixFS decoding of arbitrary bytes, as a Data message and as whole dag-pb and raw
//! blocks: never panics; decoded Data re-encodes to an equal message.
#![no_main]

use cid::Cid;
use libfuzzer_sys::fuzz_target;
use peerfs::block::{cid_of, DAG_PB, RAW};
use peerfs::unixfs::data::UnixFsData;
use peerfs::unixfs::Node;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = UnixFsData::decode(data) {
        let again = UnixFsData::decode(&d.encode()).expect("our own encoding decodes");
        assert_eq!(again.kind, d.kind);
        assert_eq!(again.meta, d.meta);
        assert_eq!(again.blocksizes, d.blocksizes);
    }
    let pb: Cid = cid_of(cid::Version::V1, DAG_PB, data);
    let _ = Node::decode(&pb, data.to_vec());
    let raw: Cid = cid_of(cid::Version::V1, RAW, data);
    let _ = Node::decode(&raw, data.to_vec());
});
