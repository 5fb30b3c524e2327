//! Swarming: every holder a source at once, each by its measured figures; windows,
//! hedges by a peer's own figures, the endgame, and peers that lie or lack blocks.
//! A small simulated network (a fake clock, each peer a link of some rate and round
//! trip) drives the scheduler as the event loop does.

use std::collections::VecDeque;

use super::*;

fn many(n: u32) -> Vec<Cid> {
    (0..n)
        .map(|i| *Block::hash(cid::Version::V1, RAW, i.to_le_bytes().to_vec()).cid())
        .collect()
}

/// A peer's link: answers one request after another, each leaf `LEAF` bytes long.
struct Link {
    peer: PeerId,
    /// Bytes per second.
    rate: f64,
    rtt: Duration,
    /// When the link is free to send the next answer.
    free: Instant,
    /// Whether its answers are wrong bytes.
    lies: bool,
    /// Blocks it sent.
    sent: u64,
}

const LEAF: u64 = 1 << 20;

impl Link {
    fn new(rate: f64, rtt_ms: u64, t0: Instant) -> Link {
        Link {
            peer: PeerId::random(),
            rate,
            rtt: Duration::from_millis(rtt_ms),
            free: t0,
            lies: false,
            sent: 0,
        }
    }

    /// When an answer to a request sent `now` for `n` leaves arrives.
    fn answer_at(&mut self, now: Instant, n: usize) -> Instant {
        self.free = self.free.max(now + self.rtt / 2)
            + Duration::from_secs_f64((n as u64 * LEAF) as f64 / self.rate);
        self.free + self.rtt / 2
    }
}

/// The network: links by peer, and answers on their way.
struct Net {
    links: Vec<Link>,
    /// (arrives, id, request, from link)
    coming: VecDeque<(Instant, u32, Sent)>,
    next_id: u32,
    /// Links that died: their answers never come, their requests fail.
    dead: Vec<PeerId>,
}

impl Net {
    fn connected(&self) -> Vec<PeerId> {
        self.links
            .iter()
            .map(|l| l.peer)
            .filter(|p| !self.dead.contains(p))
            .collect()
    }

    /// Sends what the actions ask for; returns deliveries.
    fn carry(&mut self, s: &mut S, actions: Vec<Action<&'static str>>, now: Instant) -> usize {
        let mut delivered = 0;
        for a in actions {
            match a {
                Action::Request {
                    peer, owner, cids, ..
                } => {
                    self.next_id += 1;
                    let id = self.next_id;
                    let sent = Sent { peer, owner, cids };
                    s.sent(id, sent.clone(), now);
                    let link = self.links.iter_mut().find(|l| l.peer == peer).unwrap();
                    let at = link.answer_at(now, sent.cids.len());
                    self.coming.push_back((at, id, sent));
                }
                Action::Deliver { .. } => delivered += 1,
                Action::Fail { cid, .. } => panic!("{cid} failed"),
            }
        }
        delivered
    }

    /// Runs until `wanted` blocks are delivered or `limit` passes; returns when the
    /// last one came. Kills `kill` (a peer) at `kill_at`.
    fn run(
        &mut self,
        s: &mut S,
        t0: Instant,
        wanted: usize,
        limit: Duration,
        kill: Option<(PeerId, Instant)>,
    ) -> Instant {
        let step = Duration::from_millis(1);
        let mut now = t0;
        let mut delivered = 0;
        let mut next_tick = t0;
        while delivered < wanted {
            assert!(now < t0 + limit, "{delivered} of {wanted} in {limit:?}");
            if let Some((peer, at)) = kill {
                if now >= at && !self.dead.contains(&peer) {
                    self.dead.push(peer);
                    let (gone, kept): (Vec<_>, Vec<_>) = self
                        .coming
                        .drain(..)
                        .partition(|(_, _, sent)| sent.peer == peer);
                    self.coming = kept.into();
                    for (_, id, _) in gone {
                        s.failed(id, now);
                    }
                }
            }
            let mut arrived: Vec<(Instant, u32, Sent)> = Vec::new();
            self.coming.retain(|c| {
                let due = c.0 <= now;
                if due {
                    arrived.push(c.clone());
                }
                !due
            });
            for (_, id, sent) in arrived {
                let link = self.links.iter_mut().find(|l| l.peer == sent.peer).unwrap();
                let bytes = sent.cids.len() as u64 * LEAF;
                let Some(sent) = s.answered(id, bytes, now) else {
                    continue;
                };
                let answer = if link.lies {
                    Answer {
                        bad: sent.cids.clone(),
                        ..Answer::default()
                    }
                } else {
                    link.sent += sent.cids.len() as u64;
                    Answer {
                        delivered: sent.cids.clone(),
                        ..Answer::default()
                    }
                };
                let acts = s.settle(id, &sent, answer, now);
                delivered += self.carry(s, acts, now);
                let acts = s.dispatch(&self.connected(), now);
                delivered += self.carry(s, acts, now);
            }
            if now >= next_tick {
                let acts = s.tick(&self.connected(), now);
                delivered += self.carry(s, acts, now);
                next_tick = now + Duration::from_millis(250);
            }
            now += step;
        }
        now
    }
}

