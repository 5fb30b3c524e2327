//! The trustless answers: a raw block, or a CAR of the blocks that lead along the path
//! and then the DAG at its end, in the scope asked for. The client checks every block
//! against its CID, so these are the answers an IPFS client can take from anyone.

use std::io::Write;
use std::sync::{Arc, Mutex};

use cid::Cid;

use super::access::Access;
use super::request::{Scope, Wanted};
use crate::block::Block;
use crate::car::{CarError, CarWriter};
use crate::store::{Blocks, StoreError};
use crate::unixfs::{self, list_at_most, resolve, Node, LISTING_LIMIT};

/// Multihash code of an identity hash: the "digest" is the data itself.
const IDENTITY: u64 = 0x00;

/// Block `cid`'s bytes.
pub fn block(blocks: &dyn Blocks, cid: &Cid) -> Result<Vec<u8>, unixfs::Error> {
    View::new(blocks)
        .get(cid)?
        .ok_or(unixfs::Error::Missing(*cid))
}

/// Blocks as they were read, in order.
pub type Trail = Vec<(Cid, Vec<u8>)>;

/// Where a path led: the end's CID and node, and the blocks read on the way.
pub struct Walked {
    pub end: Cid,
    pub node: Node,
    pub trail: Trail,
}

/// Follows the path of `wanted`, keeping every block it reads (they go first in the
/// CAR, so a client can check each step).
pub fn walk(blocks: &dyn Blocks, wanted: &Wanted) -> Result<Walked, unixfs::Error> {
    let trail = View::recording(blocks);
    let (end, node) = resolve(&trail, &wanted.root, &wanted.path.join("/"))?;
    Ok(Walked {
        end,
        node,
        trail: trail.taken(),
    })
}

/// Writes the CAR for `wanted`, whose path `walk` followed.
pub fn write_car(
    access: &Arc<dyn Access>,
    wanted: &Wanted,
    walked: &Walked,
    out: &mut dyn Write,
) -> Result<(), CarError> {
    let blocks = access.blocks();
    let mut car = CarWriter::start(out, &wanted.root)?;
    for (cid, data) in &walked.trail {
        car.block(cid, data)?;
    }
    let (cid, node) = (&walked.end, &walked.node);
    match (wanted.scope, node) {
        (Scope::All, _) | (Scope::Entity, Node::File(_)) => {
            car.dag(&View::new(blocks), cid, &mut |_| {})?
        }
        (Scope::Entity, Node::Shard(_)) => {
            // A sharded directory's own blocks are the ones listing it reads.
            let shards = View::recording(blocks);
            list_at_most(&shards, cid, node, LISTING_LIMIT)?;
            car.block(cid, &block(blocks, cid)?)?;
            for (cid, data) in shards.taken() {
                car.block(&cid, &data)?;
            }
        }
        _ => car.block(cid, &block(blocks, cid)?)?,
    }
    Ok(())
}

/// A read-only view of a store that knows identity CIDs (their bytes are in the CID;
/// the gateway specs' probe CID is one), and can remember each block read through it.
pub struct View<'b> {
    inner: &'b dyn Blocks,
    taken: Option<Mutex<Trail>>,
}

impl<'b> View<'b> {
    pub fn new(inner: &'b dyn Blocks) -> Self {
        View { inner, taken: None }
    }

    fn recording(inner: &'b dyn Blocks) -> Self {
        View {
            inner,
            taken: Some(Mutex::new(Vec::new())),
        }
    }

    /// The blocks read, in order.
    fn taken(self) -> Trail {
        self.taken
            .map(|t| t.into_inner().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default()
    }
}

impl Blocks for View<'_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let found = if cid.hash().code() == IDENTITY {
            Some(cid.hash().digest().to_vec())
        } else {
            self.inner.get(cid)?
        };
        if let (Some(taken), Some(data)) = (&self.taken, &found) {
            let mut taken = taken.lock().unwrap_or_else(|e| e.into_inner());
            taken.push((*cid, data.clone()));
        }
        Ok(found)
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(cid.hash().code() == IDENTITY || self.inner.has(cid)?)
    }

    fn put_many(&self, _: &[Block], _: bool) -> Result<(), StoreError> {
        unreachable!("the gateway only reads")
    }

    fn delete_many(&self, _: &[Cid]) -> Result<(), StoreError> {
        unreachable!("the gateway only reads")
    }
}
