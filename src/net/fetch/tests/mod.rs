//! The scheduler's decisions, step by step: owner first, fallback, hedging, busy
//! sources, deadlines and limits.

use super::*;
use crate::block::{Block, RAW};
use crate::net::protocol::MAX_WANT;

type S = Scheduler<u32, &'static str>;

fn leaf(i: u8) -> Cid {
    *Block::hash(cid::Version::V1, RAW, vec![i; 8]).cid()
}

fn node(i: u8) -> Cid {
    *Block::hash(cid::Version::V1, crate::block::DAG_PB, vec![i; 8]).cid()
}

/// Sends every request the actions ask for, with ids from `next_id`; returns them.
fn send(
    s: &mut S,
    actions: Vec<Action<&'static str>>,
    next_id: &mut u32,
    now: Instant,
) -> Vec<(u32, Sent)> {
    let mut out = Vec::new();
    for a in actions {
        if let Action::Request {
            peer, owner, cids, ..
        } = a
        {
            *next_id += 1;
            let sent = Sent { peer, owner, cids };
            s.sent(*next_id, sent.clone(), now);
            out.push((*next_id, sent));
        }
    }
    out
}

fn missing(cids: &[Cid]) -> Answer {
    Answer {
        missing: cids.to_vec(),
        ..Answer::default()
    }
}

#[test]
fn the_owner_is_asked_first_then_the_others_in_turn() {
    let t0 = Instant::now();
    let (owner, other) = (PeerId::random(), PeerId::random());
    let connected = [other, owner];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    let out = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.peer, owner);
    assert_eq!(out[0].1.owner, Some(owner), "the request names the owner");
    // The owner lacks it: the other peer is asked.
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    assert!(s
        .settle(out[0].0, &sent, missing(&[leaf(1)]), t0)
        .is_empty());
    let out = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    assert_eq!(out[0].1.peer, other);
    // It delivers: the reader gets it, and nothing more is asked.
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    let done = s.settle(
        out[0].0,
        &sent,
        Answer {
            delivered: vec![leaf(1)],
            ..Answer::default()
        },
        t0,
    );
    assert_eq!(
        done,
        vec![Action::Deliver {
            cid: leaf(1),
            waiters: vec!["reader"]
        }]
    );
    assert_eq!(s.wanted(), 0);
    assert!(s.dispatch(&connected, t0).is_empty());
}

