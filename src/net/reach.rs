//! Reaching followed peers: why a dial failed, in words a user can act on; each
//! followed peer's last failure and when (for `peerfs peers`); the answers `peer add`
//! waits for; and which failures are worth a line in the log. A state machine with no
//! swarm inside: the event loop tells it what happened and carries out its answers.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// How long `peer add` waits to hear how its dial went: past libp2p's connection
/// timeout (10 s), so a silent address is reported as timed out by the dial itself.
pub const REPORT_WAIT: Duration = Duration::from_secs(11);
/// After connecting, how long `peer add` waits for the first ping to give an RTT.
const RTT_WAIT: Duration = Duration::from_secs(2);
/// The same failure of the same peer is logged again after this long (a reminder that
/// it still fails), not at every redial.
pub const RELOG_AFTER: Duration = Duration::from_secs(600);
/// Addresses named in one failure, at most.
const ADDRS_SHOWN: usize = 3;

/// Why a dial failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DialFailure {
    /// Nothing listens at the address (a wrong port, a daemon that is not running).
    Refused {
        addr: String,
    },
    /// No answer in time (a wrong host, a firewall, something that is not peerfs).
    TimedOut {
        addr: Option<String>,
    },
    /// A node answered, but it is someone else: the peer ID is mistyped, or the
    /// address now belongs to another node.
    WrongPeer {
        addr: String,
        obtained: String,
    },
    /// Nowhere to dial yet: a bare peer ID that the DHT or mDNS has not found.
    NoAddress,
    Other {
        message: String,
    },
}

impl fmt::Display for DialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialFailure::Refused { addr } => write!(f, "connection refused at {addr}"),
            DialFailure::TimedOut { addr: Some(addr) } => write!(f, "timed out at {addr}"),
            DialFailure::TimedOut { addr: None } => write!(f, "timed out"),
            DialFailure::WrongPeer { addr, obtained } => write!(
                f,
                "wrong peer ID: the node at {addr} is {obtained}, someone else"
            ),
            DialFailure::NoAddress => write!(
                f,
                "no address known; it is dialled once the DHT or mDNS finds one"
            ),
            DialFailure::Other { message } => f.write_str(message),
        }
    }
}

impl DialFailure {
    /// What a dial error means for the user; `None` for a dial that did not really
    /// fail (another dial was under way, or it was called off).
    pub fn of(error: &DialError) -> Option<DialFailure> {
        Some(match error {
            DialError::DialPeerConditionFalse(_) | DialError::Aborted => return None,
            DialError::NoAddresses => DialFailure::NoAddress,
            DialError::WrongPeerId { obtained, address } => DialFailure::WrongPeer {
                addr: address.to_string(),
                obtained: obtained.to_string(),
            },
            DialError::LocalPeerId { address } => DialFailure::Other {
                message: format!("{address} is this node itself"),
            },
            DialError::Denied { cause } => DialFailure::Other {
                message: format!("not dialled: {cause}"),
            },
            DialError::Transport(tried) => return Some(Self::of_transport(tried)),
        })
    }

    /// The failure at each address tried, summed up: the first one's kind, naming up
    /// to `ADDRS_SHOWN` addresses.
    fn of_transport<E: fmt::Debug + fmt::Display>(tried: &[(Multiaddr, E)]) -> DialFailure {
        let Some((_, error)) = tried.first() else {
            return DialFailure::NoAddress;
        };
        let mut addrs: Vec<String> = Vec::new();
        for (a, _) in tried {
            let a = a.to_string();
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        let more = addrs.len().saturating_sub(ADDRS_SHOWN);
        addrs.truncate(ADDRS_SHOWN);
        if more > 0 {
            addrs.push(format!("and {more} more"));
        }
        let addr = addrs.join(", ");
        // The transports wrap their io errors a few layers deep; the chain's debug
        // text names the kind whichever layer it is in.
        let text = format!("{error:?} {error}").to_lowercase();
        if text.contains("connectionrefused") || text.contains("connection refused") {
            DialFailure::Refused { addr }
        } else if text.contains("timeout") || text.contains("timed out") {
            DialFailure::TimedOut { addr: Some(addr) }
        } else {
            DialFailure::Other {
                message: format!("{error} at {addr}"),
            }
        }
    }
}

/// What `peer add` is told about its dial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DialReport {
    Connected {
        addr: Option<String>,
        rtt_ms: Option<f64>,
    },
    Failed(DialFailure),
}

/// A log line to write about a dial failure.
#[derive(Debug, PartialEq, Eq)]
pub struct FailureLine {
    /// Failures of this peer since the last line, not logged.
    pub unlogged: u32,
}

#[derive(Default)]
struct PeerReach {
    /// The last failure, and when (ms since the Unix epoch); cleared on connecting.
    last: Option<(DialFailure, u64)>,
    /// What the log said last (its kind counts), and when.
    logged: Option<(DialFailure, Instant)>,
    unlogged: u32,
}

