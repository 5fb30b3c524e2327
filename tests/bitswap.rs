//! Bitswap against a real IPFS node: a Helia node (npm `helia` and `@helia/bitswap`,
//! loopback only, no bootstrap or routing) fetches from a running daemon by CID and
//! exports byte-identical trees; what strangers may not read it does not get; and
//! malformed messages from a raw libp2p client are refused while the daemon goes on
//! serving.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use peerfs::net::bitswap::wire;
use prost::Message as _;

fn helia_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/helia")
}

/// `node helia.mjs fetch ADDR CID OUT TIMEOUT_MS`: Ok(summary JSON) or Err(stderr).
fn helia_fetch(addr: &str, cid: &str, out: &Path, timeout: Duration) -> Result<String, String> {
    let dir = helia_dir();
    assert!(
        dir.join("node_modules/helia").is_dir(),
        "Helia is not installed: run scripts/install-deps (or `npm ci --prefix {}`)",
        dir.display()
    );
    let out = Command::new("timeout")
        .arg((timeout.as_secs() + 30).to_string())
        .arg("node")
        .arg(dir.join("helia.mjs"))
        .args(["fetch", addr, cid, out.to_str().unwrap()])
        .arg(timeout.as_millis().to_string())
        .output()
        .expect("run node");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn summary(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json:?}: {e}"))
}