fn net(links: Vec<Link>) -> Net {
    Net {
        links,
        coming: VecDeque::new(),
        next_id: 0,
        dead: Vec::new(),
    }
}

/// Reads `n` leaves of `owner`'s drive as `pin` does (every block wanted at once) and
/// returns how long it took.
fn read(net: &mut Net, n: u32, owner: PeerId, t0: Instant) -> Duration {
    let mut s = S::new(Duration::from_secs(600));
    for cid in many(n) {
        s.want(cid, Some(owner), Some("pin"), t0);
    }
    let acts = s.dispatch(&net.connected(), t0);
    net.carry(&mut s, acts, t0);
    net.run(&mut s, t0, n as usize, Duration::from_secs(600), None) - t0
}

const MB: f64 = 1e6;

#[test]
fn every_holder_is_asked_at_once() {
    let t0 = Instant::now();
    let (owner, follower) = (PeerId::random(), PeerId::random());
    let mut s = S::new(Duration::from_secs(30));
    for (i, cid) in many(8).into_iter().enumerate() {
        s.want(cid, Some(owner), (i == 0).then_some("reader"), t0);
    }
    let mut asked: HashMap<PeerId, usize> = HashMap::new();
    for a in s.dispatch(&[owner, follower], t0) {
        if let Action::Request { peer, .. } = a {
            *asked.entry(peer).or_default() += 1;
        }
    }
    assert!(asked.get(&owner) > Some(&0), "{asked:?}");
    assert!(asked.get(&follower) > Some(&0), "{asked:?}");
}

#[test]
fn two_holders_at_the_same_rate_send_twice_as_fast_as_one() {
    let t0 = Instant::now();
    let alone = {
        let a = Link::new(10.0 * MB, 20, t0);
        let owner = a.peer;
        read(&mut net(vec![a]), 64, owner, t0)
    };
    let mut both = net(vec![
        Link::new(10.0 * MB, 20, t0),
        Link::new(10.0 * MB, 20, t0),
    ]);
    let owner = both.links[0].peer;
    let together = read(&mut both, 64, owner, t0);
    let ratio = alone.as_secs_f64() / together.as_secs_f64();
    assert!(
        ratio >= 1.8,
        "{alone:?} alone, {together:?} with two: {ratio:.2}x"
    );
    assert!(
        both.links.iter().all(|l| l.sent >= 24),
        "each sends its share"
    );
}

#[test]
fn a_slower_holder_adds_its_rate_and_the_faster_sends_more() {
    let t0 = Instant::now();
    // The owner is the slow one: figures decide, not ownership.
    let mut links = net(vec![
        Link::new(2.0 * MB, 20, t0),
        Link::new(10.0 * MB, 20, t0),
    ]);
    let owner = links.links[0].peer;
    let took = read(&mut links, 96, owner, t0);
    let rate = (96 * LEAF) as f64 / took.as_secs_f64();
    assert!(rate >= 0.9 * 12.0 * MB, "{:.1} MB/s of 12", rate / MB);
    let (slow, fast) = (links.links[0].sent, links.links[1].sent);
    assert!(fast >= 3 * slow && slow >= 8, "fast {fast}, slow {slow}");
}

