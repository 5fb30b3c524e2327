//! The daemon: one process per repo that mounts the drive, commits it on an interval,
//! answers the control socket, and on SIGINT/SIGTERM or `peerfs unmount` commits,
//! flushes and unmounts. Only this module and the CLI know every part.
//!
//! - [`control`]: the control socket's protocol, and its client.

pub mod control;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{MountOption, Session};
use tracing::{error, info, warn};

use crate::drive::{Drive, DriveError};
use crate::fuse::PeerFs;
use crate::repo::Repo;
use control::{Request, Response, Status};

/// How often changes are committed; fsync and unmount commit at once.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// FUSE worker threads: requests for different files proceed in parallel.
const FUSE_THREADS: usize = 4;
/// How long unmount waits for the kernel to let the session go.
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {reason}")]
    MountPoint { path: PathBuf, reason: String },
    #[error("/dev/fuse is missing: load the module (`modprobe fuse`), or give the container the device (`--device /dev/fuse`)")]
    NoFuseDevice,
    #[error("fusermount3 not found: install fuse3 (`sudo apt-get install fuse3`)")]
    NoFusermount,
    #[error("mounting {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Drive(#[from] DriveError),
}

/// Checks that `mountpoint` can be mounted on, cleaning up a stale mount a crashed
/// daemon left; returns its absolute path.
pub fn preflight(mountpoint: &Path) -> Result<PathBuf, DaemonError> {
    let fail = |reason: &str| DaemonError::MountPoint {
        path: mountpoint.to_path_buf(),
        reason: reason.to_string(),
    };
    let probe = || -> std::io::Result<(std::fs::Metadata, bool)> {
        let meta = std::fs::metadata(mountpoint)?;
        let empty = !meta.is_dir() || std::fs::read_dir(mountpoint)?.next().is_none();
        Ok((meta, empty))
    };
    let probed = match probe() {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            warn!("{}: cleaning up a stale mount", mountpoint.display());
            unmount_stale(mountpoint);
            probe()
        }
        other => other,
    };
    let (meta, empty) = match probed {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail("does not exist (create it with mkdir)"))
        }
        Err(e) => return Err(fail(&e.to_string())),
    };
    if !meta.is_dir() {
        return Err(fail("is not a directory"));
    }
    if !empty {
        return Err(fail("is not empty (is something mounted there already?)"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(DaemonError::NoFuseDevice);
    }
    if !is_root() && find_in_path("fusermount3").is_none() {
        return Err(DaemonError::NoFusermount);
    }
    std::fs::canonicalize(mountpoint).map_err(|e| fail(&e.to_string()))
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Detaches a mount whose daemon is gone ("Transport endpoint is not connected").
pub fn unmount_stale(mountpoint: &Path) {
    let ok = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .status()
        .is_ok_and(|s| s.success());
    if !ok && is_root() {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(mountpoint)
            .status();
    }
}

enum Event {
    Signal(&'static str),
    Unmount(mpsc::Sender<Response>),
    SessionEnded,
}

/// Mounts the repo's drive at `mountpoint` and serves until told to stop.
pub fn run(repo: Repo, mountpoint: &Path) -> Result<(), DaemonError> {
    let mountpoint = preflight(mountpoint)?;
    let opts = repo.config().import.profile.options();
    let drive = Arc::new(Drive::load(
        repo.shared_store(),
        opts,
        repo.keypair().clone(),
    )?);
    let fs = PeerFs::new(Arc::clone(&drive), repo.path());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("peerfs".into()),
        MountOption::Subtype("peerfs".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    config.n_threads = Some(FUSE_THREADS);
    config.clone_fd = true;
    let mount_err = |source| DaemonError::Mount {
        path: mountpoint.clone(),
        source,
    };
    let mut session = Session::new(fs, &mountpoint, &config).map_err(mount_err)?;
    // `Session::spawn` would move the mount out of reach of this unmounter; running the
    // session on our own thread keeps it shared.
    let mut unmounter = session.unmount_callable();
    info!(
        "mounted {} (drive root {:?})",
        mountpoint.display(),
        drive.status().root.map(|c| c.to_string())
    );

    let (events, inbox) = mpsc::channel();
    let ended = events.clone();
    std::thread::spawn(move || {
        if let Err(e) = session.run() {
            error!("FUSE session ended with an error: {e}");
        }
        let _ = ended.send(Event::SessionEnded);
    });
    watch_signals(events.clone());
    let socket = repo.path().join(control::SOCKET);
    let status = StatusSource {
        drive: Arc::clone(&drive),
        repo: repo.path().to_path_buf(),
        peer_id: repo.peer_id().to_string(),
        mountpoint: mountpoint.clone(),
    };
    serve_control(&socket, status, events.clone())?;
    let (stop_commits, committer) = start_committer(Arc::clone(&drive));

    let mut session_ended = false;
    let requester = loop {
        match inbox.recv() {
            Ok(Event::Signal(name)) => {
                info!("{name}: unmounting");
                break None;
            }
            Ok(Event::Unmount(reply)) => break Some(reply),
            Ok(Event::SessionEnded) | Err(_) => {
                info!("{} was unmounted", mountpoint.display());
                session_ended = true;
                break None;
            }
        }
    };
    drop(stop_commits);
    let _ = committer.join();
    let committed = drive.flush_all().and_then(|()| drive.commit());
    if let Err(e) = &committed {
        error!("final commit failed: {e}");
    }
    if !session_ended {
        if let Err(e) = unmounter.unmount() {
            warn!("unmount: {e}; detaching lazily");
            unmount_stale(&mountpoint);
        }
        let deadline = std::time::Instant::now() + SESSION_END_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match inbox.recv_timeout(left) {
                Ok(Event::SessionEnded) | Err(_) => break,
                Ok(Event::Unmount(reply)) => {
                    let _ = reply.send(Response::Error {
                        message: "already unmounting".into(),
                    });
                }
                Ok(Event::Signal(_)) => {}
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    let root = drive.status().root.map(|c| c.to_string());
    info!("unmounted; drive root {:?}", root);
    if let Some(reply) = requester {
        let answer = match &committed {
            Ok(_) => Response::Unmounted { root },
            Err(e) => Response::Error {
                message: format!("unmounted, but the final commit failed: {e}"),
            },
        };
        let _ = reply.send(answer);
    }
    committed.map(drop).map_err(DaemonError::from)
}

/// Commits every `COMMIT_INTERVAL` until the returned sender is dropped.
fn start_committer(drive: Arc<Drive>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || loop {
        match stopped.recv_timeout(COMMIT_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = drive.commit() {
                    error!("commit failed (will retry): {e}");
                }
            }
            _ => return,
        }
    });
    (stop, handle)
}

fn watch_signals(events: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return error!("cannot watch signals: {e}"),
        };
        runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return error!("cannot watch signals");
            };
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                if events.send(Event::Signal(name)).is_err() {
                    return;
                }
            }
        });
    });
}