#[test]
fn each_want_goes_to_its_own_owner_first() {
    let t0 = Instant::now();
    let (x, y, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
    // The owners come last: the order peers connected in must not decide.
    let connected = [stranger, y, x];
    let mut s = S::new(Duration::from_secs(30));
    s.want(leaf(1), Some(x), Some("of x"), t0);
    s.want(leaf(2), Some(y), Some("of y"), t0);
    let mut asked: Vec<(PeerId, Option<PeerId>, Vec<Cid>)> = s
        .dispatch(&connected, t0)
        .into_iter()
        .filter_map(|a| match a {
            Action::Request {
                peer, owner, cids, ..
            } => Some((peer, owner, cids)),
            _ => None,
        })
        .collect();
    asked.sort_by_key(|(_, _, cids)| cids[0].to_bytes());
    let mut expected = vec![(x, Some(x), vec![leaf(1)]), (y, Some(y), vec![leaf(2)])];
    expected.sort_by_key(|(_, _, cids)| cids[0].to_bytes());
    assert_eq!(asked, expected);
}

#[test]
fn wrong_bytes_or_a_failed_stream_move_the_want_on_to_the_next_source() {
    let t0 = Instant::now();
    let (owner, a, b, late) = (
        PeerId::random(),
        PeerId::random(),
        PeerId::random(),
        PeerId::random(),
    );
    let connected = [a, owner, b];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    let ask = |s: &mut S, id: &mut u32, connected: &[PeerId]| {
        let acts = s.dispatch(connected, t0);
        send(s, acts, id, t0)
    };
    // The owner sends bytes that do not hash to the CID: not delivered, and the
    // owner is not asked again.
    let out = ask(&mut s, &mut id, &connected);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.peer, owner);
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    let bad = Answer {
        bad: vec![leaf(1)],
        ..Answer::default()
    };
    assert!(s.settle(out[0].0, &sent, bad, t0).is_empty());
    // The next source's stream fails.
    let out = ask(&mut s, &mut id, &connected);
    assert_eq!(out.len(), 1);
    let next = out[0].1.peer;
    assert!(next == a || next == b, "{next}");
    s.failed(out[0].0, t0);
    // The last one does not have it.
    let out = ask(&mut s, &mut id, &connected);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.peer, if next == a { b } else { a });
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    assert!(s
        .settle(out[0].0, &sent, missing(&[leaf(1)]), t0)
        .is_empty());
    // Every source is spent: nothing is asked, and the reader waits for new peers
    // rather than failing before its deadline.
    assert!(ask(&mut s, &mut id, &connected).is_empty());
    assert!(s.tick(&connected, t0).is_empty());
    assert_eq!(s.wanted(), 1);
    // A peer that connects now is asked, and its block reaches the reader.
    let out = ask(&mut s, &mut id, &[a, owner, b, late]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.peer, late);
    assert_eq!(out[0].1.owner, Some(owner), "the drive is still named");
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    let good = Answer {
        delivered: vec![leaf(1)],
        ..Answer::default()
    };
    assert_eq!(
        s.settle(out[0].0, &sent, good, t0),
        vec![Action::Deliver {
            cid: leaf(1),
            waiters: vec!["reader"]
        }]
    );
}

#[test]
fn a_want_every_source_failed_ends_at_its_deadline_naming_them() {
    let t0 = Instant::now();
    let (owner, other) = (PeerId::random(), PeerId::random());
    let connected = [owner, other];
    let mut s = S::new(Duration::from_secs(5));
    let mut id = 0;
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    for _ in 0..2 {
        let acts = s.dispatch(&connected, t0);
        let out = send(&mut s, acts, &mut id, t0);
        assert_eq!(out.len(), 1);
        s.failed(out[0].0, t0);
    }
    assert!(s.tick(&connected, t0 + Duration::from_secs(4)).is_empty());
    let mut asked = vec![owner, other];
    asked.sort();
    assert_eq!(
        s.tick(&connected, t0 + Duration::from_secs(5)),
        vec![Action::Fail {
            cid: leaf(1),
            waiters: vec!["reader"],
            why: Unavailable::NoPeer,
            owner: Some(owner),
            asked,
            repeat: false,
        }]
    );
    assert_eq!(s.wanted(), 0);
}

#[test]
fn hedges_wait_until_every_source_is_slow_and_stop_at_three() {
    let t0 = Instant::now();
    let (owner, a, b, c) = (
        PeerId::random(),
        PeerId::random(),
        PeerId::random(),
        PeerId::random(),
    );
    let connected = [owner, a, b, c];
    let mut s = S::new(Duration::from_secs(60));
    let mut id = 0;
    let at = |s: &mut S, id: &mut u32, t: Instant| {
        let acts = s.tick(&connected, t);
        send(s, acts, id, t)
    };
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    let first = at(&mut s, &mut id, t0);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1.peer, owner);
    let h1 = at(&mut s, &mut id, t0 + HEDGE_AFTER);
    assert_eq!(h1.len(), 1, "the owner is slow: a second source");
    // The second source is not slow yet: no third.
    assert!(at(&mut s, &mut id, t0 + HEDGE_AFTER * 3 / 2).is_empty());
    let h2 = at(&mut s, &mut id, t0 + HEDGE_AFTER * 2);
    assert_eq!(h2.len(), 1, "both slow: a third source");
    // Three asked at once is the most, though a fourth peer is free.
    assert!(at(&mut s, &mut id, t0 + HEDGE_AFTER * 10).is_empty());
    let mut sources = vec![first[0].1.peer, h1[0].1.peer, h2[0].1.peer];
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), 3, "each hedge goes to another peer");
    // One of them fails: the free peer takes its place.
    s.failed(first[0].0, t0);
    let h3 = at(&mut s, &mut id, t0 + HEDGE_AFTER * 11);
    assert_eq!(h3.len(), 1);
    assert!(!sources.contains(&h3[0].1.peer));
}

