//! A raw libp2p client sends malformed, truncated and oversized `/peerfs/block/1` and
//! `/peerfs/head/1` messages to a running daemon; each is refused, the daemon lives on,
//! and an honest peer is still served. A stranger asking a follower for a restricted
//! drive's cached blocks, however it words the request, gets none.

mod common;

use std::io;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::Codec as _;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol};
use peerfs::net::protocol::{
    encode, BlockCodec, BlockRequest, BlockResponse, BLOCK_PROTOCOL, HEAD_PROTOCOL,
};

use common::raw::{frame, send_all};
use common::{cid_of, follow, peer_id, wait_for, write, Mounted, TestRepo};

/// Every exchange of a raw client, at most.
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn hostile_messages_are_refused_and_the_daemon_keeps_serving() {
    // Open to everyone: the test client is a stranger.
    let a = Mounted::readable_by_everyone();
    write(&a.drive().join("f.txt"), b"still served\n");
    std::thread::sleep(Duration::from_millis(1500));
    let addr: Multiaddr = a
        .repo
        .ok(&["id"])
        .lines()
        .nth(1)
        .expect("address")
        .parse()
        .unwrap();
    let root_cid = {
        let out = std::process::Command::new("getfattr")
            .args(["--only-values", "-n", "user.peerfs.cid"])
            .arg(a.drive())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let root: cid::Cid = root_cid.parse().unwrap();

    // A well-formed request through the same client is answered: the harness works.
    let good = encode(
        &BlockRequest {
            want: vec![serde_bytes::ByteBuf::from(root.to_bytes())],
            owner: None,
        },
        1 << 20,
    )
    .unwrap();
    let hostile = vec![
        good.clone(),
        frame(u32::MAX, b""),          // oversized, by its length alone
        frame(64 << 20, &[0u8; 1024]), // oversized and partly sent
        frame(100, &[0xa1, 0x64]),     // truncated
        frame(3, &[0xff, 0x00, 0x13]), // not DAG-CBOR
        frame(2, &[0xa0, 0x00]),       // CBOR, wrong shape
        vec![0x00, 0x00],              // not even a length
        Vec::new(),                    // nothing at all
    ];
    let results = send_all(&addr, BLOCK_PROTOCOL, hostile, WAIT);
    let answered = results[0].as_ref().expect("the good request is answered");
    assert!(answered.len() > 4, "an empty answer to a good request");
    // Refused: the stream fails, or closes with no answer.
    let refused = |r: &Result<Vec<u8>, String>| r.as_ref().map_or(true, Vec::is_empty);
    for (i, r) in results.iter().enumerate().skip(1) {
        assert!(refused(r), "hostile block message {i} got an answer: {r:?}");
    }
    let results = send_all(
        &addr,
        HEAD_PROTOCOL,
        vec![frame(u32::MAX, b""), frame(5, b"junk!")],
        WAIT,
    );
    assert!(results.iter().all(refused), "{results:?}");

    // The daemon is alive and serves an honest follower.
    assert!(a.alive());
    let b = Mounted::new();
    b.repo
        .ok(&["peer", "add", &addr.to_string(), "--name", "alice"]);
    let file = b.mnt.path().join("peers/alice/f.txt");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&file).ok().as_deref() != Some("still served\n") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "bob never read alice's file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A block request for `cid`, saying it is of `owner`'s drive (or not saying).
fn block_request(cid: &str, owner: Option<&str>) -> Vec<u8> {
    let cid: cid::Cid = cid.parse().unwrap();
    let owner = owner.map(|o| {
        let peer: libp2p::PeerId = o.parse().unwrap();
        serde_bytes::ByteBuf::from(peer.to_bytes())
    });
    let request = BlockRequest {
        want: vec![serde_bytes::ByteBuf::from(cid.to_bytes())],
        owner,
    };
    encode(&request, 1 << 20).unwrap()
}

fn block_response(answer: &Result<Vec<u8>, String>) -> BlockResponse {
    let bytes = answer.as_ref().expect("an answer");
    libp2p::futures::executor::block_on(BlockCodec.read_response(&BLOCK_PROTOCOL, &mut &bytes[..]))
        .expect("a block response")
}

fn sent_blocks(r: &BlockResponse) -> usize {
    match r {
        BlockResponse::Blocks { blocks, .. } => blocks.len(),
        _ => 0,
    }
}

#[test]
fn a_follower_passes_on_no_cached_block_of_a_restricted_drive() {
    let b = Mounted::readable_by_everyone();
    let a_repo = TestRepo::new();
    a_repo.set_config("readers", &format!("[\"{}\"]", peer_id(&b)));
    let a = Mounted::with_repo(a_repo);
    write(&a.drive().join("secret.txt"), b"for bob only\n");
    write(&b.drive().join("mine.txt"), b"bob's own\n");
    follow(&b, &a, "alice");
    let secret = b.mnt.path().join("peers/alice/secret.txt");
    wait_for("bob reads alice's secret", Duration::from_secs(15), || {
        std::fs::read_to_string(&secret).is_ok_and(|t| t == "for bob only\n")
    });
    wait_for("bob's own file committed", Duration::from_secs(5), || {
        !cid_of(&b.drive().join("mine.txt")).is_empty()
    });
    let (secret_cid, mine_cid) = (cid_of(&secret), cid_of(&b.drive().join("mine.txt")));
    let addr: Multiaddr = common::addr(&b).parse().unwrap();
    let alice = peer_id(&a);
    // A stranger asks bob: for bob's own file (served: bob's readers are everyone), and
    // for alice's cached block without naming alice, naming alice, and naming itself
    // or someone else as the owner.
    let stranger = libp2p::PeerId::random().to_string();
    let results = send_all(
        &addr,
        BLOCK_PROTOCOL,
        vec![
            block_request(&mine_cid, None),
            block_request(&secret_cid, None),
            block_request(&secret_cid, Some(&alice)),
            block_request(&secret_cid, Some(&peer_id(&b))),
            block_request(&secret_cid, Some(&stranger)),
        ],
        WAIT,
    );
    let responses: Vec<BlockResponse> = results.iter().map(block_response).collect();
    assert_eq!(sent_blocks(&responses[0]), 1, "bob serves his own blocks");
    for (i, r) in responses.iter().enumerate().skip(1) {
        assert_eq!(sent_blocks(r), 0, "request {i} got alice's block: {r:?}");
    }
    assert!(
        matches!(responses[2], BlockResponse::Refused { .. }),
        "naming a restricted owner is refused: {:?}",
        responses[2]
    );
}

/// Sends requests as given; reads each answer to its end and keeps only its length, so
/// a flood costs this side nothing.
#[derive(Clone, Default)]
struct Discard;

impl request_response::Codec for Discard {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = usize;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("a client only"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<usize>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match io.read(&mut buf).await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: usize) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::Error::other("a client only"))
    }
}

