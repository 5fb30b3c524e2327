//! HAMT-sharded directories (UnixFS HAMTShard), exact to what Kubo and the JS importer
//! write: murmur3-x64-64 of the name, fanout 256 (one byte of hash per level), link names
//! = two upper-case hex digits of the slot followed by the entry name (the digits alone
//! for a sub-shard), bitfield big-endian without leading zero bytes, metadata only on
//! the root shard.
//!
//! The shape is canonical: a slot holds a sub-shard exactly when two or more names share
//! its hash prefix. So `insert` and `remove`, which read and rewrite only the nodes on
//! one name's hash path, give the same CID as building the new set from scratch.

use std::collections::{BTreeMap, HashMap};

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
/// name is listed twice, however the links were laid out. A tree of more than `max`
/// entries, or shards, fails with `TooManyEntries` before more are held.
pub fn entries(
    blocks: &dyn Blocks,
    root_cid: &Cid,
    root: &ShardNode,
    max: usize,
) -> Result<Vec<DirEntry>, Error> {
    let walk = Walk {
        blocks,
        geo: Geometry::of(root.fanout),
        dir: *root_cid,
        max,
    };
    let mut shards = walk.load_tree(root)?;
    let mut out = Vec::new();
    walk.collect(root_cid, root, Position::ROOT, &mut shards, &mut out)?;
    Ok(out)
}

/// Sub-shards asked for at once, at most, while a level is loaded.
const LEVEL_AHEAD: usize = 1024;

/// A walk of one directory's shard tree.
struct Walk<'a> {
    blocks: &'a dyn Blocks,
    geo: Geometry,
    /// The directory (its root shard), named in errors.
    dir: Cid,
    /// Most entries, and most shards, the walk holds.
    max: usize,
}

impl Walk<'_> {
    fn too_many(&self) -> Error {
        Error::TooManyEntries {
            cid: self.dir,
            max: self.max,
        }
    }

    /// Every shard below the root, loaded a level at a time, each level's sub-shards
    /// asked for together (`LEVEL_AHEAD` at a time) before the first is read: a wide
    /// directory from a peer costs a round trip per level, where a walk shard by shard
    /// cost one per shard with sub-shards (a 10,000-entry directory has some 250 of
    /// them). Each shard is checked where it sits as it loads, so a malformed tree fails
    /// before the rest of it is fetched.
    fn load_tree(&self, root: &ShardNode) -> Result<HashMap<Cid, ShardNode>, Error> {
        let geo = self.geo;
        let subs = |cid: &Cid, shard: &ShardNode, at: Position| -> Result<Vec<_>, Error> {
            Ok(checked_slots(cid, shard, geo, at)?
                .into_iter()
                .filter_map(|(slot, c)| match c {
                    Child::Shard(sub) => Some((sub.cid, at.below(geo, slot))),
                    Child::Entry(_) => None,
                })
                .collect())
        };
        let mut shards = HashMap::new();
        let mut level = subs(&self.dir, root, Position::ROOT)?;
        // Below the root's level, as deep as a hash reaches.
        for _ in 1..geo.max_levels() {
            let mut next = Vec::new();
            for chunk in level.chunks(LEVEL_AHEAD) {
                let cids: Vec<Cid> = chunk.iter().map(|(cid, _)| *cid).collect();
                self.blocks.ahead(&cids);
                for &(cid, at) in chunk {
                    // A shard linked twice is loaded once (and refused by `collect`).
                    if shards.contains_key(&cid) {
                        continue;
                    }
                    if shards.len() >= self.max {
                        return Err(self.too_many());
                    }
                    let shard = load_shard(self.blocks, &cid, geo.fanout())?;
                    next.extend(subs(&cid, &shard, at)?);
                    shards.insert(cid, shard);
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        Ok(shards)
    }

    fn collect(
        &self,
        cid: &Cid,
        shard: &ShardNode,
        at: Position,
        loaded: &mut HashMap<Cid, ShardNode>,
        out: &mut Vec<DirEntry>,
    ) -> Result<(), Error> {
        if at.level >= self.geo.max_levels() {
            return Err(malformed(cid, "HAMT deeper than its hash"));
        }
        for (slot, child) in checked_slots(cid, shard, self.geo, at)? {
            match child {
                Child::Entry(e) => {
                    if out.len() >= self.max {
                        return Err(self.too_many());
                    }
                    out.push(e)
                }
                Child::Shard(sub) => {
                    let node = match loaded.remove(&sub.cid) {
                        Some(node) => node,
                        None => load_shard(self.blocks, &sub.cid, self.geo.fanout())?,
                    };
                    let below = at.below(self.geo, slot);
                    self.collect(&sub.cid, &node, below, loaded, out)?;
                }
            }
        }
        Ok(())
    }
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
mod tests;