struct StatusSource {
    drive: Arc<Drive>,
    repo: PathBuf,
    peer_id: String,
    mountpoint: PathBuf,
}

impl StatusSource {
    fn status(&self) -> Status {
        let d = self.drive.status();
        Status {
            pid: std::process::id(),
            peer_id: self.peer_id.clone(),
            mountpoint: self.mountpoint.clone(),
            root: d.root.map(|c| c.to_string()),
            seq: d.seq,
            last_commit_ms: d.last_commit.and_then(|t| {
                t.duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64)
            }),
            uncommitted_changes: d.dirty,
            open_files: d.open_files,
            store_bytes: dir_size(&self.repo.join("db")),
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

/// Binds the control socket and answers it on a thread per connection.
fn serve_control(
    path: &Path,
    status: StatusSource,
    events: mpsc::Sender<Event>,
) -> Result<(), DaemonError> {
    // We hold the repo lock, so a socket file left here belongs to a dead daemon.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    })?;
    let status = Arc::new(status);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let status = Arc::clone(&status);
            let events = events.clone();
            std::thread::spawn(move || {
                if let Err(e) = answer(conn, &status, &events) {
                    warn!("control connection: {e}");
                }
            });
        }
    });
    Ok(())
}

fn answer(
    conn: UnixStream,
    status: &StatusSource,
    events: &mpsc::Sender<Event>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new((&conn).take(control::MAX_REQUEST)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => Response::Status(status.status()),
        Ok(Request::Unmount) => {
            let (tx, rx) = mpsc::channel();
            if events.send(Event::Unmount(tx)).is_err() {
                Response::Error {
                    message: "the daemon is stopping".into(),
                }
            } else {
                rx.recv().unwrap_or(Response::Error {
                    message: "the daemon stopped before answering".into(),
                })
            }
        }
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_string(&response).expect("responses always encode");
    out.push('\n');
    (&conn).write_all(out.as_bytes())
}

/// When a commit happened, for `status`.
pub fn format_time_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
