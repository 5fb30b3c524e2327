//! HAMT-sharded directories (UnixFS HAMTShard), exact to what Kubo and the JS importer
//! write: murmur3-x64-64 of the name, fanout 256 (one hash byte per level), link names
//! = two upper-case hex digits of the slot followed by the entry name (the digits alone
//! for a sub-shard), bitfield big-endian without leading zero bytes, metadata only on
//! the root shard.
//!
//! The shape is canonical: a slot holds a sub-shard exactly when two or more names share
//! its hash prefix, so building from scratch and editing in place give the same CID.

use cid::Cid;

use super::build::{emit_node, Built, DirEntry};
use super::dagpb::PbLink;
use super::data::{DataType, Metadata, UnixFsData};
use super::node::{Node, ShardNode};
use super::profile::{ImportOptions, HAMT_FANOUT, HAMT_HASH_MURMUR3};
use super::{load_node, Error, FormatError};
use crate::store::{BlockSink, Blocks};

/// Bytes of hash the HAMT consumes: the first 64 bits of murmur3-x64-128.
const HASH_BYTES: usize = 8;

/// The hash that places `name` in a HAMT, in the order the levels consume it: the first
/// half (h1) of murmur3-x64-128 with seed 0, most significant byte first. (go-unixfs and
/// the JS importer store it reversed and read it from the end: the same bits.)
pub fn hash_name(name: &[u8]) -> [u8; HASH_BYTES] {
    let h = fastmurmur3::murmur3_x64_128(name, 0);
    (h as u64).to_be_bytes()
}

/// Geometry of a shard: bits of hash per level and width of the hex slot label.
#[derive(Clone, Copy)]
struct Geometry {
    bits: u32,
    label_len: usize,
}

impl Geometry {
    fn of(fanout: u64) -> Geometry {
        let bits = fanout.trailing_zeros();
        let label_len = format!("{:X}", fanout - 1).len();
        Geometry { bits, label_len }
    }

    fn max_levels(self) -> u32 {
        (HASH_BYTES as u32 * 8) / self.bits
    }

    /// The slot of a hash at `level`: the level's bits, most significant first.
    fn slot(self, hash: &[u8; HASH_BYTES], level: u32) -> Option<usize> {
        let start = level * self.bits;
        if start + self.bits > (HASH_BYTES as u32) * 8 {
            return None;
        }
        let v = u64::from_be_bytes(*hash);
        Some(((v << start) >> (64 - self.bits)) as usize)
    }

    fn label(self, slot: usize) -> String {
        format!("{:0width$X}", slot, width = self.label_len)
    }
}

struct Hashed {
    hash: [u8; HASH_BYTES],
    entry: DirEntry,
}

/// Builds the shard tree for `entries` (unique names), writing every node to `sink`.
pub fn build(
    entries: Vec<DirEntry>,
    meta: Metadata,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let mut hashed: Vec<Hashed> = entries
        .into_iter()
        .map(|e| Hashed {
            hash: hash_name(&e.name),
            entry: e,
        })
        .collect();
    hashed.sort_unstable_by(|a, b| {
        a.hash
            .cmp(&b.hash)
            .then_with(|| a.entry.name.cmp(&b.entry.name))
    });
    build_level(&hashed, 0, meta, Geometry::of(HAMT_FANOUT), opts, sink)
}

fn build_level(
    entries: &[Hashed],
    level: u32,
    meta: Metadata,
    geo: Geometry,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let mut links = Vec::new();
    let mut occupied = vec![0u8; (HAMT_FANOUT as usize).div_ceil(8)];
    let mut i = 0;
    while i < entries.len() {
        let slot = geo
            .slot(&entries[i].hash, level)
            .ok_or(Error::HashCollision)?;
        let mut j = i + 1;
        while j < entries.len() && geo.slot(&entries[j].hash, level) == Some(slot) {
            j += 1;
        }
        let last = occupied.len() - 1;
        occupied[last - slot / 8] |= 1 << (slot % 8);
        let link = if j - i == 1 {
            let e = &entries[i].entry;
            let mut name = geo.label(slot).into_bytes();
            name.extend_from_slice(&e.name);
            PbLink::new(e.cid, name, e.tsize)
        } else {
            let sub = build_level(
                &entries[i..j],
                level + 1,
                Metadata::default(),
                geo,
                opts,
                sink,
            )?;
            PbLink::new(sub.cid, geo.label(slot), sub.tsize)
        };
        links.push(link);
        i = j;
    }
    let first_used = occupied
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(occupied.len());
    let mut data = UnixFsData::new(DataType::HamtShard);
    data.data = Some(occupied[first_used..].to_vec());
    data.fanout = Some(HAMT_FANOUT);
    data.hash_type = Some(HAMT_HASH_MURMUR3);
    data.meta = meta;
    emit_node(opts.cid_version, links, &data, sink)
}

