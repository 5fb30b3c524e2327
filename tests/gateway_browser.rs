//! The gateway's HTML listing in a real browser: a daemon serves the gateway on
//! 127.0.0.1 (config `gateway`), and headless chromium (Debian's, installed by
//! `scripts/install-deps`) renders a directory's page to a PNG and dumps its DOM. The
//! DOM must name every entry with its size and CID; the subdirectory's link, taken
//! from the DOM, must render that directory's listing, and a file's link its bytes.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Every chromium run is killed (its whole process group) past this.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// Runs headless chromium with `args` and `url`, with a profile of its own under
/// `dir`; its stdout, or a panic with its stderr.
fn chromium(dir: &Path, args: &[&str], url: &str) -> String {
    let found = Command::new("chromium").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "chromium is not installed: run scripts/install-deps (apt-get install chromium)"
    );
    let profile = tempfile::tempdir_in(dir).unwrap();
    let (out, err) = (dir.join("chromium.out"), dir.join("chromium.err"));
    let mut command = Command::new("chromium");
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    // A session of its own: no controlling terminal for chromium to touch (run from a
    // terminal, it upset the terminal's session), and a process group that a hung run
    // is killed with, renderers and all.
    // SAFETY: setsid is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start chromium");
    let pid = child.id();
    let status = wait_child(&mut child, CHROMIUM_LIMIT);
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    match status {
        Some(s) if s.success() => fs::read_to_string(&out).unwrap_or_default(),
        Some(s) => panic!("chromium {args:?} {url} failed ({s}): {stderr}"),
        None => panic!("chromium {args:?} {url}: not done within {CHROMIUM_LIMIT:?}: {stderr}"),
    }
}

/// The `href`s of the `<a>` elements of a DOM dump whose text is `text`.
fn href_of(dom: &str, text: &str) -> String {
    let end = format!(">{text}</a>");
    let at = dom
        .find(&end)
        .unwrap_or_else(|| panic!("no link {text:?} in {dom}"));
    let tag = &dom[..at];
    let open = tag.rfind("<a ").expect("an <a> tag");
    let attrs = &tag[open..];
    let start = attrs.find("href=\"").expect("an href") + 6;
    let len = attrs[start..].find('"').expect("a closing quote");
    attrs[start..start + len].replace("&amp;", "&")
}

/// A free port on 127.0.0.1 (the daemon binds it next).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The status code of a GET of `url` (redirects followed), and the body.
fn http_code(url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sL", "--max-time", "30", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = out.stdout;
    let cut = text.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&text[cut..])
        .trim()
        .parse()
        .unwrap_or(0);
    (code, text[..cut].to_vec())
}

fn size_text(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string()
}

