//! HAMT-sharded directories (UnixFS HAMTShard), exact to what Kubo and the JS importer
//! write: murmur3-x64-64 of the name, fanout 256 (one byte of hash per level), link names
//! = two upper-case hex digits of the slot followed by the entry name (the digits alone
//! for a sub-shard), bitfield big-endian without leading zero bytes, metadata only on
//! the root shard.
//!
//! The shape is canonical: a slot holds a sub-shard exactly when two or more names share
//! its hash prefix. So `insert` and `remove`, which read and rewrite only the nodes on
//! one name's hash path, give the same CID as building the new set from scratch.

use std::collections::BTreeMap;

use cid::Cid;

use super::build::{emit_node, Built, DirEntry};
use super::dagpb::PbLink;
use super::data::{DataType, Metadata, UnixFsData};
use super::node::{check_name, Node, ShardNode};
use super::profile::{ImportOptions, HAMT_FANOUT, HAMT_HASH_MURMUR3};
use super::{load_node, Error, FormatError};
use crate::store::{BlockSink, Blocks};

/// Bytes of hash the HAMT consumes: the first 64 bits of murmur3-x64-128.
const HASH_BYTES: usize = 8;

type Hash = [u8; HASH_BYTES];

/// The hash that places `name` in a HAMT, in the order the levels consume it: the first
/// half (h1) of murmur3-x64-128 with seed 0, most significant byte first. (go-unixfs and
/// the JS importer store it reversed and read it from the end: the same bits.)
pub fn hash_name(name: &[u8]) -> Hash {
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

    fn fanout(self) -> u64 {
        1 << self.bits
    }

    fn max_levels(self) -> u32 {
        (HASH_BYTES as u32 * 8) / self.bits
    }

    /// The slot of a hash at `level`: the level's bits, most significant first. `None`
    /// once the hash is used up (two names with equal 64-bit hashes).
    fn slot(self, hash: &Hash, level: u32) -> Result<usize, Error> {
        let start = level * self.bits;
        if start + self.bits > (HASH_BYTES as u32) * 8 {
            return Err(Error::HashCollision);
        }
        let v = u64::from_be_bytes(*hash);
        Ok(((v << start) >> (64 - self.bits)) as usize)
    }

    fn label(self, slot: usize) -> String {
        format!("{:0width$X}", slot, width = self.label_len)
    }
}

/// What one slot of a shard holds.
#[derive(Clone)]
enum Child {
    Entry(DirEntry),
    Shard(Built),
}

/// A shard node's slots, in slot order.
type Slots = BTreeMap<usize, Child>;

fn malformed(cid: &Cid, what: &'static str) -> Error {
    Error::Malformed {
        cid: *cid,
        source: FormatError::UnixFs(what),
    }
}

/// Reads a shard node's links into slots, checking each label.
fn slots_of(cid: &Cid, shard: &ShardNode, geo: Geometry) -> Result<Slots, Error> {
    let mut slots = Slots::new();
    for link in &shard.links {
        let label = link.name.as_deref().unwrap_or_default();
        let prefix = label
            .get(..geo.label_len)
            .and_then(|p| std::str::from_utf8(p).ok());
        let slot = prefix
            .and_then(|p| usize::from_str_radix(p, 16).ok())
            .filter(|&s| (s as u64) < geo.fanout())
            .ok_or_else(|| malformed(cid, "HAMT link name has no slot label"))?;
        let tsize = link.tsize.unwrap_or(0);
        let child = if label.len() == geo.label_len {
            Child::Shard(Built {
                cid: link.cid,
                tsize,
            })
        } else {
            Child::Entry(DirEntry {
                name: label[geo.label_len..].to_vec(),
                cid: link.cid,
                tsize,
            })
        };
        if slots.insert(slot, child).is_some() {
            return Err(malformed(cid, "two HAMT links in one slot"));
        }
    }
    Ok(slots)
}

/// Writes one shard node for `slots`.
fn emit_shard(
    slots: &Slots,
    meta: Metadata,
    geo: Geometry,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let mut occupied = vec![0u8; (geo.fanout() as usize).div_ceil(8)];
    let last = occupied.len() - 1;
    let mut links = Vec::with_capacity(slots.len());
    for (&slot, child) in slots {
        occupied[last - slot / 8] |= 1 << (slot % 8);
        links.push(match child {
            Child::Entry(e) => {
                let mut name = geo.label(slot).into_bytes();
                name.extend_from_slice(&e.name);
                PbLink::new(e.cid, name, e.tsize)
            }
            Child::Shard(b) => PbLink::new(b.cid, geo.label(slot), b.tsize),
        });
    }
    let first_used = occupied
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(occupied.len());
    let mut data = UnixFsData::new(DataType::HamtShard);
    data.data = Some(occupied[first_used..].to_vec());
    data.fanout = Some(geo.fanout());
    data.hash_type = Some(HAMT_HASH_MURMUR3);
    data.meta = meta;
    emit_node(opts.cid_version, links, &data, sink)
}

