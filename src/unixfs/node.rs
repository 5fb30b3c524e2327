//! A decoded UnixFS node: what a block means as a file, directory, shard or symlink.

use cid::Cid;

use super::dagpb::{PbLink, PbNode};
use super::data::{DataType, Metadata, UnixFsData};
use super::profile::HAMT_HASH_MURMUR3;
use super::FormatError;
use crate::block::{DAG_PB, RAW};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(FileNode),
    Directory(DirNode),
    Shard(ShardNode),
    Symlink { target: Vec<u8>, meta: Metadata },
}

/// A file or a piece of one: its own bytes, then its children in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileNode {
    pub inline: Vec<u8>,
    /// Each child with the number of file bytes under it.
    pub children: Vec<(Cid, u64)>,
    pub filesize: u64,
    pub meta: Metadata,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirNode {
    pub links: Vec<PbLink>,
    pub meta: Metadata,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardNode {
    pub links: Vec<PbLink>,
    /// Occupied slots, big-endian, leading zero bytes dropped.
    pub bitfield: Vec<u8>,
    pub fanout: u64,
    pub meta: Metadata,
}

impl Node {
    /// Interprets a block. The bytes are trusted to match `cid` (the store checks that);
    /// their content is not: anything malformed is an error.
    pub fn decode(cid: &Cid, bytes: Vec<u8>) -> Result<Node, FormatError> {
        match cid.codec() {
            RAW => {
                let filesize = bytes.len() as u64;
                Ok(Node::File(FileNode {
                    inline: bytes,
                    children: Vec::new(),
                    filesize,
                    meta: Metadata::default(),
                }))
            }
            DAG_PB => Node::from_pb(PbNode::decode(&bytes)?),
            other => Err(FormatError::Codec(other)),
        }
    }

    fn from_pb(pb: PbNode) -> Result<Node, FormatError> {
        let data = pb
            .data
            .as_deref()
            .ok_or(FormatError::UnixFs("DAG-PB node without UnixFS Data"))?;
        let d = UnixFsData::decode(data)?;
        let meta = d.meta;
        match d.kind {
            DataType::File | DataType::Raw => {
                if d.blocksizes.len() != pb.links.len() {
                    return Err(FormatError::UnixFs("blocksizes do not match the links"));
                }
                let inline = d.data.unwrap_or_default();
                let children: Vec<(Cid, u64)> =
                    pb.links.iter().map(|l| l.cid).zip(d.blocksizes).collect();
                let summed = children
                    .iter()
                    .try_fold(inline.len() as u64, |acc, (_, n)| acc.checked_add(*n))
                    .ok_or(FormatError::UnixFs("file size overflows"))?;
                if let Some(fs) = d.filesize {
                    if fs != summed && !children.is_empty() {
                        return Err(FormatError::UnixFs("filesize does not match its parts"));
                    }
                }
                Ok(Node::File(FileNode {
                    inline,
                    children,
                    filesize: summed,
                    meta,
                }))
            }
            DataType::Directory => {
                check_dir_names(&pb.links)?;
                Ok(Node::Directory(DirNode {
                    links: pb.links,
                    meta,
                }))
            }
            DataType::HamtShard => {
                if d.hash_type != Some(HAMT_HASH_MURMUR3) {
                    return Err(FormatError::UnixFs(
                        "HAMT hash function is not murmur3-x64-64",
                    ));
                }
                let fanout = d
                    .fanout
                    .ok_or(FormatError::UnixFs("HAMT without a fanout"))?;
                if !fanout.is_power_of_two() || !(2..=256).contains(&fanout) {
                    return Err(FormatError::UnixFs(
                        "HAMT fanout is not a power of two up to 256",
                    ));
                }
                Ok(Node::Shard(ShardNode {
                    links: pb.links,
                    bitfield: d.data.unwrap_or_default(),
                    fanout,
                    meta,
                }))
            }
            DataType::Symlink => {
                if !pb.links.is_empty() {
                    return Err(FormatError::UnixFs("symlink with links"));
                }
                Ok(Node::Symlink {
                    target: d.data.unwrap_or_default(),
                    meta,
                })
            }
            DataType::Metadata => Err(FormatError::UnixFs(
                "UnixFS Metadata nodes are not supported",
            )),
        }
    }

    pub fn meta(&self) -> Metadata {
        match self {
            Node::File(f) => f.meta,
            Node::Directory(d) => d.meta,
            Node::Shard(s) => s.meta,
            Node::Symlink { meta, .. } => *meta,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Directory(_) | Node::Shard(_))
    }
}

/// Refuses a directory entry name that no filesystem can hold: empty, `.`, `..`, or
/// holding a `/` or a NUL byte. A reader that took one would write outside the
/// directory (`..`, `a/b`) or show an entry nothing can open.
pub fn check_name(name: &[u8]) -> Result<(), FormatError> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0);
    if bad {
        return Err(FormatError::UnixFs(
            "an entry name is empty, \".\" or \"..\", or holds \"/\" or NUL",
        ));
    }
    Ok(())
}