/// `clients` raw clients each keep `each` copies of `request` in flight to `addr` for
/// `how_long`; returns how many answers came back with blocks in them (over 1 MiB).
async fn flood(
    addr: Multiaddr,
    request: Vec<u8>,
    clients: usize,
    each: usize,
    how_long: Duration,
) -> usize {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, request) = (addr.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut swarm = libp2p::SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(|_| {
                    request_response::Behaviour::<Discard>::new(
                        [(BLOCK_PROTOCOL, ProtocolSupport::Outbound)],
                        request_response::Config::default()
                            .with_request_timeout(Duration::from_secs(30))
                            .with_max_concurrent_streams(each),
                    )
                })
                .unwrap()
                .build();
            let mut addr = addr;
            let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.pop() else {
                panic!("no /p2p/ in {addr}")
            };
            swarm.add_peer_address(peer, addr);
            for _ in 0..each {
                swarm.behaviour_mut().send_request(&peer, request.clone());
            }
            let mut full = 0;
            let end = tokio::time::Instant::now() + how_long;
            while let Ok(event) = tokio::time::timeout_at(end, swarm.select_next_some()).await {
                let SwarmEvent::Behaviour(e) = event else {
                    continue;
                };
                match e {
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    } => {
                        if response > 1 << 20 {
                            full += 1;
                        }
                        swarm.behaviour_mut().send_request(&peer, request.clone());
                    }
                    request_response::Event::OutboundFailure { .. } => {
                        swarm.behaviour_mut().send_request(&peer, request.clone());
                    }
                    _ => {}
                }
            }
            full
        }));
    }
    let mut full = 0;
    for t in tasks {
        full += t.await.unwrap();
    }
    full
}

/// Peak resident memory of process `pid` (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

/// The daemon's peak memory while it is flooded stays under this. Serving holds at
/// most 16 answers of ~5 MiB (see `net::serve`); the rest is the daemon at rest
/// (RocksDB's memtables, the runtime) and a margin.
const FLOODED_RSS_BOUND_MIB: u64 = 400;

#[test]
fn a_thousand_concurrent_requests_stay_bounded_and_an_honest_peer_is_served() {
    // Open to everyone, so the flooding strangers are served, not refused.
    let a = Mounted::readable_by_everyone();
    // Sixteen files of one 1 MiB block each: a request for all of them is answered
    // with ~5 MiB (the response budget and the block over it).
    for i in 0..16 {
        write(
            &a.drive().join(format!("f{i}.bin")),
            &common::bytes(1 << 20, i),
        );
    }
    write(&a.drive().join("honest.bin"), &common::bytes(3 << 20, 99));
    let cids: Vec<String> = (0..16)
        .map(|i| {
            let path = a.drive().join(format!("f{i}.bin"));
            let mut cid = String::new();
            wait_for("a file's CID", Duration::from_secs(5), || {
                cid = cid_of(&path);
                !cid.is_empty()
            });
            cid
        })
        .collect();
    let request = encode(
        &BlockRequest {
            want: cids
                .iter()
                .map(|c| serde_bytes::ByteBuf::from(c.parse::<cid::Cid>().unwrap().to_bytes()))
                .collect(),
            owner: None,
        },
        1 << 20,
    )
    .unwrap();
    let addr: Multiaddr = common::addr(&a).parse().unwrap();
    let at_rest = peak_rss_mib(a.pid);

    let b = Mounted::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Eight clients, 125 requests in flight each, for 8 s; meanwhile B follows A and
    // reads a file of A's it has never seen.
    let flooding = runtime.spawn(flood(addr, request, 8, 125, Duration::from_secs(8)));
    std::thread::sleep(Duration::from_secs(1));
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice/honest.bin");
    let took = wait_for(
        "B reads A's file during the flood",
        Duration::from_secs(20),
        || std::fs::read(&theirs).is_ok_and(|d| d == common::bytes(3 << 20, 99)),
    );
    let full = runtime.block_on(flooding).unwrap();
    let peak = peak_rss_mib(a.pid);
    eprintln!(
        "flood: {full} full answers; A's peak RSS {peak} MiB (at rest {at_rest} MiB); \
         B read its file in {took:?}"
    );
    assert!(full > 0, "the flood was served at all");
    assert!(a.alive());
    assert!(
        peak < FLOODED_RSS_BOUND_MIB,
        "A's peak RSS was {peak} MiB under the flood (bound {FLOODED_RSS_BOUND_MIB} MiB)"
    );
}
