//! Checking a DAG: every block reachable from a root is present, hashes to its CID and
//! decodes as UnixFS.

use std::collections::HashSet;

use cid::Cid;

use crate::block::{verify, DAG_PB};
use crate::store::Blocks;
use crate::unixfs::dagpb::PbNode;
use crate::unixfs::node::Node;

#[derive(Debug, Default)]
pub struct Report {
    pub blocks: u64,
    pub bytes: u64,
    /// One plain sentence per problem found.
    pub problems: Vec<String>,
}

/// Visits every block under `root` once.
pub fn check(blocks: &dyn Blocks, root: &Cid, progress: &mut dyn FnMut(u64)) -> Report {
    let mut report = Report::default();
    let mut seen = HashSet::new();
    let mut todo = vec![*root];
    while let Some(cid) = todo.pop() {
        if !seen.insert(cid) {
            continue;
        }
        let bytes = match blocks.get(&cid) {
            Ok(Some(b)) => b,
            Ok(None) => {
                report.problems.push(format!("block {cid} is missing"));
                continue;
            }
            Err(e) => {
                report
                    .problems
                    .push(format!("block {cid} cannot be read: {e}"));
                continue;
            }
        };
        report.blocks += 1;
        report.bytes += bytes.len() as u64;
        progress(bytes.len() as u64);
        if let Err(e) = verify(&cid, &bytes) {
            report.problems.push(format!("block {cid} is corrupt: {e}"));
            continue;
        }
        if cid.codec() == DAG_PB {
            match PbNode::decode(&bytes) {
                Ok(pb) => todo.extend(pb.links.iter().map(|l| l.cid)),
                Err(e) => report.problems.push(format!("block {cid}: {e}")),
            }
        }
        if let Err(e) = Node::decode(&cid, bytes) {
            report.problems.push(format!("block {cid}: {e}"));
        }
    }
    report
}
