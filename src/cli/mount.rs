//! `mount`, `unmount`, `status` and `fsck`: starting the daemon, and talking to it.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{progress, LogFormat};
use peerfs::daemon::control::{self, ControlError, Request, Response};
use peerfs::daemon::{self, format_time_ms};
use peerfs::drive::OWN_HEAD;
use peerfs::head::SignedHead;
use peerfs::repo::Repo;
use peerfs::store::HeadStore;

/// How long `peerfs mount` waits for the daemon's mount to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The daemon's log, in the repo, when it runs in the background.
const DAEMON_LOG: &str = "daemon.log";

pub fn mount(
    repo_path: &Path,
    dir: &Path,
    foreground: bool,
    format: LogFormat,
    net: daemon::NetFlags,
) -> Result<()> {
    if let Ok(Response::Status(s)) = control::request(repo_path, &Request::Status) {
        bail!(
            "repo {} is already mounted at {} (daemon pid {})",
            repo_path.display(),
            s.mountpoint.display(),
            s.pid
        );
    }
    if foreground {
        init_logging(format);
        let repo = Repo::open(repo_path).context("opening the repo")?;
        return daemon::run(repo, dir, net).context("peerfs daemon");
    }
    daemon::preflight(dir)?;
    // Fails now, with a plain message, if there is no repo or it is in use.
    drop(Repo::open(repo_path).context("opening the repo")?);

    let log_path = repo_path.join(DAEMON_LOG);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.seek(SeekFrom::End(0))?;
    let exe = std::env::current_exe().context("finding the peerfs binary")?;
    let format_arg = match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let mut command = Command::new(exe);
    command
        .arg("--repo")
        .arg(repo_path)
        .arg("mount")
        .arg(dir)
        .args(["--foreground", "--log-format", format_arg])
        .args(net.listen.iter().flat_map(|a| ["--listen", a.as_str()]))
        .args(net.no_mdns.then_some("--no-mdns"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the daemon leaves our session and terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("starting the daemon")?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(exit) = child.try_wait()? {
            bail!(
                "the daemon stopped ({exit}):\n{}",
                log_since(&log_path, log_start)
            );
        }
        if let Ok(Response::Status(s)) = control::request(repo_path, &Request::Status) {
            if s.pid == child.id() {
                println!(
                    "mounted {} (drive at {}/drive, daemon pid {}, log {})",
                    s.mountpoint.display(),
                    s.mountpoint.display(),
                    s.pid,
                    log_path.display()
                );
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    bail!(
        "the daemon did not answer within {}s:\n{}",
        START_TIMEOUT.as_secs(),
        log_since(&log_path, log_start)
    )
}

/// How long `peerfs unmount` waits for the daemon to exit after it answered.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits (bounded) until process `pid` is gone, so the repo is free when we return.
fn wait_for_exit(pid: u32) {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while Instant::now() < deadline {
        if has_exited(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` has ended and let go of its files (the repo's lock): gone, or
/// a zombie with no thread left. A process's first thread turns zombie while its other
/// threads may still be exiting, holding the files they share.
fn has_exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if stat.is_empty() {
        return true;
    }
    stat.contains(") Z ")
        && std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_or(true, |threads| threads.count() <= 1)
}

fn log_since(path: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(start));
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    text.trim_end().to_string()
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn unmount(repo_path: &Path, dir: &Path) -> Result<()> {
    match control::request(repo_path, &Request::Status) {
        Ok(Response::Status(s)) => {
            let wanted = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            if s.mountpoint != wanted {
                bail!(
                    "repo {} is mounted at {}, not {}",
                    repo_path.display(),
                    s.mountpoint.display(),
                    dir.display()
                );
            }
            match control::request(repo_path, &Request::Unmount)? {
                Response::Unmounted { root } => {
                    wait_for_exit(s.pid);
                    println!(
                        "unmounted {} (drive root {})",
                        s.mountpoint.display(),
                        root.as_deref().unwrap_or("empty")
                    );
                    Ok(())
                }
                Response::Error { message } => bail!("{message}"),
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
        Err(ControlError::NotRunning(_)) => {
            let stale =
                std::fs::metadata(dir).err().and_then(|e| e.raw_os_error()) == Some(libc::ENOTCONN);
            if stale {
                daemon::unmount_stale(dir);
                println!("cleaned up the stale mount at {}", dir.display());
                return Ok(());
            }
            bail!(
                "no peerfs daemon of repo {} is running, and nothing stale is mounted at {}",
                repo_path.display(),
                dir.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

pub fn status(repo_path: &Path) -> Result<()> {
    let s = match control::request(repo_path, &Request::Status) {
        Ok(Response::Status(s)) => s,
        Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
        Err(e) => return Err(e.into()),
    };
    println!("daemon pid:    {}", s.pid);
    println!("peer id:       {}", s.peer_id);
    println!("mount point:   {}", s.mountpoint.display());
    println!(
        "root:          {}",
        s.root.as_deref().unwrap_or("(empty drive)")
    );
    println!(
        "commit seq:    {}{}",
        s.seq,
        if s.uncommitted_changes {
            " (changes pending)"
        } else {
            ""
        }
    );
    println!(
        "last commit:   {}",
        s.last_commit_ms
            .map_or_else(|| "never".to_string(), format_time_ms)
    );
    println!("open files:    {}", s.open_files);
    println!("store size:    {}", indicatif::HumanBytes(s.store_bytes));
    println!(
        "peer cache:    {} of {}",
        indicatif::HumanBytes(s.cache_bytes),
        indicatif::HumanBytes(s.cache_cap)
    );
    println!("peer inodes:   {}", s.peer_inodes);
    Ok(())
}

pub fn fsck(repo: &Repo) -> Result<()> {
    let Some(bytes) = repo.store().head(OWN_HEAD)? else {
        println!("the drive is empty (never committed): nothing to check");
        return Ok(());
    };
    let head = SignedHead::verify(&bytes).context("the drive's head record")?;
    let root = head.head().root;
    let bar = progress::bytes(None, "fsck");
    let report = peerfs::fsck::check(repo.store(), &root, &mut |n| bar.inc(n));
    bar.finish_and_clear();
    println!(
        "drive root {root} (seq {}): {} blocks, {}",
        head.head().seq,
        report.blocks,
        indicatif::HumanBytes(report.bytes)
    );
    for p in &report.problems {
        println!("problem: {p}");
    }
    if !report.problems.is_empty() {
        return Err(anyhow!("{} problems found", report.problems.len()));
    }
    println!("no problems found");
    Ok(())
}