/// Builds the shard tree for `entries` (unique names), writing every node to `sink`.
pub fn build(
    entries: Vec<DirEntry>,
    meta: Metadata,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let mut hashed: Vec<(Hash, DirEntry)> = entries
        .into_iter()
        .map(|e| (hash_name(&e.name), e))
        .collect();
    hashed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    build_level(&hashed, 0, meta, Geometry::of(HAMT_FANOUT), opts, sink)
}

fn build_level(
    entries: &[(Hash, DirEntry)],
    level: u32,
    meta: Metadata,
    geo: Geometry,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let mut slots = Slots::new();
    let mut i = 0;
    while i < entries.len() {
        let slot = geo.slot(&entries[i].0, level)?;
        let mut j = i + 1;
        while j < entries.len() && geo.slot(&entries[j].0, level)? == slot {
            j += 1;
        }
        let child = if j - i == 1 {
            Child::Entry(entries[i].1.clone())
        } else {
            Child::Shard(build_level(
                &entries[i..j],
                level + 1,
                Metadata::default(),
                geo,
                opts,
                sink,
            )?)
        };
        slots.insert(slot, child);
        i = j;
    }
    emit_shard(&slots, meta, geo, opts, sink)
}

fn load_shard(blocks: &dyn Blocks, cid: &Cid, fanout: u64) -> Result<ShardNode, Error> {
    match load_node(blocks, cid)? {
        Node::Shard(s) if s.fanout == fanout => Ok(s),
        _ => Err(malformed(
            cid,
            "HAMT sub-shard is not a shard of the same fanout",
        )),
    }
}

/// Adds or replaces `entry`, reading and rewriting only the shards on its hash path.
pub fn insert(
    blocks: &dyn Blocks,
    root_cid: &Cid,
    root: &ShardNode,
    entry: DirEntry,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let geo = Geometry::of(root.fanout);
    let hash = hash_name(&entry.name);
    let mut ctx = Edit {
        blocks,
        geo,
        opts,
        sink,
    };
    ctx.insert_at(root_cid, root, (hash, entry), 0, root.meta)
}

/// Removes `name`; `None` when it is not there. Sub-shards left holding a single entry
/// fold back into their parent, keeping the shape canonical.
pub fn remove(
    blocks: &dyn Blocks,
    root_cid: &Cid,
    root: &ShardNode,
    name: &[u8],
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Option<Built>, Error> {
    let geo = Geometry::of(root.fanout);
    let mut ctx = Edit {
        blocks,
        geo,
        opts,
        sink,
    };
    match ctx.remove_at(root_cid, root, &hash_name(name), name, 0, root.meta)? {
        Removed::NotFound => Ok(None),
        Removed::Shard(b) => Ok(Some(b)),
        Removed::Single(_) => unreachable!("the root shard never folds"),
    }
}

struct Edit<'a> {
    blocks: &'a dyn Blocks,
    geo: Geometry,
    opts: &'a ImportOptions,
    sink: &'a mut dyn BlockSink,
}

enum Removed {
    NotFound,
    /// The shard after the removal.
    Shard(Built),
    /// A sub-shard left with one entry: the parent takes the entry instead.
    Single(DirEntry),
}