#[test]
fn a_slow_source_gets_company_and_the_first_answer_wins() {
    let t0 = Instant::now();
    let (owner, other) = (PeerId::random(), PeerId::random());
    let connected = [owner, other];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    let first = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    // Not yet slow: no hedge.
    let early = t0 + HEDGE_AFTER / 2;
    assert!({
        let acts = s.tick(&connected, early);
        send(&mut s, acts, &mut id, early)
    }
    .is_empty());
    let late = t0 + HEDGE_AFTER;
    let hedge = {
        let acts = s.tick(&connected, late);
        send(&mut s, acts, &mut id, late)
    };
    assert_eq!(hedge.len(), 1);
    assert_eq!(hedge[0].1.peer, other);
    // The hedge answers first; the owner's late answer finds nothing to do.
    let sent = s.answered(hedge[0].0, 0, t0).unwrap();
    let done = s.settle(
        hedge[0].0,
        &sent,
        Answer {
            delivered: vec![leaf(1)],
            ..Answer::default()
        },
        t0,
    );
    assert_eq!(done.len(), 1);
    let sent = s.answered(first[0].0, 0, t0).unwrap();
    let late_answer = Answer {
        delivered: vec![leaf(1)],
        ..Answer::default()
    };
    assert!(s.settle(first[0].0, &sent, late_answer, t0).is_empty());
}

#[test]
fn a_busy_source_is_passed_over_then_asked_again() {
    let t0 = Instant::now();
    let owner = PeerId::random();
    let connected = [owner];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    let out = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    s.busy(out[0].0, &sent, t0);
    // Busy is not a failure: the want waits (no other source), then asks again.
    assert!(s.tick(&connected, t0).is_empty());
    assert_eq!(s.wanted(), 1);
    assert!(s.stranded_owners(&connected, t0).is_empty());
    let later = t0 + BUSY_BACKOFF;
    let again = {
        let acts = s.tick(&connected, later);
        send(&mut s, acts, &mut id, later)
    };
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.peer, owner);
}

#[test]
fn what_did_not_fit_in_an_answer_is_asked_of_the_same_peer_again() {
    let t0 = Instant::now();
    let owner = PeerId::random();
    let connected = [owner];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    s.want(node(1), Some(owner), Some("a"), t0);
    s.want(node(2), Some(owner), Some("b"), t0);
    let acts = s.dispatch(&connected, t0);
    let out = send(&mut s, acts, &mut id, t0);
    assert_eq!(out.len(), 1, "nodes go in one request");
    // Only the first fitted in the answer.
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    let answer = Answer {
        delivered: vec![node(1)],
        ..Answer::default()
    };
    assert_eq!(s.settle(out[0].0, &sent, answer, t0).len(), 1);
    let acts = s.dispatch(&connected, t0);
    let again = send(&mut s, acts, &mut id, t0);
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].1.peer, &again[0].1.cids[..]),
        (owner, &[node(2)][..])
    );
}

#[test]
fn a_busy_source_sends_the_want_to_another_at_once() {
    let t0 = Instant::now();
    let (owner, other) = (PeerId::random(), PeerId::random());
    let connected = [owner, other];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    let out = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    s.busy(out[0].0, &sent, t0);
    let next = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    assert_eq!(next[0].1.peer, other);
}

