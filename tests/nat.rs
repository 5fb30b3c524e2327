//! Reaching a peer behind NAT, in a lab of network namespaces: an "internet" (a bridge),
//! a relay R on it, and two homes, each a router (nftables) with one host behind it: A
//! behind router 1, B behind router 2. B knows only A's peer ID and R's address.
//!
//! The routers are home routers: masquerade (which keeps the inside port) and a firewall
//! that drops what nobody inside asked for, at the router's own input, before conntrack
//! confirms it; so the early packet of a hole punch leaves no entry behind that would
//! make masquerade pick another port for the inside host's own packet (measured here:
//! with that entry confirmed, a simultaneous TCP open through two such routers fails).
//! The endpoint-independent mapping makes the punched hole work; the address- and
//! port-dependent filtering makes AutoNAT's dial back (from a new port) fail, so A and B
//! know they are private. With `masquerade random,fully-random` (a symmetric NAT) every
//! new destination gets a new port, and punching fails: blocks go through the relay.
//!
//! Daemons run with `nsenter --net` (the network only): their FUSE mounts stay where
//! the test sees them. Everything the lab makes is named after this run and removed on
//! drop, a panic included.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_same_tree, bytes, daemon_pid, wait_for, write, Mounted, TestRepo};

const RELAY_IP: &str = "10.200.0.10";
const PORT: u16 = 4011;

#[derive(Clone, Copy, PartialEq)]
enum Nat {
    /// Endpoint-independent mapping, port-dependent filtering.
    Home,
    /// A new port for every destination.
    Symmetric,
}

/// The lab's namespaces, removed on drop.
struct Lab {
    prefix: String,
}

