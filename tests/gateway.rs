//! `peerfs gateway`: a real gateway process over a real repo, asked with curl. The
//! trustless answers are checked by the reference stack (a CAR extracts to the tree
//! that was added) and by our own importer; files answer Range and conditional
//! requests; what strangers may not read is refused.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use cid::Cid;
use common::*;

/// A gateway process over `repo`, killed (by PID) on drop.
struct Gateway {
    child: Child,
    url: String,
}

impl Gateway {
    fn start(repo: &TestRepo) -> Gateway {
        let mut child = repo
            .command(&["gateway", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the gateway says where it listens");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches("/ipfs/")
            .to_string();
        Gateway { child, url }
    }

    /// Status code, headers (lower-cased names) and body of `curl ARGS URL/PATH`.
    fn get(&self, path: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (head, body) = (dir.path().join("head"), dir.path().join("body"));
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "60",
                "-D",
                head.to_str().unwrap(),
                "-o",
                body.to_str().unwrap(),
            ])
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        let status = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
        let headers = fs::read_to_string(&head).unwrap_or_default().to_lowercase();
        (status, headers, fs::read(&body).unwrap_or_default())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tree(root: &Path) {
    write(&root.join("readme.txt"), b"hello from the gateway\n");
    write(&root.join("odd.dir x/inside"), b"in");
    write(&root.join("data/big.bin"), &bytes(3_500_000, 5));
    write(&root.join("data/odd <name> & \"quotes\".txt"), b"odd");
    std::os::unix::fs::symlink("data/big.bin", root.join("link")).unwrap();
    for i in 0..1500 {
        write(
            &root.join(format!("wide/entry-{i:04}")),
            i.to_string().as_bytes(),
        );
    }
}

fn header<'h>(headers: &'h str, name: &str) -> Option<&'h str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[test]
fn trustless_answers_verify_and_files_answer_like_a_web_server() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let root = repo
        .ok(&["add", "-r", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    let gw = Gateway::start(&repo);

    // A CAR of the whole tree, read back by the reference stack.
    let (status, headers, car) = gw.get(&format!("/ipfs/{root}?format=car"), &[]);
    assert_eq!(status, 200, "{headers}");
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("application/vnd.ipld.car; version=1"));
    let car_path = dir.path().join("all.car");
    fs::write(&car_path, &car).unwrap();
    let back = dir.path().join("back");
    oracle(&[
        "extract",
        car_path.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &back);

    // The same by Accept header; a raw block hashes to its CID.
    let (status, _, _) = gw.get(
        &format!("/ipfs/{root}"),
        &["-H", "Accept: application/vnd.ipld.car"],
    );
    assert_eq!(status, 200);
    let (status, headers, raw) = gw.get(&format!("/ipfs/{root}?format=raw"), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.ipld.raw")
    );
    let cid: Cid = root.parse().unwrap();
    peerfs::block::verify(&cid, &raw).expect("the raw block is the CID's");
    let (status, _, probe) = gw.get("/ipfs/bafkqaaa?format=raw", &[]);
    assert_eq!((status, probe.len()), (200, 0), "the spec's probe CID");

    // A CAR of one file by its path carries the path's blocks: another repo imports
    // it (checking every block) and reads the file through the same path.
    let (status, _, car) = gw.get(
        &format!("/ipfs/{root}/data/big.bin?format=car&dag-scope=entity"),
        &[],
    );
    assert_eq!(status, 200);
    fs::write(&car_path, &car).unwrap();
    let other = TestRepo::new();
    other.ok(&["import", car_path.to_str().unwrap()]);
    let out = other.run(&["cat", &format!("{root}/data/big.bin")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, bytes(3_500_000, 5));
    let (_, _, block_car) = gw.get(
        &format!("/ipfs/{root}/data?format=car&dag-scope=block"),
        &[],
    );
    assert!(
        block_car.len() < 4096,
        "dag-scope=block is the path's blocks only: {}",
        block_car.len()
    );

    // A file as a web server serves it: type, length, ranges, validators.
    let (status, headers, body) = gw.get(&format!("/ipfs/{root}/readme.txt"), &[]);
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"hello from the gateway\n"[..])
    );
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    let etag = header(&headers, "etag").unwrap().to_string();
    let (status, _, _) = gw.get(
        &format!("/ipfs/{root}/readme.txt"),
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(status, 304);
    let big = bytes(3_500_000, 5);
    let (status, headers, body) = gw.get(
        &format!("/ipfs/{root}/data/big.bin"),
        &["-r", "1048570-2097160"],
    );
    assert_eq!(status, 206);
    assert_eq!(body, &big[1_048_570..=2_097_160]);
    assert_eq!(
        header(&headers, "content-range"),
        Some("bytes 1048570-2097160/3500000")
    );
    let (status, _, body) = gw.get(&format!("/ipfs/{root}/data/big.bin"), &["-r", "-10"]);
    assert_eq!((status, body.as_slice()), (206, &big[3_499_990..]));
    let (status, _, _) = gw.get(&format!("/ipfs/{root}/data/big.bin"), &["-r", "4000000-"]);
    assert_eq!(status, 416);
    let (status, headers, _) = gw.get(&format!("/ipfs/{root}/data/big.bin"), &["-I"]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), Some("3500000"));
    let (_, _, body) = gw.get(&format!("/ipfs/{root}/data/big.bin"), &[]);
    assert!(body == big, "the whole file");

    // A directory: redirected to its slash form, then listed with escaped names.
    let (status, headers, _) = gw.get(&format!("/ipfs/{root}/data"), &[]);
    assert_eq!(status, 301);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("/ipfs/{root}/data/").as_str())
    );
    let (status, headers, _) = gw.get(&format!("/ipfs/{root}/odd.dir%20x?format=x"), &[]);
    assert_eq!(status, 400, "an unknown format: {headers}");
    let (status, headers, _) = gw.get(&format!("/ipfs/{root}/odd.dir%20x"), &[]);
    assert_eq!(status, 301);
    assert_eq!(
        header(&headers, "location"),
        Some(format!("/ipfs/{root}/odd.dir%20x/").as_str()),
        "a name keeps its dots, and only what must be escaped is"
    );
    let (status, headers, page) = gw.get(&format!("/ipfs/{root}/data/"), &[]);
    let page = String::from_utf8(page).unwrap();
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("href=\"big.bin\""), "{page}");
    assert!(
        page.contains("odd &lt;name&gt; &amp; &quot;quotes&quot;.txt"),
        "{page}"
    );
    assert!(
        page.contains("3.5 MB") || page.contains("3.3 MiB"),
        "sizes are shown: {page}"
    );
    let (status, _, page) = gw.get(&format!("/ipfs/{root}/wide/"), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(page)
            .unwrap()
            .matches("href=\"entry-")
            .count(),
        1500
    );

    // What is not here, or not there, or not a request for /ipfs.
    let (status, _, _) = gw.get(&format!("/ipfs/{root}/nope"), &[]);
    assert_eq!(status, 404);
    let absent = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let (status, _, _) = gw.get(&format!("/ipfs/{absent}"), &[]);
    assert_eq!(status, 404);
    let (status, _, _) = gw.get("/ipfs/not-a-cid", &[]);
    assert_eq!(status, 400);
    let (status, _, _) = gw.get(&format!("/ipfs/{root}/readme.txt?format=raw"), &[]);
    assert_eq!(status, 400);
    let (status, _, _) = gw.get(&format!("/ipfs/{root}"), &["-X", "POST"]);
    assert_eq!(status, 405);
}