#[test]
fn refusals_fail_at_once_and_failures_are_remembered() {
    let t0 = Instant::now();
    let owner = PeerId::random();
    let connected = [owner];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    s.want(leaf(1), Some(owner), Some("first"), t0);
    let out = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    s.refused(out[0].0, &sent, t0);
    let failed = s.tick(&connected, t0);
    assert_eq!(
        failed,
        vec![Action::Fail {
            cid: leaf(1),
            waiters: vec!["first"],
            why: Unavailable::Refused,
            owner: Some(owner),
            asked: vec![owner],
            repeat: false,
        }]
    );
    // The kernel's retry fails at once, until a peer connects.
    let retry = s.want(leaf(1), Some(owner), Some("retry"), t0);
    assert!(matches!(retry[..], [Action::Fail { repeat: true, .. }]));
    s.connected();
    assert!(s.want(leaf(1), Some(owner), Some("after"), t0).is_empty());
}

#[test]
fn a_want_nobody_delivers_times_out_and_a_stranded_prefetch_is_dropped() {
    let t0 = Instant::now();
    let owner = PeerId::random();
    let mut s = S::new(Duration::from_secs(3));
    s.want(leaf(1), Some(owner), Some("reader"), t0);
    s.want(leaf(2), Some(owner), None, t0);
    // Nobody is connected: the prefetch goes, the reader waits for a source.
    let out = s.tick(&[], t0);
    assert_eq!(
        out,
        vec![Action::Fail {
            cid: leaf(2),
            waiters: vec![],
            why: Unavailable::NoPeer,
            owner: Some(owner),
            asked: vec![],
            repeat: false,
        }]
    );
    assert_eq!(s.stranded_owners(&[], t0), HashSet::from([owner]));
    let out = s.tick(&[], t0 + Duration::from_secs(3));
    assert!(matches!(
        out[..],
        [Action::Fail {
            why: Unavailable::NoPeer,
            ..
        }]
    ));
}

