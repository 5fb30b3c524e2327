//! Helpers for the integration tests: a repo in a temp dir, the `peerfs` binary, the
//! reference importer as an oracle, and deterministic test data.
#![allow(dead_code)]

pub mod private;
pub mod raw;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_peerfs")
}

/// A fresh repo in a temp dir, removed on drop.
pub struct TestRepo {
    pub dir: TempDir,
    root: PathBuf,
    /// Extra environment for every command (the daemon inherits it).
    pub env: Vec<(String, String)>,
}

impl TestRepo {
    /// Sets top-level `key` of the repo's config.toml to `value` (TOML syntax).
    pub fn set_config(&self, key: &str, value: &str) {
        self.edit_config(key, value, true);
    }

    /// Sets `key`, which a fresh config.toml leaves out (an optional setting).
    pub fn add_config(&self, key: &str, value: &str) {
        self.edit_config(key, value, false);
    }

    fn edit_config(&self, key: &str, value: &str, present: bool) {
        let path = self.path().join("config.toml");
        let text = fs::read_to_string(&path).expect("config.toml");
        let mut config: toml::Table = text.parse().expect("config.toml parses");
        assert_eq!(config.contains_key(key), present, "{key} in config");
        let mut parsed: toml::Table = format!("v = {value}").parse().expect("a TOML value");
        config.insert(key.to_string(), parsed.remove("v").unwrap());
        fs::write(&path, toml::to_string(&config).unwrap()).expect("write config.toml");
    }

    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("repo");
        TestRepo::init(dir, root)
    }

    /// A repo at `root` (on a disk the test made); `root` is not removed on drop.
    pub fn init_at(root: &Path) -> TestRepo {
        TestRepo::init(tempfile::tempdir().expect("temp dir"), root.to_path_buf())
    }

    /// A path where no repo is, for the errors that says so.
    pub fn uninitialised() -> TestRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("repo");
        TestRepo {
            dir,
            root,
            env: Vec::new(),
        }
    }

    fn init(dir: TempDir, root: PathBuf) -> TestRepo {
        let repo = TestRepo {
            dir,
            root,
            env: Vec::new(),
        };
        repo.ok(&["init"]);
        repo
    }

    pub fn path(&self) -> PathBuf {
        self.root.clone()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--repo").arg(self.path()).args(args);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run peerfs")
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "peerfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs and insists on failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "peerfs {args:?} should have failed, printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// CIDs as `peerfs add -q -n` computes them (no repo needed).
pub fn peerfs_cid(path: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(["add", "-r", "-q", "-n"])
        .args(args)
        .arg(path)
        .output()
        .expect("run peerfs");
    assert!(
        out.status.success(),
        "peerfs add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle")
}

/// Runs the reference JS stack. The oracle is a requirement, not an option: a missing
/// install fails the test with the command that fixes it.
pub fn oracle(args: &[&str]) -> String {
    let dir = oracle_dir();
    assert!(
        dir.join("node_modules/ipfs-unixfs-importer").is_dir(),
        "the interop oracle is not installed: run `npm ci --prefix {}`",
        dir.display()
    );
    let out = Command::new("node")
        .arg(dir.join("oracle.mjs"))
        .args(args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "oracle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// (root CID, UnixFS type of the root) as the reference importer makes them.
pub fn oracle_add(path: &Path, options_json: &str) -> (String, String) {
    let line = oracle(&["add", path.to_str().expect("utf-8 path"), options_json]);
    let (cid, kind) = line.split_once(' ').expect("cid and type");
    (cid.to_string(), kind.to_string())
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, data).expect("write");
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Sets an mtime (seconds, nanoseconds) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    peerfs::get::set_mtime(path, secs, nanos).expect("set mtime");
}

/// `diff -r` of two trees (symlinks compared as links); panics with the difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .expect("run diff");
    assert!(
        out.status.success(),
        "trees differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running daemon with its drive mounted in a temp dir; unmounted (and, failing that,
/// killed by PID and detached) on drop.
pub struct Mounted {
    pub repo: TestRepo,
    pub mnt: TempDir,
    pub pid: u32,
}

impl Mounted {
    pub fn new() -> Mounted {
        Mounted::with_repo(TestRepo::new())
    }

    pub fn with_repo(repo: TestRepo) -> Mounted {
        Mounted::with_repo_at(repo, tempfile::tempdir().expect("temp dir"))
    }

    pub fn drive(&self) -> PathBuf {
        self.mnt.path().join("drive")
    }

    pub fn unmount(&self) {
        self.repo
            .ok(&["unmount", self.mnt.path().to_str().unwrap()]);
    }

    /// Mounts the same repo at the same place again (after an unmount or a crash).
    pub fn remount(&mut self) {
        self.pid = mount(&self.repo, &self.mnt, LOOPBACK_TCP);
    }

    fn with_repo_at(repo: TestRepo, mnt: TempDir) -> Mounted {
        let pid = mount(&repo, &mnt, LOOPBACK_TCP);
        Mounted { repo, mnt, pid }
    }

    /// A fresh repo whose daemon listens only on `listen` (a loopback multiaddr).
    pub fn listening(listen: &str) -> Mounted {
        Mounted::listening_with(TestRepo::new(), listen)
    }

    /// `listening`, with a repo the test configured.
    pub fn listening_with(repo: TestRepo, listen: &str) -> Mounted {
        let mnt = tempfile::tempdir().expect("temp dir");
        let pid = mount(&repo, &mnt, listen);
        Mounted { repo, mnt, pid }
    }

    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }
}

/// Whether process `pid` runs or still holds its files: a zombie whose other threads
/// are still exiting counts as alive.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    !stat.contains(") Z ")
        || fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|threads| threads.count() > 1)
}