impl Edit<'_> {
    fn insert_at(
        &mut self,
        cid: &Cid,
        shard: &ShardNode,
        new: (Hash, DirEntry),
        level: u32,
        meta: Metadata,
    ) -> Result<Built, Error> {
        let mut slots = slots_of(cid, shard, self.geo)?;
        let slot = self.geo.slot(&new.0, level)?;
        let child = match slots.remove(&slot) {
            None => Child::Entry(new.1),
            Some(Child::Entry(old)) if old.name == new.1.name => Child::Entry(new.1),
            Some(Child::Entry(old)) => {
                let mut pair = [(hash_name(&old.name), old), new];
                pair.sort_unstable_by_key(|p| p.0);
                Child::Shard(build_level(
                    &pair,
                    level + 1,
                    Metadata::default(),
                    self.geo,
                    self.opts,
                    self.sink,
                )?)
            }
            Some(Child::Shard(sub)) => {
                let node = load_shard(self.blocks, &sub.cid, self.geo.fanout())?;
                Child::Shard(self.insert_at(
                    &sub.cid,
                    &node,
                    new,
                    level + 1,
                    Metadata::default(),
                )?)
            }
        };
        slots.insert(slot, child);
        emit_shard(&slots, meta, self.geo, self.opts, self.sink)
    }

    fn remove_at(
        &mut self,
        cid: &Cid,
        shard: &ShardNode,
        hash: &Hash,
        name: &[u8],
        level: u32,
        meta: Metadata,
    ) -> Result<Removed, Error> {
        let mut slots = slots_of(cid, shard, self.geo)?;
        let slot = self.geo.slot(hash, level)?;
        match slots.get(&slot) {
            None => return Ok(Removed::NotFound),
            Some(Child::Entry(e)) if e.name != name => return Ok(Removed::NotFound),
            Some(Child::Entry(_)) => {
                slots.remove(&slot);
            }
            Some(Child::Shard(sub)) => {
                let sub_cid = sub.cid;
                let node = load_shard(self.blocks, &sub_cid, self.geo.fanout())?;
                let child = match self.remove_at(
                    &sub_cid,
                    &node,
                    hash,
                    name,
                    level + 1,
                    Metadata::default(),
                )? {
                    Removed::NotFound => return Ok(Removed::NotFound),
                    Removed::Shard(b) => Child::Shard(b),
                    Removed::Single(e) => Child::Entry(e),
                };
                slots.insert(slot, child);
            }
        }
        if level > 0 && slots.len() == 1 {
            if let Some(Child::Entry(e)) = slots.values().next() {
                return Ok(Removed::Single(e.clone()));
            }
        }
        Ok(Removed::Shard(emit_shard(
            &slots, meta, self.geo, self.opts, self.sink,
        )?))
    }
}

/// One change to a sharded directory.
#[derive(Clone, Debug)]
pub enum ShardChange {
    /// Adds the entry, or replaces the one of the same name.
    Set(DirEntry),
    Remove(Vec<u8>),
}

/// Applies `changes` in order to the shard tree at `root_cid`, reading and rewriting only
/// the shards on each name's hash path, and gives the root `meta`. `blocks` must see
/// what `sink` was given (each change reads the shards the one before wrote). The result
/// is the CID a fresh `build` of the resulting set of names gets.
pub fn edit(
    blocks: &dyn Blocks,
    root_cid: &Cid,
    changes: impl IntoIterator<Item = ShardChange>,
    meta: Metadata,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let fanout = match load_node(blocks, root_cid)? {
        Node::Shard(s) => s.fanout,
        _ => return Err(malformed(root_cid, "HAMT root is not a shard")),
    };
    let mut ctx = Edit {
        blocks,
        geo: Geometry::of(fanout),
        opts,
        sink,
    };
    let mut root = *root_cid;
    let mut last = None;
    for change in changes {
        let shard = load_shard(blocks, &root, fanout)?;
        let edited = match change {
            ShardChange::Set(entry) => {
                let hash = hash_name(&entry.name);
                Some(ctx.insert_at(&root, &shard, (hash, entry), 0, meta)?)
            }
            ShardChange::Remove(name) => {
                match ctx.remove_at(&root, &shard, &hash_name(&name), &name, 0, meta)? {
                    Removed::Shard(b) => Some(b),
                    Removed::NotFound => None,
                    Removed::Single(_) => unreachable!("the root shard never folds"),
                }
            }
        };
        if let Some(b) = edited {
            root = b.cid;
            last = Some(b);
        }
    }
    // Every edit wrote the root with `meta`; with none, only the metadata changes.
    match last {
        Some(built) => Ok(built),
        None => {
            let shard = load_shard(blocks, &root, fanout)?;
            let slots = slots_of(&root, &shard, ctx.geo)?;
            emit_shard(&slots, meta, ctx.geo, opts, ctx.sink)
        }
    }
}

/// Finds `name` by following its hash path: one block per level, never a listing.
/// Only an entry named `name` at the end of `name`'s own hash path is returned, so a
/// misplaced entry (which `entries` refuses) is never found here either.
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
        let slot = geo.slot(&hash, level)?;
        match slots_of(&cid, &shard, geo)?.remove(&slot) {
            None => return Ok(None),
            Some(Child::Entry(e)) => return Ok(Some(e).filter(|e| e.name == name)),
            Some(Child::Shard(sub)) => {
                cid = sub.cid;
                shard = load_shard(blocks, &cid, root.fanout)?;
            }
        }
    }
    Ok(None)
}

