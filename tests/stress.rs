//! Randomized data integrity: several processes write, truncate, write through shared
//! mappings, read and rename the same few files in the mount, and every operation is
//! done to a shadow copy on the local disk as well. After each round the mount must equal
//! the shadow (read back from the daemon, not the page cache), and again after an
//! unmount and a fresh mount.
//!
//! Processes run at the same time, so the outcome must not depend on their order: in a
//! round, each file is either shared (every worker writes only its own stripes of it,
//! and those writes commute) or owned by one worker (which may also truncate, rename,
//! unlink and recreate it).
//!
//! `PEERFS_STRESS_SECS` (default 300) bounds the run; `PEERFS_STRESS_SEED` repeats one.
//! A short development run: `PEERFS_STRESS_SECS=20 cargo test --test stress`.

mod common;

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bytes, wait_child, Mounted, Rng};

/// Worker processes per round (the CI machine has two cores).
const WORKERS: u64 = 3;
/// The files' names: four in the top directory, two in a subdirectory.
const SLOTS: [&str; 6] = ["s0", "s1", "s2", "s3", "sub/s4", "sub/s5"];
/// Files stay below this size: several 1 MiB chunks each.
const MAX_SIZE: u64 = 5 << 20;
/// A shared file is dealt out in stripes of this size (page aligned, smaller than a
/// chunk, so workers meet inside chunks).
const STRIPE: u64 = 64 << 10;
/// Operations per worker per round.
const OPS: u64 = 24;
/// The longest a round's workers may take.
const ROUND_LIMIT: Duration = Duration::from_secs(120);
/// The env var that turns this test binary into a worker (see `stress_worker`).
const WORKER_ENV: &str = "PEERFS_STRESS_WORKER";

/// Who may touch a file in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Every worker, each only in its stripes.
    Shared,
    /// One worker, with every operation.
    Owned(u64),
}

/// What one worker process is told.
struct Task {
    seed: u64,
    round: u64,
    worker: u64,
    roles: Vec<Role>,
    drive: PathBuf,
    shadow: PathBuf,
    log: PathBuf,
}

impl Task {
    fn encode(&self) -> String {
        let roles: Vec<String> = self
            .roles
            .iter()
            .map(|r| match r {
                Role::Shared => "s".to_string(),
                Role::Owned(w) => w.to_string(),
            })
            .collect();
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.seed,
            self.round,
            self.worker,
            roles.join(","),
            self.drive.display(),
            self.shadow.display(),
            self.log.display()
        )
    }

    fn decode(text: &str) -> Task {
        let l: Vec<&str> = text.lines().collect();
        let num = |s: &str| s.parse::<u64>().expect("a number");
        Task {
            seed: num(l[0]),
            round: num(l[1]),
            worker: num(l[2]),
            roles: l[3]
                .split(',')
                .map(|r| match r {
                    "s" => Role::Shared,
                    w => Role::Owned(num(w)),
                })
                .collect(),
            drive: PathBuf::from(l[4]),
            shadow: PathBuf::from(l[5]),
            log: PathBuf::from(l[6]),
        }
    }
}

/// One worker's operations: each is done to the mount and to the shadow alike.
struct Worker {
    task: Task,
    rng: Rng,
    log: File,
}

impl Worker {
    fn note(&mut self, what: String) {
        let _ = writeln!(self.log, "{what}");
    }

    fn mount_path(&self, slot: usize) -> PathBuf {
        self.task.drive.join(SLOTS[slot])
    }

    fn shadow_path(&self, slot: usize) -> PathBuf {
        self.task.shadow.join(SLOTS[slot])
    }

    fn both(&self, slot: usize) -> [PathBuf; 2] {
        [self.mount_path(slot), self.shadow_path(slot)]
    }

    /// An offset and length to write: anywhere in an owned file, inside one of this
    /// worker's stripes in a shared one.
    fn range(&mut self, role: Role, max_len: u64) -> (u64, u64) {
        match role {
            Role::Owned(_) => {
                let offset = self.rng.below(MAX_SIZE);
                let len = 1 + self.rng.below(max_len.min(MAX_SIZE - offset));
                (offset, len)
            }
            Role::Shared => {
                let stripes = MAX_SIZE / STRIPE;
                let mine = (stripes - self.task.worker).div_ceil(WORKERS);
                let stripe = self.task.worker + WORKERS * self.rng.below(mine);
                let inner = self.rng.below(STRIPE);
                let len = 1 + self.rng.below(max_len.min(STRIPE - inner));
                (stripe * STRIPE + inner, len)
            }
        }
    }