#[test]
fn three_holders_send_thrice_as_fast() {
    let t0 = Instant::now();
    let alone = {
        let a = Link::new(10.0 * MB, 20, t0);
        let owner = a.peer;
        read(&mut net(vec![a]), 96, owner, t0)
    };
    let mut three = net((0..3).map(|_| Link::new(10.0 * MB, 20, t0)).collect());
    let owner = three.links[0].peer;
    let together = read(&mut three, 96, owner, t0);
    let ratio = alone.as_secs_f64() / together.as_secs_f64();
    assert!(ratio >= 2.5, "{ratio:.2}x");
}

#[test]
fn windows_bound_what_each_source_has_out() {
    let t0 = Instant::now();
    let (a, b) = (PeerId::random(), PeerId::random());
    let mut s = S::new(Duration::from_secs(30));
    for cid in many(200) {
        s.want(cid, Some(a), None, t0);
    }
    let mut asked: HashMap<PeerId, u64> = HashMap::new();
    for act in s.dispatch(&[a, b], t0) {
        if let Action::Request { peer, cids, .. } = act {
            *asked.entry(peer).or_default() += cids.len() as u64;
        }
    }
    for (peer, n) in &asked {
        assert!(*n * LEAF <= 8 << 20, "{peer}: {n} leaves out");
    }
    assert_eq!(asked.len(), 2);
}