/// Every entry of the shard tree, in slot order. A shard is anyone's block, so each
/// entry is checked to sit where its name's hash puts it (`checked_slots`): then no
/// name is listed twice, however the links were laid out.
pub fn entries(
    blocks: &dyn Blocks,
    root_cid: &Cid,
    root: &ShardNode,
) -> Result<Vec<DirEntry>, Error> {
    let geo = Geometry::of(root.fanout);
    let mut out = Vec::new();
    collect(blocks, root_cid, root, geo, Position::ROOT, &mut out)?;
    Ok(out)
}

fn collect(
    blocks: &dyn Blocks,
    cid: &Cid,
    shard: &ShardNode,
    geo: Geometry,
    at: Position,
    out: &mut Vec<DirEntry>,
) -> Result<(), Error> {
    if at.level >= geo.max_levels() {
        return Err(malformed(cid, "HAMT deeper than its hash"));
    }
    for (slot, child) in checked_slots(cid, shard, geo, at)? {
        match child {
            Child::Entry(e) => out.push(e),
            Child::Shard(sub) => {
                let node = load_shard(blocks, &sub.cid, geo.fanout())?;
                collect(blocks, &sub.cid, &node, geo, at.below(geo, slot), out)?;
            }
        }
    }
    Ok(())
}

/// Where a shard sits in its tree: its level, and the hash bits of the slots that
/// lead to it from the root.
#[derive(Clone, Copy)]
struct Position {
    level: u32,
    prefix: u64,
}

impl Position {
    const ROOT: Position = Position {
        level: 0,
        prefix: 0,
    };

    fn below(self, geo: Geometry, slot: usize) -> Position {
        Position {
            level: self.level + 1,
            prefix: (self.prefix << geo.bits) | slot as u64,
        }
    }
}