#[test]
fn the_drive_is_served_only_when_everyone_may_read_it() {
    let m = Mounted::new();
    write(&m.drive().join("private.txt"), b"mine");
    let drive_root = cid_of(&m.drive());
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("shared.txt"), b"for all");
    m.unmount();
    let repo = &m.repo;
    let shared = repo
        .ok(&["add", "-q", dir.path().join("shared.txt").to_str().unwrap()])
        .trim()
        .to_string();

    let gw = Gateway::start(repo);
    let (status, _, body) = gw.get(&format!("/ipfs/{drive_root}/private.txt"), &[]);
    assert_eq!(
        status,
        403,
        "readers = following: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = gw.get(&format!("/ipfs/{drive_root}?format=car"), &[]);
    assert_eq!(status, 403);
    let (status, _, body) = gw.get(&format!("/ipfs/{shared}"), &[]);
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"for all"[..]),
        "what add stored is served"
    );
    drop(gw);

    repo.set_config("readers", r#"["*"]"#);
    let gw = Gateway::start(repo);
    let (status, _, body) = gw.get(&format!("/ipfs/{drive_root}/private.txt"), &[]);
    assert_eq!((status, body.as_slice()), (200, &b"mine"[..]));
}

#[test]
fn a_mounted_drive_is_served_by_its_daemon_when_config_says_where() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = TestRepo::readable_by_everyone();
    repo.add_config("gateway", &format!("\"127.0.0.1:{port}\""));
    let m = Mounted::with_repo(repo);
    write(&m.drive().join("hello.txt"), b"served while mounted");
    let root = cid_of(&m.drive());
    let err = m.repo.fails(&["gateway", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("gateway = "), "names the setting: {err}");

    let url = format!("http://127.0.0.1:{port}/ipfs/{root}/hello.txt");
    let mut body = Vec::new();
    wait_for(
        "the daemon's gateway",
        std::time::Duration::from_secs(10),
        || {
            let out = std::process::Command::new("curl")
                .args(["-s", "-f", "--max-time", "5", &url])
                .output()
                .expect("run curl");
            body = out.stdout;
            out.status.success()
        },
    );
    assert_eq!(body, b"served while mounted");
    m.unmount();
}

#[test]
fn a_pinned_file_of_a_restricted_drive_is_not_served_to_strangers() {
    // Alice's drive is readable by those she follows; she follows Bob.
    let a = Mounted::new();
    let b = Mounted::readable_by_everyone();
    follow(&a, &b, "bob");
    write(&a.drive().join("secret.txt"), b"for bob only");
    follow(&b, &a, "alice");
    let theirs = b.mnt.path().join("peers/alice/secret.txt");
    wait_for(
        "bob reads alice's file",
        std::time::Duration::from_secs(20),
        || fs::read(&theirs).is_ok_and(|d| d == b"for bob only"),
    );
    let secret = cid_of(&theirs);
    b.repo.ok(&["pin", theirs.to_str().unwrap()]);
    write(&b.drive().join("bobs.txt"), b"bob's own");
    let bobs = cid_of(&b.drive().join("bobs.txt"));
    b.unmount();
    a.unmount();

    // Bob's drive is open to everyone, and what he pinned of Alice's stays hers.
    let gw = Gateway::start(&b.repo);
    let (status, _, body) = gw.get(&format!("/ipfs/{bobs}"), &[]);
    assert_eq!((status, body.as_slice()), (200, &b"bob's own"[..]));
    let (status, _, body) = gw.get(&format!("/ipfs/{secret}"), &[]);
    assert_eq!(
        status,
        403,
        "a pin of a restricted drive: {}",
        String::from_utf8_lossy(&body)
    );
}