/// A directory entry found in a shard: its name without the slot label.
fn entry_of(link: &PbLink, geo: Geometry) -> Option<DirEntry> {
    let label = link.name.as_deref()?;
    let name = label.get(geo.label_len..)?;
    Some(DirEntry {
        name: name.to_vec(),
        cid: link.cid,
        tsize: link.tsize.unwrap_or(0),
    })
}

fn check_label(link: &PbLink, geo: Geometry, cid: &Cid) -> Result<bool, Error> {
    let label = link.name.as_deref().unwrap_or_default();
    let prefix = label
        .get(..geo.label_len)
        .filter(|p| p.iter().all(u8::is_ascii_hexdigit));
    if prefix.is_none() {
        return Err(Error::Malformed {
            cid: *cid,
            source: FormatError::UnixFs("HAMT link name has no slot label"),
        });
    }
    Ok(label.len() == geo.label_len)
}

/// Finds `name` by following its hash path: one block per level, never a listing.
pub fn lookup(
    blocks: &dyn Blocks,
    root_cid: &Cid,
    root: &ShardNode,
    name: &[u8],
) -> Result<Option<DirEntry>, Error> {
    let hash = hash_name(name);
    let geo = Geometry::of(root.fanout);
    let mut cid = *root_cid;
    let mut shard = root.clone();
    for level in 0..geo.max_levels() {
        let Some(slot) = geo.slot(&hash, level) else {
            break;
        };
        let label = geo.label(slot);
        let Some(link) = shard.links.iter().find(|l| {
            l.name
                .as_deref()
                .is_some_and(|n| n.starts_with(label.as_bytes()))
        }) else {
            return Ok(None);
        };
        if !check_label(link, geo, &cid)? {
            return Ok(entry_of(link, geo).filter(|e| e.name == name));
        }
        cid = link.cid;
        shard = match load_node(blocks, &cid)? {
            Node::Shard(s) if s.fanout == root.fanout => s,
            _ => {
                return Err(Error::Malformed {
                    cid,
                    source: FormatError::UnixFs("HAMT sub-shard is not a shard"),
                })
            }
        };
    }
    Ok(None)
}

/// Every entry of the shard tree, in slot order.
pub fn entries(
    blocks: &dyn Blocks,
    root_cid: &Cid,
    root: &ShardNode,
) -> Result<Vec<DirEntry>, Error> {
    let geo = Geometry::of(root.fanout);
    let mut out = Vec::new();
    collect(blocks, root_cid, root, geo, 0, &mut out)?;
    Ok(out)
}

fn collect(
    blocks: &dyn Blocks,
    cid: &Cid,
    shard: &ShardNode,
    geo: Geometry,
    level: u32,
    out: &mut Vec<DirEntry>,
) -> Result<(), Error> {
    if level >= geo.max_levels() {
        return Err(Error::Malformed {
            cid: *cid,
            source: FormatError::UnixFs("HAMT deeper than its hash"),
        });
    }
    for link in &shard.links {
        if check_label(link, geo, cid)? {
            match load_node(blocks, &link.cid)? {
                Node::Shard(sub) if sub.fanout == shard.fanout => {
                    collect(blocks, &link.cid, &sub, geo, level + 1, out)?
                }
                _ => {
                    return Err(Error::Malformed {
                        cid: link.cid,
                        source: FormatError::UnixFs("HAMT sub-shard is not a shard"),
                    })
                }
            }
        } else if let Some(e) = entry_of(link, geo) {
            out.push(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(g.slot(&h, 0), Some(0xab));
        assert_eq!(g.slot(&h, 1), Some(0xcd));
        assert_eq!(g.slot(&h, 8), None);
        assert_eq!(g.label(0xab), "AB");
        let g16 = Geometry::of(16);
        assert_eq!(g16.slot(&h, 1), Some(0xb));
        assert_eq!(g16.label(3), "3");
    }
}