struct Waiter<W> {
    peer: PeerId,
    reply: W,
    deadline: Instant,
    /// Connected at this address; the report waits for the first RTT until `deadline`.
    connected: Option<Option<String>>,
    /// A failure that did not settle it (no address yet, while the DHT looks): the
    /// answer at `deadline` unless the peer connects first.
    unsettled: Option<DialFailure>,
}

/// Followed peers' dial outcomes, and `peer add`s waiting for one.
pub struct Reach<W> {
    peers: HashMap<PeerId, PeerReach>,
    waiting: Vec<Waiter<W>>,
}

impl<W> Default for Reach<W> {
    fn default() -> Self {
        Reach {
            peers: HashMap::new(),
            waiting: Vec::new(),
        }
    }
}

impl<W> Reach<W> {
    /// `reply` waits to hear how the next dial of `peer` goes, until `REPORT_WAIT`.
    pub fn wait(&mut self, peer: PeerId, reply: W, now: Instant) {
        self.waiting.push(Waiter {
            peer,
            reply,
            deadline: now + REPORT_WAIT,
            connected: None,
            unsettled: None,
        });
    }

    /// A dial of followed `peer` failed at `now_ms`. Returns the waiters' answers, and
    /// a log line if this failure is news (another reason than the last one logged, or
    /// the same one long ago). A failure that is not `settled` (no address known yet,
    /// while a lookup may still find one) answers the waiters only at their deadline,
    /// unless the peer connects before.
    pub fn failed(
        &mut self,
        peer: PeerId,
        failure: DialFailure,
        settled: bool,
        now: Instant,
        now_ms: u64,
    ) -> (Vec<(W, DialReport)>, Option<FailureLine>) {
        let state = self.peers.entry(peer).or_default();
        state.last = Some((failure.clone(), now_ms));
        // Of the same kind is no news: which of a peer's addresses were tried varies
        // from dial to dial (the DHT and identify add some).
        let news = state.logged.as_ref().is_none_or(|(said, when)| {
            std::mem::discriminant(said) != std::mem::discriminant(&failure)
                || now.duration_since(*when) >= RELOG_AFTER
        });
        let line = if news {
            let line = FailureLine {
                unlogged: state.unlogged,
            };
            state.logged = Some((failure.clone(), now));
            state.unlogged = 0;
            Some(line)
        } else {
            state.unlogged += 1;
            None
        };
        if !settled {
            for w in self.waiting.iter_mut().filter(|w| w.peer == peer) {
                w.unsettled = Some(failure.clone());
            }
            return (Vec::new(), line);
        }
        let answers = self.answer(|w| {
            (w.peer == peer && w.connected.is_none()).then(|| DialReport::Failed(failure.clone()))
        });
        (answers, line)
    }

    /// The lookup for `peer` ended without an address: the waiters that only had an
    /// unsettled failure hear it now.
    pub fn settle(&mut self, peer: &PeerId) -> Vec<(W, DialReport)> {
        self.answer(|w| {
            let failure = w.unsettled.as_ref().filter(|_| w.peer == *peer);
            failure
                .filter(|_| w.connected.is_none())
                .map(|f| DialReport::Failed(f.clone()))
        })
    }

    /// `peer` connected (at `addr`). Returns whether its failures had been logged (so
    /// the log says it is reachable again).
    pub fn connected(&mut self, peer: PeerId, addr: Option<String>, now: Instant) -> bool {
        for w in self.waiting.iter_mut().filter(|w| w.peer == peer) {
            if w.connected.is_none() {
                w.connected = Some(addr.clone());
                w.deadline = w.deadline.min(now + RTT_WAIT);
            }
        }
        self.peers
            .remove(&peer)
            .is_some_and(|state| state.logged.is_some())
    }

    /// The first RTT measured to `peer`: the waiters it connected for are answered.
    pub fn rtt(&mut self, peer: PeerId, rtt: Duration) -> Vec<(W, DialReport)> {
        self.answer(|w| {
            let addr = w.connected.as_ref().filter(|_| w.peer == peer)?;
            Some(DialReport::Connected {
                addr: addr.clone(),
                rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
            })
        })
    }

    /// Time passed: waiters past their deadline are answered with what is known.
    pub fn tick(&mut self, now: Instant) -> Vec<(W, DialReport)> {
        self.answer(|w| {
            (w.deadline <= now).then(|| match &w.connected {
                Some(addr) => DialReport::Connected {
                    addr: addr.clone(),
                    rtt_ms: None,
                },
                None => DialReport::Failed(
                    w.unsettled
                        .clone()
                        .unwrap_or(DialFailure::TimedOut { addr: None }),
                ),
            })
        })
    }

    /// The last failure to reach `peer` and when, unless it connected since.
    pub fn last_failure(&self, peer: &PeerId) -> Option<&(DialFailure, u64)> {
        self.peers.get(peer)?.last.as_ref()
    }