/// A 50 MiB file, a 5,000-entry directory (sharded: HAMT), and symlinks.
fn tree(root: &Path) {
    write(&root.join("big.bin"), &bytes(50 << 20, 16));
    for i in 0..5_000 {
        write(
            &root.join(format!("wide/a-rather-long-file-name-number-{i:05}.txt")),
            format!("entry {i}\n").as_bytes(),
        );
    }
    write(&root.join("links/target.txt"), b"pointed at\n");
    let links = root.join("links");
    std::os::unix::fs::symlink("target.txt", links.join("to-file")).unwrap();
    std::os::unix::fs::symlink("../wide", links.join("to-dir")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", links.join("dangling")).unwrap();
}

#[test]
fn helia_fetches_a_big_file_a_hamt_directory_and_symlinks_byte_identical() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let root = repo
        .ok(&["add", "-r", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    let m = Mounted::with_repo(repo);
    let out = dir.path().join("out");
    let got = helia_fetch(&addr(&m), &root, &out, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("Helia could not fetch {root}: {e}"));
    assert_same_tree(&src, &out);
    let s = summary(&got);
    assert!(s["hamtShards"].as_u64().unwrap() >= 1, "no HAMT in {got}");
    assert_eq!(s["symlinks"], 3, "{got}");
    assert_eq!(s["files"], 5_002, "{got}");
    assert!(m.alive());
}

#[test]
fn a_drive_closed_to_strangers_gives_helia_nothing_and_pins_stay_servable() {
    let repo = TestRepo::new();
    let someone_else = TestRepo::new();
    let other_id = someone_else.ok(&["id"]).lines().next().unwrap().to_string();
    repo.set_config("readers", &format!("[{other_id:?}]"));
    let dir = tempfile::tempdir().unwrap();
    let pinned_src = dir.path().join("pinned");
    write(&pinned_src.join("public.txt"), b"pinned, so public\n");
    write(&pinned_src.join("sub/data.bin"), &bytes(300_000, 3));
    let pinned = repo
        .ok(&["add", "-r", "-q", pinned_src.to_str().unwrap()])
        .trim()
        .to_string();
    let mut m = Mounted::with_repo(repo);
    write(&m.drive().join("secret/plans.txt"), &bytes(200_000, 9));
    write(&m.drive().join("secret/note.txt"), b"for my readers only\n");
    fsync_tree(&m.drive());
    let drive_root = cid_of(&m.drive());
    let file = cid_of(&m.drive().join("secret/plans.txt"));
    let a = addr(&m);

    for cid in [&drive_root, &file] {
        let out = dir.path().join(format!("closed-{cid}"));
        let got = helia_fetch(&a, cid, &out, Duration::from_secs(5));
        assert!(got.is_err(), "Helia got {cid} of a closed drive: {got:?}");
    }
    let out = dir.path().join("pinned-out");
    helia_fetch(&a, &pinned, &out, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("a pin must stay servable: {e}"));
    assert_same_tree(&pinned_src, &out);

    // The same drive, opened to everyone: now Helia gets it (so the refusal above was
    // the rule, not a broken fetch).
    m.unmount();
    m.repo.set_config("readers", r#"["*"]"#);
    m.remount();
    let a = addr(&m);
    let out = dir.path().join("open");
    helia_fetch(&a, &drive_root, &out, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("an open drive is served: {e}"));
    assert_same_tree(&m.drive(), &out);
}

const BITSWAP: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
const BITSWAP_110: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.1.0");

/// A bare libp2p node speaking Bitswap by hand.
struct RawClient {
    protocol: StreamProtocol,
    control: libp2p_stream::Control,
    incoming: libp2p_stream::IncomingStreams,
    peer: PeerId,
    swarm: tokio::task::JoinHandle<()>,
}

impl RawClient {
    fn connect(addr: &str) -> RawClient {
        RawClient::speaking(addr, BITSWAP)
    }

    /// A client that speaks only `protocol`.
    fn speaking(addr: &str, protocol: StreamProtocol) -> RawClient {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let mut control = swarm.behaviour().new_control();
        let incoming = control.accept(protocol.clone()).unwrap();
        let addr: Multiaddr = addr.parse().unwrap();
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("{addr} has no /p2p/")
        };
        swarm.dial(addr).unwrap();
        let swarm = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        RawClient {
            protocol,
            control,
            incoming,
            peer,
            swarm,
        }
    }

    /// Opens a stream, writes `bytes` and closes our side; then says whether the
    /// daemon closed its side within 10 s (it refused the message).
    async fn refused(&mut self, bytes: &[u8]) -> bool {
        let mut s = self
            .control
            .open_stream(self.peer, self.protocol.clone())
            .await
            .unwrap();
        let _ = s.write_all(bytes).await;
        let _ = s.close().await;
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Sends `message`: the stream the daemon opens for its answers, if it opens one
    /// before `deadline`.
    async fn send(
        &mut self,
        message: &wire::Message,
        deadline: tokio::time::Instant,
    ) -> Option<libp2p::Stream> {
        let mut s = self
            .control
            .open_stream(self.peer, self.protocol.clone())
            .await
            .unwrap();
        s.write_all(&message.encode_length_delimited_to_vec())
            .await
            .unwrap();
        s.flush().await.unwrap();
        let next = tokio::time::timeout_at(deadline, self.incoming.next()).await;
        next.ok().flatten().map(|(_, s)| s)
    }

    /// Sends `message` and reads the answers the daemon sends on a stream of its own,
    /// until `done` says enough (10 s at most).
    async fn ask(
        &mut self,
        message: &wire::Message,
        mut done: impl FnMut(&[wire::Message]) -> bool,
    ) -> Vec<wire::Message> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let Some(mut answers) = self.send(message, deadline).await else {
            return got;
        };
        while !done(&got) {
            let Ok(Ok(Some(len))) =
                tokio::time::timeout_at(deadline, wire::read_len(&mut answers)).await
            else {
                break;
            };
            match wire::read_body(&mut answers, len).await {
                Ok(m) => got.push(m),
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.swarm.abort();
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

fn want(cid: &str, have: bool) -> wire::Entry {
    let cid: cid::Cid = cid.parse().unwrap();
    wire::Entry {
        block: cid.to_bytes(),
        want_type: if have {
            wire::WantType::Have
        } else {
            wire::WantType::Block
        } as i32,
        send_dont_have: true,
        ..wire::Entry::default()
    }
}

#[test]
fn malformed_messages_are_refused_and_the_daemon_keeps_serving() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("file.bin");
    write(&src, &bytes(100_000, 4));
    let root = repo
        .ok(&["add", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    let m = Mounted::with_repo(repo);
    let a = addr(&m);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut raw = RawClient::connect(&a);
        // Over the 4 MiB limit: refused from its length alone.
        let mut oversized = Vec::new();
        prost::encoding::encode_varint(5 << 20, &mut oversized);
        oversized.extend_from_slice(&[0u8; 1024]);
        assert!(raw.refused(&oversized).await, "oversized");
        // Shorter than its length says.
        let mut truncated = Vec::new();
        prost::encoding::encode_varint(1000, &mut truncated);
        truncated.extend_from_slice(&[0x0a; 10]);
        assert!(raw.refused(&truncated).await, "truncated");
        // Not protobuf.
        assert!(raw.refused(&frame(&[0xff; 40])).await, "garbage");
        // A wantlist whose entry names no CID.
        let bad_cid = wire::Message {
            wantlist: Some(wire::Wantlist {
                entries: vec![wire::Entry {
                    block: b"not a cid".to_vec(),
                    ..wire::Entry::default()
                }],
                full: false,
            }),
            ..wire::Message::default()
        };
        assert!(
            raw.refused(&frame(&bad_cid.encode_to_vec())).await,
            "bad CID"
        );
        // 100,000 empty entries: a small message that would decode into many.
        let mut entries = Vec::new();
        for _ in 0..100_000 {
            entries.extend([0x0a, 0]);
        }
        let mut flood = vec![0x0a];
        prost::encoding::encode_varint(entries.len() as u64, &mut flood);
        flood.extend(entries);
        assert!(raw.refused(&frame(&flood)).await, "a flood of entries");
        drop(raw);

        // A well-formed wantlist from a second client: the block, and DONT_HAVE for
        // what is not here.
        let absent = peerfs::block::Block::hash(
            cid::Version::V1,
            peerfs::block::RAW,
            b"nobody has this".to_vec(),
        )
        .cid()
        .to_string();
        let mut raw = RawClient::connect(&a);
        let ask = wire::Message {
            wantlist: Some(wire::Wantlist {
                entries: vec![want(&root, false), want(&absent, true)],
                full: false,
            }),
            ..wire::Message::default()
        };
        let answers = raw
            .ask(&ask, |got| {
                let blocks: usize = got.iter().map(|m| m.payload.len()).sum();
                let presences: usize = got.iter().map(|m| m.block_presences.len()).sum();
                blocks >= 1 && presences >= 1
            })
            .await;
        let blocks: Vec<&wire::PayloadBlock> = answers.iter().flat_map(|m| &m.payload).collect();
        assert_eq!(blocks.len(), 1, "{answers:?}");
        let root_cid: cid::Cid = root.parse().unwrap();
        assert_eq!(blocks[0].prefix, wire::prefix(&root_cid));
        peerfs::block::verify(&root_cid, &blocks[0].data).expect("the block hashes to its CID");
        let presences: Vec<&wire::BlockPresence> =
            answers.iter().flat_map(|m| &m.block_presences).collect();
        assert_eq!(presences.len(), 1, "{answers:?}");
        assert_eq!(
            presences[0].cid,
            absent.parse::<cid::Cid>().unwrap().to_bytes()
        );
        assert_eq!(presences[0].r#type, wire::PresenceType::DontHave as i32);
        drop(raw);

        // A 1.1.0 peer gets its answer on 1.1.0: the block with its prefix, and no
        // presences (1.1.0 has none).
        let mut old = RawClient::speaking(&a, BITSWAP_110);
        let answers = old
            .ask(&ask, |got| got.iter().any(|m| !m.payload.is_empty()))
            .await;
        let blocks: Vec<&wire::PayloadBlock> = answers.iter().flat_map(|m| &m.payload).collect();
        assert_eq!(blocks.len(), 1, "{answers:?}");
        assert_eq!(blocks[0].prefix, wire::prefix(&root_cid));
        assert!(answers.iter().all(|m| m.block_presences.is_empty()));
    });
    assert!(m.alive(), "the daemon died");
    // And an IPFS node still gets the file.
    let out = dir.path().join("out.bin");
    helia_fetch(&a, &root, &out, Duration::from_secs(30)).expect("Helia after the garbage");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&src).unwrap());
}

/// Asks for `cid` (want-block) on a stream of our own; returns the stream the daemon
/// answers on, unread, within 10 s.
async fn answer_stream(raw: &mut RawClient, cid: &str) -> Option<libp2p::Stream> {
    let ask = wire::Message {
        wantlist: Some(wire::Wantlist {
            entries: vec![want(cid, false)],
            full: false,
        }),
        ..wire::Message::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    raw.send(&ask, deadline).await
}

#[test]
fn a_peer_that_stops_reading_one_answer_still_gets_the_next_ones() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("file.bin");
    write(&src, &bytes(3 << 20, 17));
    let root = repo
        .ok(&["add", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    let m = Mounted::with_repo(repo);
    let a = addr(&m);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut raw = RawClient::connect(&a);
        let got = raw
            .ask(
                &wire::Message {
                    wantlist: Some(wire::Wantlist {
                        entries: vec![want(&root, false)],
                        full: false,
                    }),
                    ..wire::Message::default()
                },
                |got| got.iter().any(|m| !m.payload.is_empty()),
            )
            .await;
        let node = got
            .iter()
            .flat_map(|m| &m.payload)
            .next()
            .expect("the root");
        let root_cid: cid::Cid = root.parse().unwrap();
        let leaves = peerfs::car::links(&root_cid, &node.data).unwrap();
        assert!(leaves.len() >= 3, "{leaves:?}");
        // The first leaf's answer (1 MiB, past the stream's window) is left unread:
        // its write stalls.
        let _stalled = answer_stream(&mut raw, &leaves[0].to_string())
            .await
            .expect("an answer stream for the first leaf");
        // The next leaves are answered meanwhile, not after the stalled write gives up.
        for leaf in &leaves[1..3] {
            let t0 = std::time::Instant::now();
            let mut s = answer_stream(&mut raw, &leaf.to_string())
                .await
                .unwrap_or_else(|| panic!("{leaf} not answered while an answer stalls"));
            let len = wire::read_len(&mut s).await.unwrap().unwrap();
            let m = wire::read_body(&mut s, len).await.unwrap();
            let block = m.payload.first().expect("a block");
            peerfs::block::verify(leaf, &block.data).expect("the leaf hashes to its CID");
            assert!(t0.elapsed() < Duration::from_secs(10));
        }
    });
    assert!(m.alive(), "the daemon died");
}

/// `node helia.mjs serve FILE`: a Helia node holding FILE, killed (by PID) on drop.
struct HeliaServer {
    child: std::process::Child,
    cid: String,
    addr: String,
}

impl HeliaServer {
    fn start(file: &Path) -> HeliaServer {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("node")
            .arg(helia_dir().join("helia.mjs"))
            .arg("serve")
            .arg(file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start Helia");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("Helia says what it serves");
        let mut words = line.split_whitespace();
        let (Some(cid), Some(addr)) = (words.next(), words.next()) else {
            let _ = child.kill();
            panic!("Helia printed {line:?}");
        };
        HeliaServer {
            cid: cid.to_string(),
            addr: addr.to_string(),
            child,
        }
    }

    fn peer_id(&self) -> &str {
        self.addr.rsplit('/').next().unwrap()
    }
}

impl Drop for HeliaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_cid_nobody_here_has_comes_from_a_connected_helia_node_verified() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("from-helia.bin");
    write(&file, &bytes(3 << 20, 21));
    let helia = HeliaServer::start(&file);
    let repo = TestRepo::new();
    repo.set_config("bootstrap", &format!("[{:?}]", helia.addr));
    repo.set_config("fetch_timeout", r#""8s""#);
    let m = Mounted::with_repo(repo);
    wait_for(
        "the daemon to connect to Helia",
        Duration::from_secs(20),
        || m.repo.ok(&["status", "--json"]).contains(helia.peer_id()),
    );

    let out = m.repo.command(&["cat", &helia.cid]).output().unwrap();
    assert!(
        out.status.success(),
        "cat over Bitswap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, fs::read(&file).unwrap());
    let got = dir.path().join("got.bin");
    m.repo.ok(&["get", &helia.cid, got.to_str().unwrap()]);
    assert_eq!(fs::read(&got).unwrap(), fs::read(&file).unwrap());
    assert!(m.repo.ok(&["ls", &helia.cid]).contains(&helia.cid));
    // Pinned, it stays when Helia is gone.
    m.repo.ok(&["pin", &helia.cid]);
    assert!(m.repo.ok(&["pins"]).contains(&helia.cid));
    let cid = helia.cid.clone();
    drop(helia);
    // A sweep takes what only the cache held; the pin's blocks stay.
    m.repo.ok(&["gc"]);
    let out = m.repo.command(&["cat", &cid]).output().unwrap();
    assert_eq!(
        out.stdout,
        fs::read(&file).unwrap(),
        "the pin, without Helia"
    );

    // What Helia does not have either: a clear error within the deadline, no hang.
    let absent = peerfs::block::Block::hash(
        cid::Version::V1,
        peerfs::block::RAW,
        b"neither has this".to_vec(),
    )
    .cid()
    .to_string();
    let started = std::time::Instant::now();
    let err = m.repo.fails(&["cat", &absent]);
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");
    assert!(err.contains(&absent), "{err}");
}
