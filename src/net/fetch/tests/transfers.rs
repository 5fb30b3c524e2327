//! Transfers' wants: served by priority behind a reader's, dropped on a pause.

use super::*;

fn many(from: u32, n: u32) -> Vec<Cid> {
    (from..from + n)
        .map(|i| *Block::hash(cid::Version::V1, RAW, i.to_be_bytes().to_vec()).cid())
        .collect()
}

fn claim(transfer: u64, priority: Priority) -> Option<Claim> {
    Some(Claim { transfer, priority })
}

/// The CIDs the first dispatch asks for, in the order the requests went out.
fn asked(s: &S, connected: &[PeerId], t0: Instant) -> HashSet<Cid> {
    s.dispatch(connected, t0)
        .into_iter()
        .filter_map(|a| match a {
            Action::Request { cids, .. } => Some(cids),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_high_transfer_is_served_before_a_low_one_and_a_reader_before_both() {
    let t0 = Instant::now();
    let peer = PeerId::random();
    let mut s = S::new(Duration::from_secs(30));
    // The low pin asked first, for more than one source's window holds.
    let low = many(0, 64);
    let high = many(100, 64);
    for c in &low {
        s.want_for(*c, Some(peer), None, claim(1, Priority::Low), t0);
    }
    for c in &high {
        s.want_for(*c, Some(peer), None, claim(2, Priority::High), t0);
    }
    let read = many(1000, 1)[0];
    s.want(read, Some(peer), Some("reader"), t0);
    let out = asked(&s, &[peer], t0);
    assert!(!out.is_empty() && out.len() < 64, "{} asked", out.len());
    assert!(out.contains(&read), "the reader's block waits");
    assert!(
        out.iter().all(|c| !low.contains(c)),
        "a low want went before a high one"
    );

    // Made low: the other goes first now.
    s.reprioritize(2, Priority::Low);
    s.reprioritize(1, Priority::High);
    let out = asked(&s, &[peer], t0);
    assert!(out.iter().all(|c| !high.contains(c)));
    assert_eq!(s.transfer_of(&low[0]), Some(1));
    assert_eq!(s.transfer_of(&read), None);
}

#[test]
fn a_paused_transfer_drops_its_wants_not_asked_yet_and_keeps_a_readers() {
    let t0 = Instant::now();
    let peer = PeerId::random();
    let mut s = S::new(Duration::from_secs(30));
    let cids = many(0, 40);
    for c in &cids {
        s.want_for(*c, Some(peer), None, claim(7, Priority::Normal), t0);
    }
    // A reader wants one of them too; another transfer's stays.
    s.want(cids[39], Some(peer), Some("reader"), t0);
    s.want_for(
        many(500, 1)[0],
        Some(peer),
        None,
        claim(8, Priority::Normal),
        t0,
    );
    let mut id = 0;
    let acts = s.dispatch(&[peer], t0);
    let out = send(&mut s, acts, &mut id, t0);
    let out_now = out.iter().map(|(_, s)| s.cids.len()).sum::<usize>();
    assert!(out_now < 40);
    let before = s.wanted();
    s.forget(7);
    assert!(s.wanted() < before, "nothing was dropped");
    // What is out stays (it may land), the reader's, and transfer 8's.
    assert!(s.wants.contains_key(&cids[39]));
    assert!(s.wants.contains_key(&many(500, 1)[0]));
    for w in s.wants.values() {
        assert!(w.transfer != Some(7) || !w.in_flight.is_empty() || !w.waiters.is_empty());
    }
}

/// A block of no drive that one peer lacks sidelines that peer for the rest of the
/// same transfer only: an IPFS node may hold another DAG whole.
#[test]
fn a_peer_lacking_a_block_of_no_drive_stays_a_good_source_for_another_transfer() {
    let t0 = Instant::now();
    let connected = [PeerId::random(), PeerId::random()];
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    let (first, more) = (leaf(1), leaf(3));
    let other = leaf(2);
    s.want_for(first, None, None, claim(1, Priority::Normal), t0);
    let out = {
        let acts = s.dispatch(&connected, t0);
        send(&mut s, acts, &mut id, t0)
    };
    let lacking = out[0].1.peer;
    let sent = s.answered(out[0].0, 0, t0).unwrap();
    s.settle(out[0].0, &sent, missing(&[first]), t0);

    // More of transfer 1 goes elsewhere; transfer 2's block may go to it as to any.
    s.want_for(more, None, None, claim(1, Priority::Normal), t0);
    s.want_for(other, None, None, claim(2, Priority::Normal), t0);
    let asked: HashMap<Cid, PeerId> = s
        .dispatch(&connected, t0)
        .into_iter()
        .filter_map(|a| match a {
            Action::Request { peer, cids, .. } => Some(cids.into_iter().map(move |c| (c, peer))),
            _ => None,
        })
        .flatten()
        .collect();
    assert_ne!(asked.get(&more), Some(&lacking), "{asked:?}");
    // The other peer has a request out in this round, so the lacking one is expected
    // to answer first: it gets the block, unless it is sidelined.
    assert_eq!(asked.get(&other), Some(&lacking), "{asked:?}");
}
