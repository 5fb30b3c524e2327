//! `mount`, `unmount`, `status` and `fsck`: starting the daemon, and talking to it.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::output::outln;
use super::{json, mounts, progress, LogFormat};
use peerfs::daemon::control::{self, ControlError, Request, Response};
use peerfs::daemon::{self, format_time_ms};
use peerfs::head::SignedHead;
use peerfs::head::OWN_HEAD;
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
                outln!(
                    "mounted {} (drive at {}/drive, daemon pid {}, log {})",
                    s.mountpoint.display(),
                    s.mountpoint.display(),
                    s.pid,
                    log_path.display()
                )?;
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
    let start = Instant::now();
    let mut said = false;
    while start.elapsed() < EXIT_TIMEOUT {
        if has_exited(pid) {
            return;
        }
        if !said && start.elapsed() > Duration::from_secs(1) {
            eprintln!("waiting for the daemon (pid {pid}) to let go of the repo…");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the daemon (pid {pid}) is still exiting; the repo may stay busy a moment");
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

/// The log's level when `RUST_LOG` does not say. Kademlia warns at every start that it
/// cannot bootstrap with no known peers, and when a record finds no peers to be copied
/// to: both the normal state of a node that is alone or new, so only its errors show.
/// fuser's session warns when its own unmount finds the mount gone, which is how every
/// session ends here (the daemon unmounts itself, or `umount` did).
const DEFAULT_LOG: &str = "info,libp2p_kad=error,fuser::session=error";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    // Colour only for a person at a terminal: daemon.log and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Unmounts `dir`, whichever repo's daemon serves it; without `dir`, the mount of this
/// repo's daemon.
pub fn unmount(repo_path: &Path, dir: Option<&Path>, lazy: bool) -> Result<()> {
    let mine = match control::request(repo_path, &Request::Status) {
        Ok(Response::Status(s)) => Some(s),
        Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
        Err(ControlError::NotRunning(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(dir) = dir else {
        return match mine {
            Some(s) => stop(repo_path, &s, lazy),
            None => bail!(
                "no peerfs daemon of repo {} is running: nothing to unmount",
                repo_path.display()
            ),
        };
    };
    if daemon::is_stale_mount(dir) {
        daemon::unmount_stale(dir);
        outln!("cleaned up the stale mount at {}", dir.display())?;
        return Ok(());
    }
    let wanted = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    if let Some(s) = mine.as_ref().filter(|s| s.mountpoint == wanted) {
        return stop(repo_path, s, lazy);
    }
    match mounts::mounted_at(&wanted) {
        Some(m) if m.is_peerfs() => {
            for repo in mounts::repos_in_use() {
                if let Ok(Response::Status(s)) = control::request(&repo, &Request::Status) {
                    if s.mountpoint == wanted {
                        return stop(&repo, &s, lazy);
                    }
                }
            }
            bail!(
                "{} is a peerfs mount, but no running peerfs daemon of yours serves it",
                dir.display()
            )
        }
        Some(m) => bail!(
            "{} is a {} mount, not a peerfs one",
            dir.display(),
            m.fstype
        ),
        None => match mine {
            Some(s) => bail!(
                "nothing is mounted at {} (repo {} is mounted at {})",
                dir.display(),
                repo_path.display(),
                s.mountpoint.display()
            ),
            None => bail!("nothing is mounted at {}", dir.display()),
        },
    }
}

/// Asks the daemon of `repo` (whose state is `s`) to commit, flush and unmount, and
/// waits for it to exit.
fn stop(repo: &Path, s: &control::Status, lazy: bool) -> Result<()> {
    match control::request(repo, &Request::Unmount { lazy })? {
        Response::Detached { open_files } => {
            outln!(
                "detached {}; {open_files} open file(s) left: the daemon (pid {}) commits \
                 them as they close, then exits",
                s.mountpoint.display(),
                s.pid
            )?;
            Ok(())
        }
        Response::Unmounted { root } => {
            wait_for_exit(s.pid);
            outln!(
                "unmounted {} (repo {}, drive root {})",
                s.mountpoint.display(),
                repo.display(),
                root.as_deref().unwrap_or(daemon::EMPTY_DRIVE)
            )?;
            Ok(())
        }
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

pub fn status(repo_path: &Path, json: bool) -> Result<()> {
    let s = match control::request(repo_path, &Request::Status) {
        Ok(Response::Status(s)) => s,
        Ok(other) => bail!("unexpected answer from the daemon: {other:?}"),
        Err(e @ ControlError::NotRunning(_)) => match daemon::stale_mount(repo_path) {
            Some(dir) => bail!(
                "{e}; it stopped without unmounting and left a stale mount at {0} \
                 (\"Transport endpoint is not connected\"): `peerfs mount {0}` mounts again, \
                 `peerfs unmount {0}` only clears it",
                dir.display()
            ),
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    if json {
        return json::print(&json::Status::from(&s));
    }
    outln!("daemon pid:    {}", s.pid)?;
    outln!("peer id:       {}", s.peer_id)?;
    outln!("mount point:   {}", s.mountpoint.display())?;
    outln!(
        "root:          {}",
        s.root.as_deref().unwrap_or("(empty drive)")
    )?;
    if let Some(published) = &s.published_root {
        outln!("published:     {published} (private folders sealed)")?;
    }
    outln!(
        "commit seq:    {}{}",
        s.seq,
        if s.uncommitted_changes {
            " (changes pending)"
        } else {
            ""
        }
    )?;
    outln!(
        "last commit:   {}",
        s.last_commit_ms
            .map_or_else(|| "never".to_string(), format_time_ms)
    )?;
    outln!("open files:    {}", s.open_files)?;
    outln!("store size:    {}", indicatif::HumanBytes(s.store_bytes))?;
    outln!(
        "peer cache:    {} of {}",
        indicatif::HumanBytes(s.cache_bytes),
        indicatif::HumanBytes(s.cache_cap)
    )?;
    outln!("peer inodes:   {}", s.peer_inodes)?;
    if s.ipfs_dht.enabled {
        let d = &s.ipfs_dht;
        outln!(
            "IPFS DHT:      {} roots provided; {} peers (public), {} (LAN)",
            d.provided,
            d.routing_table_peers,
            d.lan_routing_table_peers
        )?;
    }
    print_replicas(&s)?;
    print_audience(&s)
}

/// Who holds my newest head in full, and a warning when too few do.
fn print_replicas(s: &control::Status) -> Result<()> {
    let who: Vec<String> = s
        .replicas
        .iter()
        .map(|r| r.name.clone().unwrap_or_else(|| r.peer_id.clone()))
        .collect();
    let list = if who.is_empty() {
        String::new()
    } else {
        format!(" ({})", who.join(", "))
    };
    outln!(
        "replicas:      {} peers hold head {} in full{list}",
        who.len(),
        s.seq
    )?;
    if let Some(w) = json::replicas_warning(s) {
        outln!("warning:       {w}")?;
    }
    Ok(())
}

/// Who may read my drive, and who is connected and reading it now.
fn print_audience(s: &control::Status) -> Result<()> {
    let readers = match s.readers.as_str() {
        "everyone" => "everyone (config `readers`)",
        "following" => "the peers I follow (config `readers`)",
        "following+listed" => "the peers I follow and those listed (config `readers`)",
        _ => "the peers listed in config `readers`",
    };
    outln!("readers:       {readers}")?;
    let connected = s.connected_peers.iter().filter(|p| p.connected).count();
    outln!("connected:     {connected} peers")?;
    for p in &s.connected_peers {
        let who = match &p.name {
            Some(name) => format!("{name} ({})", p.id),
            None => format!("{} (not followed)", p.id),
        };
        let state = if p.connected { "" } else { ", left" };
        let at = p.address.as_deref().unwrap_or("address not known");
        let mut reading = Vec::new();
        if p.blocks_served > 0 {
            reading.push(format!(
                "read {} blocks, {} in the last minute",
                p.blocks_served,
                indicatif::HumanBytes(p.bytes_served)
            ));
        }
        if p.requests_refused > 0 {
            reading.push(format!(
                "{} requests refused in the last minute",
                p.requests_refused
            ));
        }
        if let Some(ms) = p.last_request_ms {
            reading.push(format!("last request {}", format_time_ms(ms)));
        }
        if reading.is_empty() {
            reading.push("not reading".into());
        }
        outln!("  {who}  {at}{state}: {}", reading.join("; "))?;
    }
    Ok(())
}

pub fn fsck(repo: &Repo) -> Result<()> {
    let Some(bytes) = repo.store().head(OWN_HEAD)? else {
        outln!("the drive is empty (never committed): nothing to check")?;
        return Ok(());
    };
    let head = SignedHead::verify(&bytes).context("the drive's head record")?;
    let root = head.head().root;
    let bar = progress::bytes(None, "fsck");
    let report = peerfs::fsck::check(repo.store(), &root, &mut |n| bar.inc(n));
    bar.finish_and_clear();
    outln!(
        "drive root {root} (seq {}): {} blocks, {}",
        head.head().seq,
        report.blocks,
        indicatif::HumanBytes(report.bytes)
    )?;
    for p in &report.problems {
        outln!("problem: {p}")?;
    }
    if !report.problems.is_empty() {
        return Err(anyhow!("{} problems found", report.problems.len()));
    }
    outln!("no problems found")?;
    Ok(())
}