/// A flat directory's names: each one a name (`check_name`), each at most once, so
/// that a name means one entry to every reader (two entries `x`, a symlink and then a
/// file, would make a writer of the tree write through the first).
///
/// Sorted order is not required: the DAG-PB spec makes sorting the encoder's duty and
/// says decoders must not reorder, and unsorted directories exist (older go-merkledag,
/// hand-made DAGs). Order changes no name's meaning; uniqueness is what matters.
fn check_dir_names(links: &[PbLink]) -> Result<(), FormatError> {
    let mut names = Vec::with_capacity(links.len());
    for link in links {
        let name = link.name.as_deref().unwrap_or_default();
        check_name(name)?;
        names.push(name);
    }
    // Every encoder we know of sorts: then neighbours are all there is to compare.
    if !names.is_sorted() {
        names.sort_unstable();
    }
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(FormatError::UnixFs("a directory names one entry twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::cid_of;
    use crate::unixfs::data::UnixFsData;

    fn dir_with(names: &[&[u8]]) -> Result<Node, FormatError> {
        let child = cid_of(cid::Version::V1, RAW, b"x");
        let pb = PbNode {
            links: names.iter().map(|n| PbLink::new(child, *n, 1)).collect(),
            data: Some(UnixFsData::new(DataType::Directory).encode()),
        };
        let cid = cid_of(cid::Version::V1, DAG_PB, &pb.encode());
        Node::decode(&cid, pb.encode())
    }

    #[test]
    fn a_directory_holds_each_name_once_in_any_order() {
        assert!(dir_with(&[b"a", b"b", b"c"]).is_ok());
        assert!(dir_with(&[b"c", b"a", b"b"]).is_ok(), "unsorted is fine");
        assert!(dir_with(&[]).is_ok());
        for twice in [
            &[&b"a"[..], b"a"][..],
            &[b"b", b"a", b"b"],
            &[b"a", b"b", b"b"],
        ] {
            assert_eq!(
                dir_with(twice),
                Err(FormatError::UnixFs("a directory names one entry twice")),
                "{twice:?}"
            );
        }
    }

    #[test]
    fn names_no_filesystem_can_hold_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"nul\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
            assert!(dir_with(&[b"fine", bad]).is_err(), "{bad:?}");
        }
        for good in [&b"..."[..], b".hidden", b"a b", b"\xff\xfe", b"a\\b"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        // A link without a name is as empty as an empty one.
        let child = cid_of(cid::Version::V1, RAW, b"x");
        let pb = PbNode {
            links: vec![PbLink {
                cid: child,
                name: None,
                tsize: None,
            }],
            data: Some(UnixFsData::new(DataType::Directory).encode()),
        };
        let cid = cid_of(cid::Version::V1, DAG_PB, &pb.encode());
        assert!(Node::decode(&cid, pb.encode()).is_err());
    }
}
