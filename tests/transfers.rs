//! Transfers on real daemons over 127.0.0.1: a pin paused part-way stays paused
//! across a restart with its progress, and once resumed finishes without fetching
//! again what it had; a high-priority pin gets a slow holder's bandwidth before a low
//! one. The holder serves at `upload_rate`, so that a transfer lasts long enough to be
//! caught in the middle.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::{bytes, follow, wait_child, wait_for, write, Mounted, TestRepo};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A holder whose drive everyone may read, serving at `rate` MiB a second.
fn slow_holder(rate: u64) -> Mounted {
    let repo = TestRepo::readable_by_everyone();
    repo.set_config("upload_rate", &format!("\"{rate} MiB\""));
    Mounted::with_repo(repo)
}

fn transfers(m: &Mounted) -> Vec<Value> {
    let out = m.repo.ok(&["transfers", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array().cloned().unwrap_or_default()
}

/// The transfer whose `what` ends with `name`.
fn transfer(m: &Mounted, name: &str) -> Option<Value> {
    transfers(m)
        .into_iter()
        .find(|t| t["what"].as_str().is_some_and(|w| w.ends_with(name)))
}

/// Good blocks `name` sent `m` since `m`'s daemon started.
fn fetched_from(m: &Mounted, name: &str) -> u64 {
    let out = m.repo.ok(&["peers", "--json"]);
    let peers: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .and_then(|p| p["blocks_fetched"].as_u64())
        .unwrap_or(0)
}

/// `peerfs pin ARGS` in the background.
fn pin_in_background(m: &Mounted, args: &[&str]) -> Child {
    m.repo
        .command(&[&["pin"], args].concat())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start peerfs pin")
}

/// B follows a slow A that holds `files` (name, MiB) in its drive; returns both, and
/// the files' paths in B's mount.
fn setup(rate: u64, files: &[(&str, usize)]) -> (Mounted, Mounted, Vec<String>) {
    let a = slow_holder(rate);
    for (i, (name, mib)) in files.iter().enumerate() {
        write(&a.drive().join(name), &bytes(mib << 20, i as u64 + 1));
    }
    let b = Mounted::new();
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice");
    let paths: Vec<String> = files
        .iter()
        .map(|(n, _)| theirs.join(n).to_str().unwrap().to_string())
        .collect();
    wait_for("b sees alice's files", Duration::from_secs(30), || {
        paths.iter().all(|p| std::path::Path::new(p).exists())
    });
    (a, b, paths)
}

#[test]
fn a_paused_pin_stays_paused_across_a_restart_and_resumed_fetches_nothing_twice() {
    // 48 MiB at 8 MiB/s: six seconds to catch it in.
    let (_a, mut b, paths) = setup(8, &[("big.bin", 48)]);
    let file_blocks = 48 + 1; // 1 MiB leaves and their root
                              // What B fetched to see the file (its directory) is not the pin's.
    let seen = fetched_from(&b, "alice");
    let mut pin = pin_in_background(&b, &[&paths[0], "--priority", "low"]);
    let mut id = 0;
    wait_for("the pin a quarter done", Duration::from_secs(30), || {
        let t = transfer(&b, "big.bin");
        if let Some(t) = &t {
            id = t["id"].as_u64().unwrap();
        }
        t.is_some_and(|t| t["bytes"].as_u64() >= Some(12 * MIB))
    });
    b.repo.ok(&["transfers", "pause", &id.to_string()]);
    // What was on the way lands; then nothing more comes.
    std::thread::sleep(Duration::from_secs(2));
    let before = fetched_from(&b, "alice");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        fetched_from(&b, "alice"),
        before,
        "a paused pin still fetches"
    );
    let before = before - seen;
    let t = transfer(&b, "big.bin").unwrap();
    // Every field the README promises.
    for f in [
        "id",
        "kind",
        "what",
        "cid",
        "peer",
        "state",
        "error",
        "priority",
        "blocks",
        "bytes",
        "total_bytes",
        "sources",
        "started",
        "finished",
    ] {
        assert!(t.get(f).is_some(), "no {f:?} in {t}");
    }
    assert_eq!(t["kind"], "pin", "{t}");
    assert_eq!(t["state"], "paused", "{t}");
    assert_eq!(t["priority"], "low", "{t}");
    let done_before = t["bytes"].as_u64().unwrap();
    assert!(done_before < 40 * MIB, "paused too late to tell: {t}");
    let sources = t["sources"].as_array().unwrap();
    assert_eq!(sources[0]["name"], "alice", "{t}");
    assert!(sources[0]["blocks"].as_u64() > Some(0), "{t}");

    // The daemon restarts: the pin's client is cut off, the transfer stays paused.
    b.unmount();
    wait_child(&mut pin, Duration::from_secs(10));
    b.remount();
    wait_for("b connects to alice again", Duration::from_secs(20), || {
        b.repo.ok(&["peers"]).contains("connected:   yes")
    });
    let t = transfer(&b, "big.bin").expect("the transfer is kept");
    assert_eq!(t["id"].as_u64(), Some(id));
    assert_eq!(t["state"], "paused", "{t}");
    assert!(t["bytes"].as_u64() >= Some(done_before), "{t}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fetched_from(&b, "alice"), 0, "paused, yet fetching");

    // Resumed, it finishes, fetching only what it did not have.
    b.repo.ok(&["transfers", "resume", &id.to_string()]);
    wait_for("the pin done", Duration::from_secs(60), || {
        transfer(&b, "big.bin").is_some_and(|t| t["state"] == "done")
    });
    let after = fetched_from(&b, "alice");
    assert!(
        before + after <= file_blocks + 2,
        "{before} blocks before the restart and {after} after, for a file of {file_blocks}"
    );
    assert!(before + after >= file_blocks - 1, "{before} + {after}");
    let pins = b.repo.ok(&["pins"]);
    assert!(pins.contains(&paths[0]), "{pins}");
    let t = transfer(&b, "big.bin").unwrap();
    assert_eq!(t["total_bytes"].as_u64(), t["bytes"].as_u64(), "{t}");
}

#[test]
fn a_high_priority_pin_gets_the_bandwidth_before_a_low_one() {
    let (_a, b, paths) = setup(8, &[("low.bin", 24), ("high.bin", 24)]);
    let mut low = pin_in_background(&b, &[&paths[0], "--priority", "low"]);
    wait_for("the low pin under way", Duration::from_secs(30), || {
        transfer(&b, "low.bin").is_some_and(|t| t["bytes"].as_u64() >= Some(2 * MIB))
    });
    // Verbose: it says who sent how much as it goes.
    let mut high = b
        .repo
        .command(&["pin", &paths[1], "--priority", "high", "--verbose"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start peerfs pin");
    for (name, child) in [("high", &mut high), ("low", &mut low)] {
        let status = wait_child(child, Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "the {name} pin: {status:?}"
        );
    }
    let mut said = String::new();
    std::io::Read::read_to_string(&mut high.stderr.take().unwrap(), &mut said).unwrap();
    assert!(
        said.lines()
            .last()
            .is_some_and(|l| l.contains("of 24.00 MiB (100%") && l.contains("from alice ")),
        "{said}"
    );
    let finished = |name| {
        let t = transfer(&b, name).unwrap();
        assert_eq!(t["state"], "done", "{t}");
        t["finished"].as_str().unwrap().to_string()
    };
    let (low_done, high_done) = (finished("low.bin"), finished("high.bin"));
    // RFC 3339 in UTC with milliseconds: ordered as strings.
    assert!(
        high_done < low_done,
        "the high pin finished at {high_done}, the low one at {low_done}"
    );
}

/// The cache's bytes, by `status --json`.
fn cache_bytes(m: &Mounted) -> u64 {
    let out = m.repo.ok(&["status", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["cache_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cache_bytes in {v}"))
}

#[test]
fn a_cancelled_pins_blocks_go_back_to_the_cache() {
    // 32 MiB at 8 MiB/s: four seconds to catch it in.
    let (_a, b, paths) = setup(8, &[("big.bin", 32)]);
    let before = cache_bytes(&b);
    let mut pin = pin_in_background(&b, &[&paths[0]]);
    let mut id = 0;
    wait_for("the pin a quarter done", Duration::from_secs(30), || {
        let t = transfer(&b, "big.bin");
        if let Some(t) = &t {
            id = t["id"].as_u64().unwrap();
        }
        t.is_some_and(|t| t["bytes"].as_u64() >= Some(8 * MIB))
    });
    // While it runs, what it fetched is kept, not cache.
    assert!(
        cache_bytes(&b) < before + 4 * MIB,
        "a running pin's blocks are cache: {} bytes",
        cache_bytes(&b)
    );
    let t = transfer(&b, "big.bin").unwrap();
    b.repo.ok(&["transfers", "cancel", &id.to_string()]);
    wait_child(&mut pin, Duration::from_secs(20));
    assert!(
        transfer(&b, "big.bin").is_none(),
        "a cancelled transfer is gone"
    );
    let fetched = t["bytes"].as_u64().unwrap();
    assert!((8 * MIB..32 * MIB).contains(&fetched), "{t}");
    // Everything the walk had kept is evictable again (what was on the way lands in
    // the cache too).
    wait_for(
        "the cancelled pin's blocks back in the cache",
        Duration::from_secs(10),
        || cache_bytes(&b) >= before + fetched - MIB,
    );
    let pins = b.repo.ok(&["pins"]);
    assert!(!pins.contains(&paths[0]), "{pins}");
    // A pin of the same file afterwards keeps all of it again.
    b.repo.ok(&["pin", &paths[0]]);
    assert!(
        cache_bytes(&b) < before + 2 * MIB,
        "a finished pin leaves its blocks in the cache: {} bytes",
        cache_bytes(&b)
    );
}