#[test]
fn a_random_read_goes_to_the_fastest_source_and_a_holder_killed_is_done_without() {
    let t0 = Instant::now();
    let mut links = net(vec![
        Link::new(2.0 * MB, 20, t0),
        Link::new(20.0 * MB, 5, t0),
    ]);
    let (slow, fast) = (links.links[0].peer, links.links[1].peer);
    let mut s = S::new(Duration::from_secs(60));
    // Both are measured by a read of 32 blocks.
    for cid in many(32) {
        s.want(cid, Some(slow), Some("pin"), t0);
    }
    let acts = s.dispatch(&links.connected(), t0);
    links.carry(&mut s, acts, t0);
    let t1 = links.run(&mut s, t0, 32, Duration::from_secs(60), None);
    assert!(s.delivered_by(&slow) > 0 && s.delivered_by(&fast) > 0);
    // A random read, of the slow peer's drive: the fast one is asked.
    let one = *Block::hash(cid::Version::V1, RAW, b"random".to_vec()).cid();
    s.want(one, Some(slow), Some("reader"), t1);
    let asked: Vec<PeerId> = s
        .dispatch(&links.connected(), t1)
        .into_iter()
        .filter_map(|a| match a {
            Action::Request { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![fast]);
    // A read the fast one dies in the middle of: the slow one brings the rest.
    let mut s = S::new(Duration::from_secs(120));
    let t2 = t1 + Duration::from_secs(1);
    for cid in many(40) {
        s.want(cid, Some(slow), Some("reader"), t2);
    }
    let acts = s.dispatch(&links.connected(), t2);
    links.carry(&mut s, acts, t2);
    let kill = Some((fast, t2 + Duration::from_millis(500)));
    links.run(&mut s, t2, 40, Duration::from_secs(120), kill);
    assert_eq!(s.wanted(), 0);
}

/// Measures `links` with a read of `n` blocks; returns the scheduler and the time.
fn measured(links: &mut Net, n: u32, t0: Instant) -> (S, Instant) {
    let mut s = S::new(Duration::from_secs(60));
    let owner = links.links[0].peer;
    for cid in many(n) {
        s.want(cid, Some(owner), Some("pin"), t0);
    }
    let acts = s.dispatch(&links.connected(), t0);
    links.carry(&mut s, acts, t0);
    let t = links.run(&mut s, t0, n as usize, Duration::from_secs(60), None);
    (s, t)
}

#[test]
fn a_request_slow_by_its_peers_own_figures_gets_company_before_hedge_after() {
    let t0 = Instant::now();
    let mut links = net(vec![
        Link::new(50.0 * MB, 4, t0),
        Link::new(50.0 * MB, 4, t0),
    ]);
    let (s, t1) = measured(&mut links, 32, t0);
    let mut s = s;
    let (a, b) = (links.links[0].peer, links.links[1].peer);
    let one = *Block::hash(cid::Version::V1, RAW, b"stuck".to_vec()).cid();
    s.want(one, Some(a), Some("reader"), t1);
    // Another reader keeps the read out of its endgame.
    for cid in many(8).into_iter().skip(1) {
        s.want(cid, Some(a), Some("other"), t1);
    }
    let acts = s.dispatch(&[a, b], t1);
    let mut id = 1000;
    let first = send(&mut s, acts, &mut id, t1);
    let to = first
        .iter()
        .find(|(_, sent)| sent.cids == [one])
        .unwrap()
        .1
        .peer;
    // Its answer never comes. By a fast peer's figures it is slow well before the
    // two seconds an unmeasured peer gets.
    let at = t1 + Duration::from_millis(400);
    let acts = s.tick(&[a, b], at);
    let hedge = send(&mut s, acts, &mut id, at);
    let again = hedge.iter().find(|(_, sent)| sent.cids == [one]);
    assert!(again.is_some_and(|(_, sent)| sent.peer != to), "{hedge:?}");
}

#[test]
fn the_last_blocks_of_a_read_overdue_are_asked_of_a_second_source() {
    let t0 = Instant::now();
    let mut links = net(vec![
        Link::new(10.0 * MB, 10, t0),
        Link::new(10.0 * MB, 10, t0),
    ]);
    let (mut s, t1) = measured(&mut links, 32, t0);
    let (a, b) = (links.links[0].peer, links.links[1].peer);
    let last = *Block::hash(cid::Version::V1, RAW, b"last".to_vec()).cid();
    s.want(last, Some(a), Some("reader"), t1);
    let mut id = 2000;
    let acts = s.dispatch(&[a, b], t1);
    let first = send(&mut s, acts, &mut id, t1);
    assert_eq!(first.len(), 1);
    // Due after about a round trip and a block (~0.11 s), overdue half as late again;
    // slow only at three times that. Overdue, the last block of a read is asked of
    // the other source too.
    let before = t1 + Duration::from_millis(100);
    assert!(s.tick(&[a, b], before).is_empty());
    let at = t1 + Duration::from_millis(200);
    let acts = s.tick(&[a, b], at);
    let dup = send(&mut s, acts, &mut id, at);
    assert_eq!(dup.len(), 1, "{dup:?}");
    assert_ne!(dup[0].1.peer, first[0].1.peer);
}

#[test]
fn a_liar_backs_off_and_the_read_completes_from_the_truthful() {
    let t0 = Instant::now();
    let mut liar = Link::new(50.0 * MB, 2, t0);
    liar.lies = true;
    let honest = Link::new(10.0 * MB, 10, t0);
    let mut links = net(vec![honest, liar]);
    let owner = links.links[0].peer;
    let took = read(&mut links, 48, owner, t0);
    // The liar was asked a few times at most: each lie backs it off longer.
    let liar = links.links[1].peer;
    assert_eq!(links.links[1].sent, 0);
    let asked_of_liar = links.next_id as u64 - links.links[0].sent;
    assert!(asked_of_liar <= 12, "{asked_of_liar} requests to {liar}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn a_peer_lacking_a_drive_is_asked_for_it_last() {
    let t0 = Instant::now();
    let (owner, stranger) = (PeerId::random(), PeerId::random());
    let mut s = S::new(Duration::from_secs(30));
    let mut id = 0;
    let cids = many(4);
    s.want(cids[0], Some(owner), Some("reader"), t0);
    s.want(cids[1], Some(owner), Some("reader"), t0);
    let acts = s.dispatch(&[owner, stranger], t0);
    let out = send(&mut s, acts, &mut id, t0);
    let (to_stranger, _) = out.iter().find(|(_, sent)| sent.peer == stranger).unwrap();
    let sent = s.answered(*to_stranger, 0, t0).unwrap();
    s.settle(*to_stranger, &sent, missing(&sent.cids), t0);
    // New wants of that drive go to the owner, though the stranger is idle.
    for cid in &cids[2..] {
        s.want(*cid, Some(owner), Some("reader"), t0);
    }
    let acts = s.dispatch(&[owner, stranger], t0);
    let out = send(&mut s, acts, &mut id, t0);
    assert!(!out.is_empty());
    assert!(out.iter().all(|(_, sent)| sent.peer == owner), "{out:?}");
}