    fn pwrite(&mut self, slot: usize, role: Role) {
        let (offset, len) = self.range(role, 300 << 10);
        let data = bytes(len as usize, self.rng.next_u64());
        let sync = self.rng.percent(10);
        self.note(format!(
            "pwrite {} at {offset} len {len} fsync {sync}",
            SLOTS[slot]
        ));
        for path in self.both(slot) {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            f.write_all_at(&data, offset)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            if sync {
                f.sync_data()
                    .unwrap_or_else(|e| panic!("fdatasync {}: {e}", path.display()));
            }
        }
    }

    /// Writes through a shared mapping of the mount's file and msyncs it; the shadow
    /// gets the same bytes by pwrite. Only inside a size every process's mapping reaches:
    /// the file's own in an owned file; in a shared one, the shadow's. `fstat` there may
    /// already show another worker's growing write that the kernel has not applied to its
    /// page cache yet (see tests/mmap_growth.rs), while each write reaches the shadow only
    /// after it returned in the mount.
    fn mmap_write(&mut self, slot: usize, role: Role) {
        let path = self.mount_path(slot);
        let reached = match role {
            Role::Shared => fs::metadata(self.shadow_path(slot)).map_or(0, |m| m.len()),
            Role::Owned(_) => u64::MAX,
        };
        let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
            return self.note(format!("mmap {}: absent", SLOTS[slot]));
        };
        let size = f.metadata().expect("fstat").len().min(reached);
        let (offset, len) = self.range(role, 200 << 10);
        if offset + len > size {
            return self.note(format!("mmap {}: beyond size {size}", SLOTS[slot]));
        }
        let data = bytes(len as usize, self.rng.next_u64());
        self.note(format!("mmap {} at {offset} len {len}", SLOTS[slot]));
        let page = 4096;
        let start = offset / page * page;
        let map_len = (offset + len - start) as usize;
        // SAFETY: a fresh shared mapping of an open file, inside its size (only this
        // worker may shrink it), unmapped before the file is closed.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                start as libc::off_t,
            );
            assert!(
                p != libc::MAP_FAILED,
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            let window = std::slice::from_raw_parts_mut(p.cast::<u8>(), map_len);
            window[(offset - start) as usize..].copy_from_slice(&data);
            let synced = libc::msync(p, map_len, libc::MS_SYNC);
            let err = std::io::Error::last_os_error();
            libc::munmap(p, map_len);
            assert!(synced == 0, "msync {}: {err}", path.display());
        }
        let shadow = OpenOptions::new()
            .write(true)
            .open(self.shadow_path(slot))
            .expect("open shadow");
        shadow.write_all_at(&data, offset).expect("write shadow");
    }

    /// Reads a range of the mount's file (sometimes from the daemon, past the page
    /// cache) and compares it with the shadow's, as far as both reach: in a shared file
    /// the others may be growing it meanwhile, but never inside my stripes.
    fn read_check(&mut self, slot: usize, role: Role) {
        let (offset, len) = self.range(role, 512 << 10);
        let drop_cache = self.rng.percent(50);
        self.note(format!(
            "read {} at {offset} len {len} drop_cache {drop_cache}",
            SLOTS[slot]
        ));
        let [m, s] = self.both(slot);
        let (Ok(mf), Ok(sf)) = (File::open(&m), File::open(&s)) else {
            // A shared file may appear between the two opens; an owned one may not.
            if let Role::Owned(_) = role {
                let (a, b) = (m.exists(), s.exists());
                assert_eq!(a, b, "{}: in the mount {a}, in the shadow {b}", SLOTS[slot]);
            }
            return;
        };
        if drop_cache {
            forget_cached_pages(&mf);
        }
        let got = read_at(&mf, offset, len);
        let want = read_at(&sf, offset, len);
        let n = got.len().min(want.len());
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            panic!(
                "{}: byte {} reads {:#04x} in the mount, {:#04x} in the shadow",
                SLOTS[slot],
                offset + i as u64,
                got[i],
                want[i]
            );
        }
        if let Role::Owned(_) = role {
            assert_eq!(
                got.len(),
                want.len(),
                "{}: reading {len} at {offset} gives {} bytes in the mount, {} in the shadow",
                SLOTS[slot],
                got.len(),
                want.len()
            );
        }
    }

    fn truncate(&mut self, slot: usize) {
        let size = match self.rng.below(4) {
            0 => 0,
            1 => self.rng.below(MAX_SIZE) / (1 << 20) * (1 << 20),
            _ => self.rng.below(MAX_SIZE),
        };
        let by_fd = self.rng.percent(50);
        self.note(format!("truncate {} to {size} by_fd {by_fd}", SLOTS[slot]));
        for path in self.both(slot) {
            let done = if by_fd {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .and_then(|f| f.set_len(size))
            } else {
                // truncate(2) on a path: create the file first if it is absent.
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .and_then(|_| {
                        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                            .expect("no NUL in path");
                        // SAFETY: a valid C string.
                        match unsafe { libc::truncate(c.as_ptr(), size as libc::off_t) } {
                            0 => Ok(()),
                            _ => Err(std::io::Error::last_os_error()),
                        }
                    })
            };
            done.unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
        }
    }

    /// Replaces the whole file (open with O_TRUNC, write, close).
    fn rewrite(&mut self, slot: usize) {
        let len = self.rng.below(3 << 20);
        let data = bytes(len as usize, self.rng.next_u64());
        self.note(format!("rewrite {} len {len}", SLOTS[slot]));
        for path in self.both(slot) {
            fs::write(&path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }

    /// Renames `from` over `to` (both mine), or unlinks `from` when they are the same.
    fn rename(&mut self, from: usize, to: usize) {
        if !self.shadow_path(from).exists() {
            return self.note(format!("rename {}: absent", SLOTS[from]));
        }
        if from == to {
            self.note(format!("unlink {}", SLOTS[from]));
            for path in self.both(from) {
                fs::remove_file(&path).unwrap_or_else(|e| panic!("unlink {}: {e}", path.display()));
            }
            return;
        }
        self.note(format!("rename {} over {}", SLOTS[from], SLOTS[to]));
        for (a, b) in [
            (self.mount_path(from), self.mount_path(to)),
            (self.shadow_path(from), self.shadow_path(to)),
        ] {
            fs::rename(&a, &b)
                .unwrap_or_else(|e| panic!("rename {} {}: {e}", a.display(), b.display()));
        }
    }

    fn run(&mut self) {
        let roles = self.task.roles.clone();
        let shared: Vec<usize> = (0..SLOTS.len())
            .filter(|&s| roles[s] == Role::Shared)
            .collect();
        let mine: Vec<usize> = (0..SLOTS.len())
            .filter(|&s| roles[s] == Role::Owned(self.task.worker))
            .collect();
        for _ in 0..OPS {
            let owned = !mine.is_empty() && (shared.is_empty() || self.rng.percent(40));
            if !owned && shared.is_empty() {
                return;
            }
            if owned {
                let slot = mine[self.rng.below(mine.len() as u64) as usize];
                let exists = self.shadow_path(slot).exists();
                match self.rng.below(10) {
                    0 | 1 => self.pwrite(slot, Role::Owned(self.task.worker)),
                    2 if exists => self.mmap_write(slot, Role::Owned(self.task.worker)),
                    3 | 4 => self.truncate(slot),
                    5 => self.rewrite(slot),
                    6 => {
                        let to = mine[self.rng.below(mine.len() as u64) as usize];
                        self.rename(slot, to)
                    }
                    _ if exists => self.read_check(slot, Role::Owned(self.task.worker)),
                    _ => self.pwrite(slot, Role::Owned(self.task.worker)),
                }
            } else {
                let slot = shared[self.rng.below(shared.len() as u64) as usize];
                match self.rng.below(10) {
                    0..=3 => self.pwrite(slot, Role::Shared),
                    4..=6 => self.mmap_write(slot, Role::Shared),
                    _ => self.read_check(slot, Role::Shared),
                }
            }
        }
    }
}

fn read_at(f: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("read: {e}"),
        }
    }
    buf.truncate(got);
    buf
}