/// The daemon's PID from what `peerfs mount` printed.
pub fn daemon_pid(mount_output: &str) -> u32 {
    mount_output
        .split("daemon pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {mount_output:?}"))
}

const LOOPBACK_TCP: &str = "/ip4/127.0.0.1/tcp/0";

/// `peerfs mount` on loopback (`listen`, an ephemeral port) and no mDNS, so tests never
/// meet each other or the LAN; returns the daemon's PID.
fn mount(repo: &TestRepo, mnt: &TempDir, listen: &str) -> u32 {
    let mnt = mnt.path().to_str().unwrap();
    let out = repo.ok(&["mount", mnt, "--listen", listen, "--no-mdns"]);
    daemon_pid(&out)
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mnt = self.mnt.path().to_str().unwrap().to_string();
        if self.alive() {
            let _ = self.repo.run(&["unmount", &mnt]);
        }
        if self.alive() {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(self.pid.to_string())
                .status();
        }
        let _ = Command::new("fusermount3")
            .args(["-u", "-z", &mnt])
            .output();
    }
}

/// Runs a shell command line in `dir`; panics with its output if it fails.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until `ready` holds; panics naming `what` if it never does.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what}: not within {limit:?}");
}

/// The node's first full listen address (with /p2p/).
pub fn addr(m: &Mounted) -> String {
    let mut found = None;
    wait_for("a listen address", Duration::from_secs(10), || {
        found = m.repo.ok(&["id"]).lines().nth(1).map(str::to_string);
        found.is_some()
    });
    found.unwrap()
}

/// The node's peer ID, as `peerfs id` prints it first.
pub fn peer_id(m: &Mounted) -> String {
    m.repo
        .ok(&["id"])
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string()
}

pub fn follow(follower: &Mounted, target: &Mounted, name: &str) {
    follower
        .repo
        .ok(&["peer", "add", &addr(target), "--name", name]);
}

pub fn kill(m: &Mounted) {
    Command::new("kill")
        .arg("-9")
        .arg(m.pid.to_string())
        .status()
        .expect("kill");
    wait_for("the daemon to die", Duration::from_secs(10), || !m.alive());
}

pub fn cid_of(path: &Path) -> String {
    xattr(path, "user.peerfs.cid").unwrap_or_default()
}

/// The value of extended attribute `name` of `path`, trimmed; `None` if it has none.
pub fn xattr(path: &Path, name: &str) -> Option<String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .expect("getfattr");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `peerfs mount` of `repo` at `mnt` (loopback, no mDNS) with the daemon's heap capped
/// at `heap_bytes` (RLIMIT_DATA, which the daemon inherits): a bug that makes it grow
/// without bound kills the daemon, not the machine. Returns the daemon's PID.
pub fn mount_capped(repo: &TestRepo, mnt: &Path, heap_bytes: u64) -> u32 {
    use std::os::unix::process::CommandExt;
    let mut command = repo.command(&[
        "mount",
        mnt.to_str().expect("utf-8 path"),
        "--listen",
        LOOPBACK_TCP,
        "--no-mdns",
    ]);
    // SAFETY: setrlimit is async-signal-safe and touches only the stack.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: heap_bytes,
                rlim_max: heap_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("run peerfs mount");
    assert!(
        out.status.success(),
        "peerfs mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon_pid(&String::from_utf8_lossy(&out.stdout))
}

/// `kill -9` of one process we started, by PID.
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) with a PID we started; a gone process only gives ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Waits up to `limit` for `child` to exit; past that, kills it (by PID) and returns
/// `None`.
pub fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lazily detaches whatever is mounted at `mnt` (after a daemon we killed).
pub fn detach_mount(mnt: &Path) {
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mnt)
        .output();
}

/// fsync(2) of every file and directory under `dir`, `dir` last: what a careful
/// program does before it calls data safe.
pub fn fsync_tree(dir: &Path) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.is_dir() {
            fsync_tree(&path);
        } else if meta.is_file() {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
        }
    }
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", dir.display()));
}

/// A small deterministic generator (xorshift64*): the same seed gives the same run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seed in env var `var`, or a fresh one from the clock; printed either way, so a
/// failing run can be repeated with `var=SEED`.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("seed: {var}={seed}");
    seed
}
impl TestRepo {
    /// Runs with stdout a pipe whose reader has already gone (`peerfs … | head -0`),
    /// so the first line printed meets a closed pipe. Returns the exit status and stderr.
    pub fn run_into_closed_pipe(&self, args: &[&str]) -> (std::process::ExitStatus, String) {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut fds = [0; 2];
        // SAFETY: pipe writes two new descriptors into the array it is given.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: both descriptors are new and owned here alone.
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(reader);
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .expect("run peerfs");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl TestRepo {
    /// A fresh repo whose drive everyone may read (`readers = ["*"]`; by default only
    /// the peers it follows may), for tests about something else than who may read.
    pub fn readable_by_everyone() -> TestRepo {
        let repo = TestRepo::new();
        repo.set_config("readers", r#"["*"]"#);
        repo
    }
}

impl Mounted {
    /// A running daemon whose drive everyone may read: see
    /// `TestRepo::readable_by_everyone`.
    pub fn readable_by_everyone() -> Mounted {
        Mounted::with_repo(TestRepo::readable_by_everyone())
    }
}

/// Bytes of the repo's database files. A running daemon's RocksDB deletes files while
/// they are listed (compaction, old logs): those count as gone.
pub fn db_size(repo: &TestRepo) -> u64 {
    fs::read_dir(repo.path().join("db"))
        .expect("the repo's db directory")
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
