//! One peer's side of the exchange, as the server keeps it: the wants not answered
//! yet, and which blocks it may have for having been sent their parents (its grants).
//! Both are capped, so nothing a peer sends makes it grow without bound.

use std::collections::{HashSet, VecDeque};

use cid::Cid;

use super::wire::{Want, Wants};
use super::{MAX_GRANTS, MAX_WANTS};

/// A block's name in the grants: the start of its digest, whatever its codec (a raw
/// and a dag-pb CID of one hash are one block in the store). 20 bytes of a sha2-256
/// digest cannot be matched by a block someone made to match.
type Key = [u8; 20];

fn key(cid: &Cid) -> Key {
    let mut k = [0u8; 20];
    let d = cid.hash().digest();
    let n = d.len().min(20);
    k[..n].copy_from_slice(&d[..n]);
    k
}

#[derive(Default)]
pub struct Ledger {
    /// Wants not answered yet, oldest first, one per CID.
    queue: VecDeque<Want>,
    grants: HashSet<Key>,
    /// The grants in the order given, the oldest forgotten first.
    granted: VecDeque<Key>,
}

impl Ledger {
    /// Takes a message's wantlist in: a full one replaces what was queued; cancels go
    /// first; a want already queued is updated. Returns how many wants had no room.
    pub fn apply(&mut self, wants: Wants) -> usize {
        if wants.full {
            self.queue.clear();
        }
        for cid in &wants.cancels {
            self.queue.retain(|w| w.cid != *cid);
        }
        let mut dropped = 0;
        for want in wants.wants {
            if let Some(queued) = self.queue.iter_mut().find(|w| w.cid == want.cid) {
                // A want-block after a want-have asks for more; never ask for less.
                queued.have &= want.have;
                queued.send_dont_have |= want.send_dont_have;
            } else if self.queue.len() < MAX_WANTS {
                self.queue.push_back(want);
            } else {
                dropped += 1;
            }
        }
        dropped
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Up to `n` of the oldest wants, each with whether the peer holds a grant for it.
    pub fn take(&mut self, n: usize) -> Vec<(Want, bool)> {
        let n = n.min(self.queue.len());
        self.queue
            .drain(..n)
            .map(|w| {
                let granted = self.grants.contains(&key(&w.cid));
                (w, granted)
            })
            .collect()
    }

    /// Wants taken but not answered (no room in the message): first again next time.
    pub fn put_back(&mut self, wants: Vec<Want>) {
        for w in wants.into_iter().rev() {
            if !self.queue.iter().any(|q| q.cid == w.cid) {
                self.queue.push_front(w);
            }
        }
        self.queue.truncate(MAX_WANTS);
    }

    /// The peer was sent a block that links to `links`: it may have them too.
    pub fn grant(&mut self, links: impl IntoIterator<Item = Cid>) {
        for cid in links {
            let k = key(&cid);
            if !self.grants.insert(k) {
                continue;
            }
            self.granted.push_back(k);
            if self.granted.len() > MAX_GRANTS {
                if let Some(old) = self.granted.pop_front() {
                    self.grants.remove(&old);
                }
            }
        }
    }

    /// Nothing more will be sent (the peer is gone): its wants go.
    pub fn forget_wants(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, DAG_PB, RAW};

    fn cid(i: u32) -> Cid {
        *Block::hash(cid::Version::V1, RAW, i.to_le_bytes().to_vec()).cid()
    }

    fn want(i: u32) -> Want {
        Want {
            cid: cid(i),
            have: false,
            send_dont_have: true,
        }
    }

    fn wants(list: Vec<Want>) -> Wants {
        Wants {
            full: false,
            wants: list,
            cancels: Vec::new(),
        }
    }

    #[test]
    fn wants_queue_in_order_once_each_and_cancels_remove_them() {
        let mut l = Ledger::default();
        l.apply(wants(vec![want(1), want(2), want(1), want(3)]));
        l.apply(Wants {
            cancels: vec![cid(2)],
            ..Wants::default()
        });
        let taken: Vec<Cid> = l.take(10).into_iter().map(|(w, _)| w.cid).collect();
        assert_eq!(taken, vec![cid(1), cid(3)]);
        assert!(l.is_idle());
    }

    #[test]
    fn a_full_wantlist_replaces_the_queue() {
        let mut l = Ledger::default();
        l.apply(wants(vec![want(1), want(2)]));
        l.apply(Wants {
            full: true,
            wants: vec![want(3)],
            cancels: Vec::new(),
        });
        let taken: Vec<Cid> = l.take(10).into_iter().map(|(w, _)| w.cid).collect();
        assert_eq!(taken, vec![cid(3)]);
    }

    #[test]
    fn the_queue_and_the_grants_are_capped() {
        let mut l = Ledger::default();
        let many: Vec<Want> = (0..MAX_WANTS as u32 + 10).map(want).collect();
        assert_eq!(l.apply(wants(many)), 10);
        assert_eq!(l.take(usize::MAX).len(), MAX_WANTS);
        l.grant((0..MAX_GRANTS as u32 + 5).map(cid));
        assert_eq!(l.grants.len(), MAX_GRANTS);
        assert_eq!(l.granted.len(), MAX_GRANTS);
        // The oldest went first.
        l.apply(wants(vec![want(0), want(MAX_GRANTS as u32 + 4)]));
        let granted: Vec<bool> = l.take(2).into_iter().map(|(_, g)| g).collect();
        assert_eq!(granted, vec![false, true]);
    }

    #[test]
    fn a_grant_covers_the_block_whatever_codec_asks_for_it() {
        let mut l = Ledger::default();
        let raw = cid(9);
        let pb = Cid::new_v1(DAG_PB, *raw.hash());
        l.grant([raw]);
        l.apply(wants(vec![Want {
            cid: pb,
            have: true,
            send_dont_have: false,
        }]));
        assert!(l.take(1)[0].1);
    }

    #[test]
    fn wants_put_back_come_first_again() {
        let mut l = Ledger::default();
        l.apply(wants(vec![want(1), want(2), want(3)]));
        let taken = l.take(2);
        l.put_back(taken.into_iter().map(|(w, _)| w).collect());
        let order: Vec<Cid> = l.take(3).into_iter().map(|(w, _)| w.cid).collect();
        assert_eq!(order, vec![cid(1), cid(2), cid(3)]);
    }
}