/// `slots_of` for a shard from anyone: every entry's name must be one a filesystem can
/// hold, and its hash must lead through this shard's position to its slot. A name can
/// then sit in one place only, so the same name in two slots (or in a sub-shard linked
/// from two slots) is refused instead of listed twice. The caller keeps `at.level`
/// below `geo.max_levels()`.
fn checked_slots(
    cid: &Cid,
    shard: &ShardNode,
    geo: Geometry,
    at: Position,
) -> Result<Slots, Error> {
    let slots = slots_of(cid, shard, geo)?;
    let used = (at.level + 1) * geo.bits;
    for (&slot, child) in &slots {
        let Child::Entry(e) = child else { continue };
        check_name(&e.name).map_err(|source| Error::Malformed { cid: *cid, source })?;
        let leads = u64::from_be_bytes(hash_name(&e.name)) >> (64 - used);
        if leads != (at.prefix << geo.bits) | slot as u64 {
            return Err(malformed(
                cid,
                "HAMT entry is not in the slot its name hashes to",
            ));
        }
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, RAW};
    use crate::store::MemoryBlocks;
    use crate::unixfs::Profile;

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
        assert_eq!(g.slot(&h, 0).unwrap(), 0xab);
        assert_eq!(g.slot(&h, 1).unwrap(), 0xcd);
        assert!(g.slot(&h, 8).is_err());
        assert_eq!(g.label(0xab), "AB");
        let g16 = Geometry::of(16);
        assert_eq!(g16.slot(&h, 1).unwrap(), 0xb);
        assert_eq!(g16.label(3), "3");
    }

    fn entry(i: usize, version: u32) -> DirEntry {
        let leaf = Block::hash(cid::Version::V1, RAW, format!("{i}.{version}").into_bytes());
        DirEntry {
            name: format!("entry-{i}").into_bytes(),
            cid: *leaf.cid(),
            tsize: leaf.len(),
        }
    }

    fn shard_at(store: &MemoryBlocks, root: &Built) -> ShardNode {
        match load_node(store, &root.cid).unwrap() {
            Node::Shard(s) => s,
            other => panic!("root is not a shard: {other:?}"),
        }
    }

    fn remove_entry(store: &MemoryBlocks, root: &Built, i: usize) -> Result<Option<Built>, Error> {
        let opts = Profile::V1_2025.options();
        remove(
            store,
            &root.cid,
            &shard_at(store, root),
            &entry(i, 0).name,
            &opts,
            &mut &*store,
        )
    }

    fn built_from_scratch(
        store: &MemoryBlocks,
        entries: &BTreeMap<usize, DirEntry>,
        meta: Metadata,
    ) -> Built {
        build(
            entries.values().cloned().collect(),
            meta,
            &Profile::V1_2025.options(),
            &mut &*store,
        )
        .unwrap()
    }

    /// Any sequence of edits lands on the CID a fresh build of the same set gets.
    #[test]
    fn edits_along_the_hash_path_equal_a_fresh_build() {
        let store = MemoryBlocks::default();
        let opts = Profile::V1_2025.options();
        let meta = Metadata {
            mode: Some(0o750),
            mtime: None,
        };
        let mut set: BTreeMap<usize, DirEntry> = (0..600).map(|i| (i, entry(i, 0))).collect();
        let mut root = built_from_scratch(&store, &set, meta);
        // A deterministic walk of inserts, replacements and removals, some of them misses.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for step in 0..1500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % 900) as usize;
            if x.is_multiple_of(3) {
                let removed = remove_entry(&store, &root, i).unwrap();
                assert_eq!(
                    removed.is_some(),
                    set.remove(&i).is_some(),
                    "step {step}: presence of {i}"
                );
                if let Some(b) = removed {
                    root = b;
                }
            } else {
                let e = entry(i, step % 2);
                set.insert(i, e.clone());
                root = insert(
                    &store,
                    &root.cid,
                    &shard_at(&store, &root),
                    e,
                    &opts,
                    &mut &store,
                )
                .unwrap();
            }
            if step % 100 == 0 || step == 1499 {
                assert_eq!(root, built_from_scratch(&store, &set, meta), "step {step}");
            }
        }
        // And down to a handful of names: deep sub-shards fold back up.
        for i in set.keys().copied().collect::<Vec<_>>().into_iter().skip(3) {
            root = remove_entry(&store, &root, i).unwrap().unwrap();
            set.remove(&i);
        }
        assert_eq!(root, built_from_scratch(&store, &set, meta));
    }

    /// A root shard with these (slot, link name after the label, CID) links, by hand.
    fn hand_made(store: &MemoryBlocks, links: &[(usize, &[u8], Cid)]) -> (Cid, ShardNode) {
        let geo = Geometry::of(HAMT_FANOUT);
        let mut slots = Slots::new();
        for (slot, name, cid) in links {
            let child = if name.is_empty() {
                Child::Shard(Built {
                    cid: *cid,
                    tsize: 1,
                })
            } else {
                Child::Entry(DirEntry {
                    name: name.to_vec(),
                    cid: *cid,
                    tsize: 1,
                })
            };
            slots.insert(*slot, child);
        }
        let opts = Profile::V1_2025.options();
        let built = emit_shard(&slots, Metadata::default(), geo, &opts, &mut &*store).unwrap();
        (built.cid, shard_at(store, &built))
    }

    fn listed(
        store: &MemoryBlocks,
        (cid, shard): &(Cid, ShardNode),
    ) -> Result<Vec<Vec<u8>>, Error> {
        Ok(entries(store, cid, shard)?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }

    #[test]
    fn a_listed_entry_sits_where_its_hash_puts_it() {
        let store = MemoryBlocks::default();
        let leaf = entry(0, 0).cid;
        let slot_of = |name: &[u8]| hash_name(name)[0] as usize;
        let (a, b) = (&b"a"[..], &b"hello"[..]);
        let good = hand_made(&store, &[(slot_of(a), a, leaf), (slot_of(b), b, leaf)]);
        assert_eq!(listed(&store, &good).unwrap().len(), 2);

        // One name in two slots: listed, it would be two entries of one name.
        let other = (slot_of(a) + 1) % 256;
        let twice = hand_made(&store, &[(slot_of(a), a, leaf), (other, a, leaf)]);
        assert!(listed(&store, &twice).is_err());
        // Looking it up still finds the one its hash leads to.
        let found = lookup(&store, &twice.0, &twice.1, a).unwrap();
        assert_eq!(found.map(|e| e.name), Some(a.to_vec()));

        // A sub-shard linked from two slots: its entries are right under one at most.
        let sub_slot = hash_name(a)[1] as usize;
        let (sub, _) = hand_made(&store, &[(sub_slot, a, leaf)]);
        let shared = hand_made(&store, &[(slot_of(a), b"", sub), (other, b"", sub)]);
        assert!(listed(&store, &shared).is_err());
        let once = hand_made(&store, &[(slot_of(a), b"", sub)]);
        assert_eq!(listed(&store, &once).unwrap(), vec![a.to_vec()]);

        // Names no directory can hold are refused, wherever they hash.
        for bad in [&b"."[..], b"..", b"a/b", b"nul\0"] {
            let shard = hand_made(&store, &[(slot_of(bad), bad, leaf)]);
            assert!(listed(&store, &shard).is_err(), "{bad:?}");
        }
    }
}