/// Drops the file's clean cached pages, so the next read asks the daemon.
fn forget_cached_pages(f: &File) {
    // SAFETY: an advisory call on an open descriptor.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// The test binary, started again as one worker of one round (see `stress_worker`).
fn spawn_worker(task: &Task) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "stress_worker", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(WORKER_ENV, task.encode())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a worker")
}

/// Not a test: the entry point of a worker process, which the stress test starts by
/// running this binary again with `--ignored --exact stress_worker`.
#[test]
#[ignore = "a worker process of the stress test, not a test of its own"]
fn stress_worker() {
    let Ok(task) = std::env::var(WORKER_ENV) else {
        return;
    };
    let task = Task::decode(&task);
    let rng = Rng::new(task.seed ^ (task.round << 16) ^ (task.worker << 8) ^ 0x5eed);
    let log = File::create(&task.log).expect("worker log");
    Worker { task, rng, log }.run();
}

/// Which files exist, by slot, and the first difference between mount and shadow.
fn compare(drive: &Path, shadow: &Path) -> Result<(), String> {
    for dir in ["", "sub"] {
        let names = |root: &Path| {
            let mut n: Vec<String> = fs::read_dir(root.join(dir))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            n.sort();
            n
        };
        let (m, s) = (names(drive), names(shadow));
        if m != s {
            return Err(format!(
                "{dir}/ lists {m:?} in the mount, {s:?} in the shadow"
            ));
        }
    }
    for slot in SLOTS {
        let (m, s) = (drive.join(slot), shadow.join(slot));
        let Ok(sf) = File::open(&s) else {
            continue;
        };
        let mf = File::open(&m).map_err(|e| format!("{slot}: {e}"))?;
        let (ms, ss) = (
            mf.metadata().map_err(|e| e.to_string())?.len(),
            sf.metadata().map_err(|e| e.to_string())?.len(),
        );
        forget_cached_pages(&mf);
        let (got, want) = (read_at(&mf, 0, ms + 1), read_at(&sf, 0, ss));
        if ms != ss || got.len() != want.len() {
            return Err(format!(
                "{slot}: size {ms} in the mount ({} read), {ss} in the shadow",
                got.len()
            ));
        }
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            let end = (i + 16).min(got.len());
            return Err(format!(
                "{slot}: differs from byte {i}: mount {:02x?}, shadow {:02x?}",
                &got[i..end],
                &want[i..end]
            ));
        }
    }
    Ok(())
}

