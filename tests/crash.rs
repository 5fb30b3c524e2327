//! `kill -9` of the daemon at random points during an rsync, 20 times over: nothing that
//! was fsync'd before is lost, every file reads as a whole version (the one before the
//! rsync or the one it was bringing), `peerfs fsck` finds no problem, and the next
//! `peerfs mount` cleans up the dead mount.
//!
//! Each round changes the source a little (files rewritten, added, deleted, modes and
//! mtimes changed), starts `rsync -a --delete` into the mount, and kills the daemon
//! somewhere in it. After checking, the round's rsync is finished and fsync'd, so the
//! next round starts from a known, durable state. `PEERFS_CRASH_SEED` repeats a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bytes, fsync_tree, kill9, pid_alive, set_mtime, sh, wait_child, Mounted, Rng};

const ROUNDS: u64 = 20;
/// How long an interrupted rsync may take to notice its mount is gone.
const RSYNC_LIMIT: Duration = Duration::from_secs(60);
/// Source files at the start.
const FILES: u64 = 200;

/// What a path holds on the local disk.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File {
        data: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Symlink(PathBuf),
}

/// Every entry under `root` by relative path; names starting with a dot (rsync's
/// temporary files) are left out.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes()[0] == b'.')
            {
                continue;
            }
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Symlink(fs::read_link(&path).expect("readlink")));
            } else {
                let data =
                    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                out.insert(
                    rel,
                    Entry::File {
                        data,
                        mode: meta.permissions().mode() & 0o7777,
                        mtime: meta.mtime(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The source tree, changed a little each round with the round's random choices.
struct Source {
    dir: PathBuf,
    rng: Rng,
    next: u64,
    /// A distinct mtime for every change, so rsync's size+mtime check sees each one.
    clock: i64,
}

impl Source {
    fn file(&mut self, rel: &str) {
        let len = match self.rng.below(40) {
            0 => 1 + self.rng.below(2 << 20),
            1..=8 => self.rng.below(256 << 10),
            _ => self.rng.below(16 << 10),
        };
        let path = self.dir.join(rel);
        common::write(&path, &bytes(len as usize, self.rng.next_u64()));
        common::chmod(
            &path,
            [0o644, 0o600, 0o755, 0o640][self.rng.below(4) as usize],
        );
        self.clock += 1;
        set_mtime(&path, self.clock, self.rng.below(1_000_000_000) as u32);
    }

    fn new_file(&mut self) {
        let dir = self.rng.below(12);
        let sub = self.rng.below(3);
        self.next += 1;
        let rel = format!("d{dir}/e{sub}/f{}.bin", self.next);
        self.file(&rel);
    }

    fn files(&self) -> Vec<PathBuf> {
        snapshot(&self.dir)
            .into_iter()
            .filter(|(_, e)| matches!(e, Entry::File { .. }))
            .map(|(p, _)| p)
            .collect()
    }

    /// One round's changes: rewrites, new files, deletions, a chmod, a new symlink.
    fn change(&mut self) {
        let files = self.files();
        for f in &files {
            match self.rng.below(100) {
                0..=7 => self.file(f.to_str().expect("utf-8")),
                8..=10 => fs::remove_file(self.dir.join(f)).expect("rm"),
                11..=13 => {
                    let path = self.dir.join(f);
                    common::chmod(&path, 0o600 | self.rng.below(0o200) as u32);
                }
                _ => {}
            }
        }
        for _ in 0..25 {
            self.new_file();
        }
        self.next += 1;
        let link = self
            .dir
            .join(format!("d{}/link{}", self.rng.below(12), self.next));
        fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(format!("e0/f{}.bin", self.next - 1), link).expect("symlink");
    }
}

/// Starts `rsync -a --delete SRC/ DST/`.
fn rsync(src: &Path, dst: &Path) -> std::process::Child {
    Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsync")
}

/// rsync to the end, then fsync of everything it wrote: the state the next round must
/// never lose.
fn sync_completely(src: &Path, dst: &Path) -> Duration {
    let start = Instant::now();
    let status = wait_child(&mut rsync(src, dst), RSYNC_LIMIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "rsync into the mount failed: {status:?}"
    );
    // The rsync's own time: what a kill must fall inside. The fsyncs after it are not.
    let rsync_took = start.elapsed();
    fsync_tree(dst);
    rsync_took
}

/// After a crash: every path is absent only if the rsync might have deleted or not yet
/// created it, and everything present is one whole version, before or after.
fn check_after_crash(
    before: &BTreeMap<PathBuf, Entry>,
    after: &BTreeMap<PathBuf, Entry>,
    live: &BTreeMap<PathBuf, Entry>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let paths: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    for p in paths {
        let (b, a, l) = (before.get(p), after.get(p), live.get(p));
        match l {
            None if b.is_some() && a.is_some() => {
                problems.push(format!("{}: lost (it was fsync'd)", p.display()))
            }
            None => {}
            Some(l) if Some(l) == b || Some(l) == a => {}
            Some(Entry::File { data, mode, mtime }) => {
                let whole =
                    |e: Option<&Entry>| matches!(e, Some(Entry::File { data: d, .. }) if d == data);
                // A file whose content is one whole version, waiting for rsync to set
                // its mode and mtime when the kill came, is fine unless it was fsync'd
                // unchanged.
                if b == a || !(whole(b) || whole(a)) {
                    problems.push(format!(
                        "{}: {} bytes, mode {mode:o}, mtime {mtime}, is neither version \
                         ({})",
                        p.display(),
                        data.len(),
                        describe(b, a)
                    ));
                }
            }
            Some(l) => problems.push(format!("{}: {l:?}, {}", p.display(), describe(b, a))),
        }
    }
    for p in live
        .keys()
        .filter(|p| !before.contains_key(*p) && !after.contains_key(*p))
    {
        problems.push(format!("{}: in the mount, in neither version", p.display()));
    }
    problems
}

fn describe(b: Option<&Entry>, a: Option<&Entry>) -> String {
    let d = |e: Option<&Entry>| match e {
        Some(Entry::File { data, mode, mtime }) => {
            format!("{} bytes, mode {mode:o}, mtime {mtime}", data.len())
        }
        Some(e) => format!("{e:?}"),
        None => "absent".to_string(),
    };
    format!("before: {}; after: {}", d(b), d(a))
}

#[test]
fn kill_9_during_rsync_20_times_loses_nothing_fsynced() {
    let seed = common::seed_from_env("PEERFS_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let work = tempfile::tempdir().expect("temp dir");
    let mut src = Source {
        dir: work.path().join("src"),
        rng: Rng::new(seed ^ 0xC0FFEE),
        next: 0,
        clock: 1_600_000_000,
    };
    for _ in 0..FILES {
        src.new_file();
    }
    let mut m = Mounted::new();
    let live = m.drive().join("live");
    let first = sync_completely(&src.dir, &live);
    // A round's rsync takes about as long as one of the changes alone; take the
    // quickest of three, then adapt: a kill that came after rsync had finished
    // means the estimate is too long for this machine right now.
    let mut typical = (0..3)
        .map(|_| {
            src.change();
            sync_completely(&src.dir, &live)
        })
        .min()
        .expect("three measurements");
    let mut before = snapshot(&src.dir);
    eprintln!("crash: first rsync {first:.1?}, a round's rsync {typical:.1?}");

    let mut landed_in_rsync = 0;
    for round in 0..ROUNDS {
        src.change();
        let after = snapshot(&src.dir);
        let mut child = rsync(&src.dir, &live);
        let delay = typical.mul_f64((5 + rng.below(100)) as f64 / 100.0);
        std::thread::sleep(delay);
        let rsync_done = matches!(child.try_wait(), Ok(Some(_)));
        landed_in_rsync += u64::from(!rsync_done);
        if rsync_done {
            typical = typical.mul_f64(0.7);
        }
        kill9(m.pid);
        common::wait_for("the killed daemon to go", Duration::from_secs(10), || {
            !pid_alive(m.pid)
        });
        let _ = wait_child(&mut child, RSYNC_LIMIT)
            .unwrap_or_else(|| panic!("round {round}: rsync hung after the daemon died"));

        let fsck = m.repo.ok(&["fsck"]);
        assert!(
            fsck.contains("no problems found"),
            "PEERFS_CRASH_SEED={seed} round {round}: fsck after kill at {delay:.2?}:\n{fsck}"
        );
        m.remount();
        let problems = check_after_crash(&before, &after, &snapshot(&live));
        assert!(
            problems.is_empty(),
            "PEERFS_CRASH_SEED={seed} round {round}, killed {delay:.2?} into the rsync \
             (rsync {}):\n{}",
            if rsync_done {
                "had finished"
            } else {
                "was running"
            },
            problems.join("\n")
        );

        sync_completely(&src.dir, &live);
        sh(
            work.path(),
            &format!(
                "diff -r --no-dereference {} {}",
                src.dir.display(),
                live.display()
            ),
        );
        before = after;
    }
    eprintln!("crash: {landed_in_rsync} of {ROUNDS} kills landed while rsync ran");
    assert!(
        landed_in_rsync >= ROUNDS / 2,
        "most kills should land inside an rsync; the timing estimate is off"
    );

    let mnt = m.mnt.path().to_str().expect("utf-8 path").to_string();
    m.repo.ok(&["unmount", &mnt]);
    let fsck = m.repo.ok(&["fsck"]);
    assert!(fsck.contains("no problems found"), "{fsck}");
    m.remount();
    let problems = check_after_crash(&before, &before, &snapshot(&live));
    assert!(
        problems.is_empty(),
        "after a clean remount:\n{}",
        problems.join("\n")
    );
    // Modes and mtimes too, as rsync sees them.
    let itemized = sh(
        work.path(),
        &format!(
            "rsync -a --delete --dry-run --itemize-changes {}/ {}/",
            src.dir.display(),
            live.display()
        ),
    );
    assert!(
        itemized.trim().is_empty(),
        "rsync would still change:\n{itemized}"
    );
}