#[test]
fn chromium_renders_the_listing_and_its_links_work() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("site");
    let big = bytes(1_500_000, 7);
    write(
        &src.join("notes.txt"),
        b"plain text, shown by the browser\n",
    );
    write(&src.join("data.bin"), &big);
    write(&src.join("sub dir/inner.txt"), b"one level down\n");
    write(&src.join("sub dir/deeper/leaf.txt"), b"two levels down\n");

    let repo = TestRepo::new();
    let port = free_port();
    repo.add_config("gateway", &format!("\"127.0.0.1:{port}\""));
    let root = repo
        .ok(&["add", "-r", "-q", src.to_str().unwrap()])
        .trim()
        .to_string();
    // `sub dir` is also added on its own: its CID is then served by itself, and the
    // listing links it; `deeper`'s is served only along a path, and is not linked.
    let sub_cid = repo
        .ok(&["add", "-r", "-q", src.join("sub dir").to_str().unwrap()])
        .trim()
        .to_string();
    let m = Mounted::with_repo(repo);
    let base = format!("http://127.0.0.1:{port}/ipfs/{root}/");
    wait_for("the gateway to answer", Duration::from_secs(20), || {
        Command::new("curl")
            .args(["-sf", "--max-time", "5", "-o", "/dev/null", &base])
            .status()
            .is_ok_and(|s| s.success())
    });

    // A screenshot: a PNG of the window's size with something drawn in it.
    let shot = dir.path().join("listing.png");
    chromium(
        dir.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1024,768",
        ],
        &base,
    );
    let png = fs::read(&shot).expect("chromium wrote no screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1024, 768));
    // A blank 1024x768 page compresses to a few KiB; text in a table does not.
    assert!(
        png.len() > 12_000,
        "a {} byte screenshot: blank?",
        png.len()
    );
    println!("screenshot ({} bytes): {}", png.len(), shot.display());
    if let Ok(keep) = std::env::var("PEERFS_KEEP_SCREENSHOT") {
        fs::copy(&shot, keep).expect("copy the screenshot");
    }

    // The rendered page names every entry, with its size and CID.
    let dom = chromium(dir.path(), &["--dump-dom"], &base);
    assert!(dom.contains(&format!("Index of /ipfs/{root}")), "{dom}");
    for (name, size) in [("notes.txt", 33u64), ("data.bin", big.len() as u64)] {
        let cid = peerfs_cid(&src.join(name), &[]);
        assert!(dom.contains(&format!(">{name}</a>")), "{name} not in {dom}");
        let row = dom
            .split("<tr>")
            .find(|r| r.contains(&format!(">{name}</a>")))
            .unwrap();
        assert!(row.contains(&size_text(size)), "{name}: no {size} in {row}");
        // Served only along the path: shown, not linked.
        assert!(
            row.contains(&format!("<span class=\"cid\">{cid}</span>")),
            "{name}'s {cid} not in {row}"
        );
    }
    assert!(dom.contains(&format!(">{sub_cid}</a>")), "{dom}");

    // The subdirectory's link renders its own listing, and one level further.
    let sub = format!("{base}{}", href_of(&dom, "sub dir/"));
    let sub_dom = chromium(dir.path(), &["--dump-dom"], &sub);
    assert!(sub_dom.contains(">inner.txt</a>"), "{sub_dom}");
    assert!(sub_dom.contains(">deeper/</a>"), "{sub_dom}");
    assert!(!sub_dom.contains(">notes.txt</a>"), "{sub_dom}");
    let inner_cid = peerfs_cid(&src.join("sub dir/inner.txt"), &[]);
    assert!(sub_dom.contains(&inner_cid), "{sub_dom}");
    let deeper = format!("{sub}{}", href_of(&sub_dom, "deeper/"));
    let deeper_dom = chromium(dir.path(), &["--dump-dom"], &deeper);
    assert!(deeper_dom.contains(">leaf.txt</a>"), "{deeper_dom}");
    let deeper_cid = peerfs_cid(&src.join("sub dir/deeper"), &[]);
    assert!(
        sub_dom.contains(&format!("<span class=\"cid\">{deeper_cid}</span>")),
        "deeper's CID, not served by itself, is linked: {sub_dom}"
    );

    // A file's link: the browser shows its text, and the same URL gives its bytes.
    let file = format!("{sub}{}", href_of(&sub_dom, "inner.txt"));
    let shown = chromium(dir.path(), &["--dump-dom"], &file);
    assert!(shown.contains("one level down"), "{shown}");
    let data = format!("{base}{}", href_of(&dom, "data.bin"));
    let got = Command::new("curl")
        .args(["-sf", "--max-time", "30", &data])
        .output()
        .expect("curl");
    assert!(
        got.status.success() && got.stdout == big,
        "{data}: other bytes"
    );
    // Every CID link leads to the content (a link to an address the gateway refuses
    // would be a dead end for the reader).
    let links: Vec<&str> = [&dom, &sub_dom, &deeper_dom]
        .into_iter()
        .flat_map(|page| page.split("class=\"cid\" href=\"").skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(links.len(), 1, "only sub dir's CID is linked: {links:?}");
    for link in links {
        let (code, _) = http_code(&format!("http://127.0.0.1:{port}{link}"));
        assert_eq!(code, 200, "the CID link {link}");
    }
    let by_cid = format!("http://127.0.0.1:{port}{}", href_of(&dom, &sub_cid));
    let by_cid_dom = chromium(dir.path(), &["--dump-dom"], &by_cid);
    assert!(by_cid_dom.contains(">inner.txt</a>"), "{by_cid_dom}");
    assert!(m.alive());
}