fn ip(args: &str) {
    run("ip", &args.split_whitespace().collect::<Vec<_>>(), None);
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e} (scripts/install-deps installs it)"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new(tag: &str, nat: Nat) -> Lab {
        let lab = Lab {
            prefix: format!("pfsnat{}{tag}", std::process::id()),
        };
        for n in ["inet", "r", "r1", "r2", "a", "b"] {
            ip(&format!("netns add {}", lab.ns(n)));
            ip(&format!("-n {} link set lo up", lab.ns(n)));
        }
        let inet = lab.ns("inet");
        ip(&format!("-n {inet} link add br0 type bridge"));
        ip(&format!("-n {inet} link set br0 up"));
        // Each of R and the routers on the internet bridge.
        for (n, dev, port, addr) in [
            ("r", "eth0", "pr", RELAY_IP),
            ("r1", "wan", "p1", "10.200.0.1"),
            ("r2", "wan", "p2", "10.200.0.2"),
        ] {
            let ns = lab.ns(n);
            ip(&format!(
                "-n {ns} link add {dev} type veth peer name {port} netns {inet}"
            ));
            ip(&format!("-n {inet} link set {port} master br0 up"));
            ip(&format!("-n {ns} addr add {addr}/24 dev {dev}"));
            ip(&format!("-n {ns} link set {dev} up"));
        }
        lab.home("r1", "a", 1, nat);
        lab.home("r2", "b", 2, nat);
        lab
    }

    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Home `i`: `router`'s LAN 10.20i.i.0/24 with `host` at .2 behind it.
    fn home(&self, router: &str, host: &str, i: u8, nat: Nat) {
        let (r, h) = (self.ns(router), self.ns(host));
        ip(&format!(
            "-n {r} link add lan type veth peer name eth0 netns {h}"
        ));
        ip(&format!("-n {r} addr add 10.20{i}.{i}.1/24 dev lan"));
        ip(&format!("-n {r} link set lan up"));
        ip(&format!("-n {h} addr add 10.20{i}.{i}.2/24 dev eth0"));
        ip(&format!("-n {h} link set eth0 up"));
        ip(&format!("-n {h} route add default via 10.20{i}.{i}.1"));
        run(
            "ip",
            &[
                "netns",
                "exec",
                &r,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            None,
        );
        let masquerade = match nat {
            Nat::Home => "masquerade",
            Nat::Symmetric => "masquerade random,fully-random",
        };
        let rules = format!(
            "table ip nat {{
               chain postrouting {{ type nat hook postrouting priority srcnat; oifname \"wan\" {masquerade}; }}
             }}
             table ip filter {{
               chain input {{ type filter hook input priority filter; policy accept;
                 iifname \"wan\" ct state established,related accept; iifname \"wan\" drop; }}
               chain forward {{ type filter hook forward priority filter; policy drop;
                 iifname \"lan\" accept; ct state established,related accept; }}
             }}"
        );
        run("ip", &["netns", "exec", &r, "nft", "-f", "-"], Some(&rules));
    }

    /// `peerfs mount` of `repo` inside namespace `n`, listening on `ip`.
    fn mount(&self, n: &str, repo: TestRepo, ip: &str) -> Mounted {
        let mnt = tempfile::tempdir().expect("temp dir");
        let tcp = format!("/ip4/{ip}/tcp/{PORT}");
        let quic = format!("/ip4/{ip}/udp/{PORT}/quic-v1");
        let inner = repo.command(&[
            "mount",
            mnt.path().to_str().unwrap(),
            "--listen",
            &tcp,
            "--listen",
            &quic,
            "--no-mdns",
        ]);
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns(n)))
            .arg(inner.get_program())
            .args(inner.get_args())
            .envs(repo.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run nsenter");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mount in {n}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = daemon_pid(&stdout);
        Mounted { repo, mnt, pid }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in ["a", "b", "r1", "r2", "r", "inet"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .output();
        }
    }
}

fn peer_id_of(repo: &TestRepo) -> String {
    repo.ok(&["id"]).lines().next().unwrap().trim().to_string()
}

/// A repo for the lab: no mDNS, a short fetch timeout (the EIO check waits it out).
fn lab_repo() -> TestRepo {
    let mut repo = TestRepo::new();
    repo.env
        .push(("RUST_LOG".into(), "info,peerfs=debug".into()));
    repo.set_config("mdns", "false");
    repo.set_config("fetch_timeout", "\"5s\"");
    repo
}

/// B's view of peer `name` in `peerfs peers --json`.
fn peer_json(b: &Mounted, name: &str) -> serde_json::Value {
    let out = b.repo.ok(&["peers", "--json"]);
    let peers: serde_json::Value = serde_json::from_str(&out).expect("peers --json parses");
    peers
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

fn id_json(m: &Mounted) -> serde_json::Value {
    serde_json::from_str(&m.repo.ok(&["id", "--json"])).expect("id --json parses")
}

/// R, A and B running in `lab`; A has a `docs` tree in its drive, B follows A by peer
/// ID alone, and R (a friend of both: it follows them) relays.
struct Homes {
    // Dropped first: unmounted before the lab's namespaces go.
    b: Mounted,
    a: Mounted,
    r: Mounted,
}

impl Drop for Homes {
    /// A failed run shows what each daemon said.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, m) in [("R", &self.r), ("A", &self.a), ("B", &self.b)] {
            let log = std::fs::read_to_string(m.repo.path().join("daemon.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- {name}'s daemon.log (last {} lines)\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Whether R follows A and B (a friend's node) or not (a stranger's). `FriendAuto`
/// leaves `relay_server` at its default, "auto": R relays once AutoNAT finds it public,
/// and A's first reservation requests are refused until then.
#[derive(Clone, Copy, PartialEq)]
enum Relay {
    Friend,
    FriendAuto,
    Stranger,
}

fn start(lab: &Lab, relay: Relay) -> Homes {
    let r_repo = lab_repo();
    if relay != Relay::FriendAuto {
        r_repo.set_config("relay_server", "\"on\"");
    }
    let a_repo = lab_repo();
    let b_repo = lab_repo();
    let (r_id, a_id, b_id) = (
        peer_id_of(&r_repo),
        peer_id_of(&a_repo),
        peer_id_of(&b_repo),
    );
    // R is a friend's public node: it follows A and B, so their circuits get a
    // friend's limits.
    if relay != Relay::Stranger {
        r_repo.ok(&["peer", "add", &a_id, "--name", "a"]);
        r_repo.ok(&["peer", "add", &b_id, "--name", "b"]);
    }
    let relay_addr = format!("\"/ip4/{RELAY_IP}/tcp/{PORT}/p2p/{r_id}\"");
    for repo in [&a_repo, &b_repo] {
        repo.set_config("bootstrap", &format!("[{relay_addr}]"));
    }
    if relay != Relay::Stranger {
        a_repo.set_config("relays", &format!("[{relay_addr}]"));
    }
    // Else A finds R among its bootstrap nodes, and reserves there once AutoNAT says
    // it is private.
    // A lets B read its drive (B follows A; A does not follow B).
    a_repo.set_config("readers", &format!("[\"following\", \"{b_id}\"]"));
    let r = lab.mount("r", r_repo, RELAY_IP);
    let a = lab.mount("a", a_repo, "10.201.1.2");
    write(&a.drive().join("docs/hello.txt"), b"across two NATs\n");
    write(&a.drive().join("docs/big.bin"), &bytes(3 << 20, 7));
    write(&a.drive().join("docs/sub/small.txt"), b"small\n");
    // A reachable through R before B looks for it: its relayed address is in R's DHT.
    wait_for("A's relayed address", Duration::from_secs(30), || {
        id_json(&a)["addresses"].as_array().is_some_and(|l| {
            l.iter()
                .any(|x| x.as_str().is_some_and(|s| s.contains("p2p-circuit")))
        })
    });
    let b = lab.mount("b", b_repo, "10.202.2.2");
    // `peer add` waits for the DHT to find A, and says it connected.
    let added = b.repo.ok(&["peer", "add", &a_id, "--name", "alice"]);
    assert!(added.contains("connected"), "{added}");
    Homes { b, a, r }
}

/// B copies A's docs out of its mount with rsync, and the copy equals A's tree.
fn b_reads_a(h: &Homes) {
    let theirs = h.b.mnt.path().join("peers/alice/docs");
    wait_for("A's docs on B", Duration::from_secs(60), || {
        theirs.join("sub/small.txt").exists()
    });
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("docs");
    let out = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", theirs.display()))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = Command::new("diff")
        .arg("-r")
        .arg(h.a.drive().join("docs"))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_same_tree(&h.a.drive().join("docs"), Path::new(&copy));
}

#[test]
fn behind_two_home_routers_b_reads_a_relayed_then_direct() {
    let lab = Lab::new("h", Nat::Home);
    let h = start(&lab, Relay::FriendAuto);
    b_reads_a(&h);
    let start = Instant::now();
    wait_for(
        "B's connection to A upgraded to direct",
        Duration::from_secs(30),
        || peer_json(&h.b, "alice")["connection"] == "direct",
    );
    eprintln!("direct after {:?} more", start.elapsed());
    // It was relayed first: the direct connection came from a hole punch.
    let punched = |m: &Mounted| {
        std::fs::read_to_string(m.repo.path().join("daemon.log"))
            .is_ok_and(|log| log.contains("hole punched"))
    };
    assert!(punched(&h.a) || punched(&h.b), "no hole punch in the logs");
    let alice = peer_json(&h.b, "alice");
    assert_eq!(alice["connected"], true, "{alice}");
    assert!(
        alice["transport"] == "tcp" || alice["transport"] == "quic",
        "{alice}"
    );
    // Both homes are private, and say so; A's addresses include its relayed one.
    for m in [&h.a, &h.b] {
        wait_for("AutoNAT's verdict", Duration::from_secs(30), || {
            id_json(m)["reachability"] == "private"
        });
    }
    wait_for("R public", Duration::from_secs(30), || {
        id_json(&h.r)["reachability"] == "public"
    });

    // A public peer and one behind NAT, both ways: A follows R by peer ID; each reads
    // the other's file over the connection A keeps to R.
    write(&h.r.drive().join("from-r.txt"), b"public\n");
    let r_id = id_json(&h.r)["peer_id"].as_str().unwrap().to_string();
    h.a.repo.ok(&["peer", "add", &r_id, "--name", "r"]);
    let on_a = h.a.mnt.path().join("peers/r/from-r.txt");
    wait_for("R's file on A", Duration::from_secs(30), || on_a.exists());
    assert_eq!(std::fs::read(&on_a).unwrap(), b"public\n");
    let on_r = h.r.mnt.path().join("peers/a/docs/hello.txt");
    wait_for("A's file on R", Duration::from_secs(30), || on_r.exists());
    assert_eq!(std::fs::read(&on_r).unwrap(), b"across two NATs\n");
    drop(h);
    drop(lab);
}

#[test]
fn behind_two_symmetric_nats_blocks_go_through_the_relay_and_dead_reads_fail() {
    let lab = Lab::new("s", Nat::Symmetric);
    let h = start(&lab, Relay::Friend);
    // A file B lists but has not read: after A goes, nobody can deliver it.
    write(&h.a.drive().join("later/late.bin"), &bytes(2 << 20, 9));
    b_reads_a(&h);
    let late = h.b.mnt.path().join("peers/alice/later/late.bin");
    wait_for("late.bin listed on B", Duration::from_secs(30), || {
        std::fs::metadata(&late).is_ok_and(|m| m.len() == 2 << 20)
    });
    let alice = peer_json(&h.b, "alice");
    assert_eq!(alice["connection"], "relayed", "{alice}");
    // Punching cannot work here: it stays relayed.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(peer_json(&h.b, "alice")["connection"], "relayed");

    common::kill(&h.a);
    common::kill(&h.r);
    let started = Instant::now();
    let read = std::fs::read(&late);
    let took = started.elapsed();
    let err = read.expect_err("nobody can deliver late.bin");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The fetch timeout is 5 s; a read waits at most that and a margin.
    assert!(took < Duration::from_secs(15), "EIO after {took:?}");
    drop(h);
    drop(lab);
}

#[test]
fn a_strangers_relay_carries_only_libp2ps_small_circuits() {
    let lab = Lab::new("x", Nat::Symmetric);
    let h = start(&lab, Relay::Stranger);
    let theirs = h.b.mnt.path().join("peers/alice/docs");
    wait_for("A's docs listed on B", Duration::from_secs(60), || {
        theirs.join("sub/small.txt").exists()
    });
    assert_eq!(peer_json(&h.b, "alice")["connection"], "relayed");
    // 3 MiB do not fit through circuits of 128 KiB each (and a few a minute).
    let started = Instant::now();
    let read = std::fs::read(theirs.join("big.bin"));
    let err = read.expect_err("a stranger's relay carried 3 MiB");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(h);
    drop(lab);
}