#[test]
fn leaves_go_one_per_request_and_nodes_in_batches() {
    let t0 = Instant::now();
    let owner = PeerId::random();
    let mut s = S::new(Duration::from_secs(30));
    for i in 0..3 {
        s.want(leaf(i), Some(owner), None, t0);
        s.want(node(i), Some(owner), None, t0);
    }
    let out = s.dispatch(&[owner], t0);
    let sizes: Vec<usize> = out
        .iter()
        .map(|a| match a {
            Action::Request { cids, .. } => cids.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(sizes.iter().filter(|n| **n == 1).count(), 3);
    assert_eq!(sizes.iter().filter(|n| **n == 3).count(), 1);
}

#[test]
fn prefetches_stop_at_the_cap_and_readers_do_not() {
    let t0 = Instant::now();
    let mut s = S::new(Duration::from_secs(30));
    for i in 0..MAX_WANTS as u32 + 10 {
        let cid = *Block::hash(cid::Version::V1, RAW, i.to_le_bytes().to_vec()).cid();
        s.want(cid, None, None, t0);
    }
    assert_eq!(s.wanted(), MAX_WANTS);
    s.want(leaf(1), None, Some("reader"), t0);
    assert_eq!(s.wanted(), MAX_WANTS + 1);
}

#[test]
fn a_cold_listing_s_2048_nodes_go_out_at_once() {
    let t0 = Instant::now();
    let owner = PeerId::random();
    let mut s = S::new(Duration::from_secs(30));
    // The entries' nodes a listing asks for ahead (`LISTING_AHEAD` in peers/listing.rs).
    for i in 0..2048u32 {
        let data = i.to_le_bytes().to_vec();
        let cid = *Block::hash(cid::Version::V1, crate::block::DAG_PB, data).cid();
        s.want(cid, Some(owner), None, t0);
    }
    let out = s.dispatch(&[owner], t0);
    let asked: usize = out
        .iter()
        .map(|a| match a {
            Action::Request { cids, .. } => cids.len(),
            _ => 0,
        })
        .sum();
    // With nodes guessed at 16 KiB, the first window took 512 of them (8 requests),
    // and the listing waited a round trip per 512.
    assert_eq!((asked, out.len()), (2048, 2048 / MAX_WANT));
}

mod swarming;
mod transfers;

#[test]
fn bitswap_peers_are_sources_of_blocks_of_no_drive_only_and_mute_peers_of_none() {
    let t0 = Instant::now();
    let (owner, helia, mute) = (PeerId::random(), PeerId::random(), PeerId::random());
    let connected = [owner, helia, mute];
    let mut s = S::new(Duration::from_secs(30));
    s.speaks(helia, Some(Way::Bitswap));
    s.speaks(mute, None);
    // Blocks of no drive: spread over the peer of our protocol and the Bitswap one,
    // each asked its own way; the peer that speaks neither is asked nothing.
    for i in 0..8 {
        s.want(leaf(i), None, Some("reader"), t0);
    }
    s.want(node(1), None, Some("reader"), t0);
    let mut ways: HashMap<PeerId, Vec<Way>> = HashMap::new();
    for a in s.dispatch(&connected, t0) {
        if let Action::Request { peer, way, .. } = a {
            ways.entry(peer).or_default().push(way);
        }
    }
    assert!(!ways.contains_key(&mute), "{ways:?}");
    assert!(ways[&helia].iter().all(|w| *w == Way::Bitswap), "{ways:?}");
    // A Bitswap peer has one leaf out at a time (`BITSWAP_WINDOW`).
    assert_eq!(ways[&helia].len(), 1, "{ways:?}");
    assert!(ways[&owner].iter().all(|w| *w == Way::Ours), "{ways:?}");

    // A drive's block goes to our protocol's peers only; with none of them left, it
    // has no source.
    let mut s = S::new(Duration::from_secs(30));
    s.speaks(helia, Some(Way::Bitswap));
    s.want(leaf(9), Some(owner), Some("reader"), t0);
    assert!(s.dispatch(&[helia], t0).is_empty());
    assert_eq!(s.stranded_owners(&[helia], t0), HashSet::from([owner]));
    let acts = s.dispatch(&[helia, owner], t0);
    assert!(matches!(
        &acts[..],
        [Action::Request { peer, way: Way::Ours, .. }] if *peer == owner
    ));
    // Once the Bitswap peer has waited for a block of no drive past the routing
    // moment, it is one to look up.
    s.want(leaf(10), None, Some("reader"), t0);
    assert!(s
        .unowned_waiting(&[helia], t0, Duration::from_secs(1))
        .is_empty());
    let later = t0 + Duration::from_secs(1);
    assert_eq!(
        s.unowned_waiting(&[helia], later, Duration::from_secs(1)),
        vec![leaf(10)]
    );
}

#[test]
fn a_peer_asked_over_ours_before_it_said_it_speaks_only_bitswap_is_asked_again_over_bitswap() {
    let t0 = Instant::now();
    let helia = PeerId::random();
    let mut id = 0;
    for identify_first in [false, true] {
        let mut s = S::new(Duration::from_secs(30));
        s.want(leaf(1), None, Some("reader"), t0);
        // Not identified yet: asked over ours, which it does not speak.
        let acts = s.dispatch(&[helia], t0);
        let out = send(&mut s, acts, &mut id, t0);
        assert_eq!(out.len(), 1);
        if identify_first {
            s.speaks(helia, Some(Way::Bitswap));
            s.failed(out[0].0, t0);
        } else {
            s.failed(out[0].0, t0);
            s.speaks(helia, Some(Way::Bitswap));
        }
        let acts = s.dispatch(&[helia], t0);
        assert!(
            matches!(&acts[..], [Action::Request { peer, way: Way::Bitswap, .. }] if *peer == helia),
            "identify first: {identify_first}: {acts:?}"
        );
    }
}