    /// `peer` is no longer followed.
    pub fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Takes out the waiters `decide` has an answer for.
    fn answer(
        &mut self,
        mut decide: impl FnMut(&Waiter<W>) -> Option<DialReport>,
    ) -> Vec<(W, DialReport)> {
        let mut out = Vec::new();
        let mut kept = Vec::with_capacity(self.waiting.len());
        for w in self.waiting.drain(..) {
            match decide(&w) {
                Some(report) => out.push((w.reply, report)),
                None => kept.push(w),
            }
        }
        self.waiting = kept;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(port: u16) -> DialFailure {
        DialFailure::Refused {
            addr: format!("/ip4/127.0.0.1/tcp/{port}"),
        }
    }

    #[test]
    fn transport_errors_are_named_by_what_went_wrong() {
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let wrapped = std::io::Error::other(refused);
        assert_eq!(
            DialFailure::of_transport(&[(addr.clone(), wrapped)]),
            DialFailure::Refused {
                addr: addr.to_string()
            }
        );
        let timeout = std::io::Error::other("Timeout has been reached");
        assert!(matches!(
            DialFailure::of_transport(&[(addr.clone(), timeout)]),
            DialFailure::TimedOut { .. }
        ));
        let odd = std::io::Error::other("no route to host");
        let text = DialFailure::of_transport(&[(addr, odd)]).to_string();
        assert!(
            text.contains("no route to host") && text.contains("tcp/9"),
            "{text}"
        );
    }

    #[test]
    fn a_waiting_peer_add_hears_the_failure_the_rtt_or_a_timeout() {
        let t0 = Instant::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut r = Reach::default();
        r.wait(a, "a", t0);
        r.wait(b, "b", t0);
        r.wait(c, "c", t0);
        let (answers, line) = r.failed(a, refused(1), true, t0, 1);
        assert_eq!(answers, vec![("a", DialReport::Failed(refused(1)))]);
        assert!(line.is_some());
        assert!(!r.connected(b, Some("/ip4/1.2.3.4/tcp/5".into()), t0));
        assert!(
            r.failed(b, refused(2), true, t0, 2).0.is_empty(),
            "b is connected"
        );
        let answers = r.rtt(b, Duration::from_millis(3));
        assert_eq!(answers.len(), 1);
        assert!(matches!(
            answers[0].1,
            DialReport::Connected {
                rtt_ms: Some(_),
                ..
            }
        ));
        assert!(r.tick(t0 + Duration::from_secs(1)).is_empty());
        let late = r.tick(t0 + REPORT_WAIT);
        assert_eq!(
            late,
            vec![(
                "c",
                DialReport::Failed(DialFailure::TimedOut { addr: None })
            )]
        );
        assert!(r.waiting.is_empty());
    }

    #[test]
    fn no_address_while_a_lookup_runs_is_told_at_the_deadline_unless_it_connects() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut r = Reach::default();
        r.wait(a, "a", t0);
        r.wait(b, "b", t0);
        assert!(r
            .failed(a, DialFailure::NoAddress, false, t0, 1)
            .0
            .is_empty());
        assert!(r
            .failed(b, DialFailure::NoAddress, false, t0, 1)
            .0
            .is_empty());
        // The DHT found b: it connects, relayed.
        r.connected(b, Some("/p2p/R/p2p-circuit".into()), t0);
        let answers = r.rtt(b, Duration::from_millis(30));
        assert!(matches!(answers[..], [("b", DialReport::Connected { .. })]));
        let late = r.tick(t0 + REPORT_WAIT);
        assert_eq!(
            late,
            vec![("a", DialReport::Failed(DialFailure::NoAddress))]
        );
        assert_eq!(r.last_failure(&a), Some(&(DialFailure::NoAddress, 1)));
        // A lookup that ends finding nothing settles it at once.
        r.wait(a, "a again", t0);
        assert!(r.settle(&a).is_empty(), "no failure yet");
        r.failed(a, DialFailure::NoAddress, false, t0, 2);
        assert_eq!(
            r.settle(&a),
            vec![("a again", DialReport::Failed(DialFailure::NoAddress))]
        );
    }

    #[test]
    fn the_log_hears_of_a_failure_when_it_changes_not_at_every_redial() {
        let t0 = Instant::now();
        let p = PeerId::random();
        let mut r: Reach<()> = Reach::default();
        assert_eq!(
            r.failed(p, refused(1), true, t0, 1).1,
            Some(FailureLine { unlogged: 0 })
        );
        for i in 0..5 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(r.failed(p, refused(1), true, at, 2).1, None);
        }
        assert_eq!(r.last_failure(&p), Some(&(refused(1), 2)));
        // At another address is the same news; another reason is news, and so is the
        // same one much later.
        assert_eq!(r.failed(p, refused(2), true, t0, 3).1, None);
        let timed_out = DialFailure::TimedOut { addr: None };
        assert_eq!(
            r.failed(p, timed_out.clone(), true, t0, 3).1,
            Some(FailureLine { unlogged: 6 })
        );
        assert!(r
            .failed(p, timed_out, true, t0 + RELOG_AFTER, 4)
            .1
            .is_some());
        // Reached again: the log is told, and the failure is gone from `peers`.
        assert!(r.connected(p, None, t0));
        assert_eq!(r.last_failure(&p), None);
        assert!(!r.connected(p, None, t0));
    }
}