fn fail(seed: u64, work: &Path, round: u64, what: String) -> ! {
    panic!(
        "stress, PEERFS_STRESS_SEED={seed}, round {round}: {what}\n{}",
        logs(work, round)
    )
}

/// The end of each worker's log of a round, for a failure message.
fn logs(dir: &Path, round: u64) -> String {
    let mut out = String::new();
    for w in 0..WORKERS {
        let text = fs::read_to_string(dir.join(format!("r{round}-w{w}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(12)..];
        let _ = writeln!(out, "worker {w}, last operations:\n  {}", tail.join("\n  "));
    }
    out
}

#[test]
fn concurrent_writes_truncates_mmaps_and_renames_match_a_shadow_copy() {
    let seed = common::seed_from_env("PEERFS_STRESS_SEED");
    let secs: u64 = std::env::var("PEERFS_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut m = Mounted::new();
    let work = tempfile::tempdir().expect("temp dir");
    let shadow = work.path().join("shadow");
    let drive = m.drive().join("stress");
    for root in [&shadow, &drive] {
        fs::create_dir_all(root.join("sub")).expect("mkdir");
    }
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut round = 0;
    let daemon_log = m.repo.path().join("daemon.log");
    let fail = |round: u64, what: String| {
        let log = fs::read_to_string(&daemon_log).unwrap_or_default();
        let told: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        let told = &told[told.len().saturating_sub(20)..];
        fail(
            seed,
            work.path(),
            round,
            format!(
                "{what}\ndaemon warnings and errors:\n  {}",
                told.join("\n  ")
            ),
        )
    };
    while start.elapsed() < Duration::from_secs(secs) {
        let roles: Vec<Role> = SLOTS
            .iter()
            .map(|_| match rng.below(WORKERS + 2) {
                w if w < WORKERS => Role::Owned(w),
                _ => Role::Shared,
            })
            .collect();
        let mut workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let task = Task {
                    seed,
                    round,
                    worker: w,
                    roles: roles.clone(),
                    drive: drive.clone(),
                    shadow: shadow.clone(),
                    log: work.path().join(format!("r{round}-w{w}.log")),
                };
                spawn_worker(&task)
            })
            .collect();
        for (w, child) in workers.iter_mut().enumerate() {
            let status = wait_child(child, ROUND_LIMIT);
            let output = child.wait_with_output_lossy();
            match status {
                Some(s) if s.success() => {}
                Some(s) => fail(round, format!("worker {w} failed ({s}):\n{output}")),
                None => fail(
                    round,
                    format!("worker {w} did not finish in {ROUND_LIMIT:?}"),
                ),
            }
        }
        if let Err(e) = compare(&drive, &shadow) {
            fail(round, format!("after the round: {e}"));
        }
        round += 1;
    }
    eprintln!("stress: {round} rounds in {:.0?}", start.elapsed());

    let mnt = m.mnt.path().to_str().expect("utf-8 path").to_string();
    m.repo.ok(&["unmount", &mnt]);
    m.repo.ok(&["fsck"]);
    m.remount();
    if let Err(e) = compare(&drive, &shadow) {
        panic!("stress, PEERFS_STRESS_SEED={seed}: after unmount and mount: {e}");
    }
}

/// A finished child's stdout and stderr, as text.
trait OutputLossy {
    fn wait_with_output_lossy(&mut self) -> String;
}

impl OutputLossy for std::process::Child {
    fn wait_with_output_lossy(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut text);
        }
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }
}
