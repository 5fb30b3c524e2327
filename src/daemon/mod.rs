//! The daemon: one process per repo that mounts the drive, commits it on an interval,
//! answers the control socket, and on SIGINT/SIGTERM or `peerfs unmount` commits,
//! flushes and unmounts. Only this module and the CLI know every part.
//!
//! - [`control`]: the control socket's protocol, and its client.
//! - [`blocks`]: blocks sessions over the control socket, for the CLI's content commands.
//! - [`session`]: the mounted session as a guard (committer, final commit, unmount).

pub mod blocks;
pub mod control;
pub mod session;
mod sweeper;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{INodeNo, MountOption, Notifier, Session, SessionACL};
use session::Mounted;
use tracing::{error, info, warn};

use crate::drive::{Drive, DriveError};
use crate::fuse::{PeerFs, PEERS, PEERS_DIR};
use crate::head::{Head, SignedHead};
use crate::net::peerbook::{PeerBook, PeerBookError};
use crate::net::{self, NetConfig, NetError, NetEvent, NetHandle, Readers, RemoteBlocks};
use crate::peers::{Invalidation, PeerView};
use crate::pin::{self, WalkProgress};
use crate::repo::Repo;
use crate::store::rocks::RocksStore;
use crate::store::{Blocks, HeadStore};
use control::{PinInfo, Request, Response, Status};

/// FUSE worker threads: requests for different files proceed in parallel.
const FUSE_THREADS: usize = 4;
/// How often a detached session checks whether its last open file has closed.
const DETACHED_POLL: Duration = Duration::from_millis(100);

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
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    PeerBook(#[from] PeerBookError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "config `readers`: {0:?} is not \"following\", \"*\", a peer ID or a name in the peer book"
    )]
    UnknownReader(String),
}

/// Network settings given on the command line; they override `config.toml`.
#[derive(Clone, Debug, Default)]
pub struct NetFlags {
    pub listen: Vec<String>,
    pub no_mdns: bool,
}

/// The node's settings: config.toml, then flags, then the test-only fault switch.
fn net_config(repo: &Repo, book: &PeerBook, flags: &NetFlags) -> Result<NetConfig, DaemonError> {
    let config = repo.config();
    let listen = if flags.listen.is_empty() {
        &config.listen
    } else {
        &flags.listen
    };
    let readers = Readers::from_config(&config.readers, |name| {
        book.by_name(name).and_then(|e| e.peer_id())
    })
    .map_err(DaemonError::UnknownReader)?;
    Ok(NetConfig {
        listen: net::parse_addrs(listen)?,
        mdns: config.mdns && !flags.no_mdns,
        readers,
        fetch_timeout: config.fetch_timeout,
        bootstrap: net::parse_addrs(&config.bootstrap)?,
        dht_server: config.dht_server,
        max_connections: config.max_connections,
        corrupt_served_blocks: std::env::var_os("PEERFS_TEST_CORRUPT_BLOCKS").is_some(),
    })
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

/// Where the repo's daemon mounted, kept in the repo while it runs.
const MOUNT_RECORD: &str = "mounted-at";

/// Where the repo's daemon mounted and left a mount behind when it stopped without
/// unmounting (killed, crashed): the mount is still there and answers "Transport
/// endpoint is not connected".
pub fn stale_mount(repo: &Path) -> Option<PathBuf> {
    let recorded = std::fs::read(repo.join(MOUNT_RECORD)).ok()?;
    let dir = PathBuf::from(std::ffi::OsString::from_vec(recorded));
    is_stale_mount(&dir).then_some(dir)
}

/// Whether `dir` is a FUSE mount whose daemon is gone. Asked with statfs, which always
/// reaches the daemon: a `stat` may be answered from the kernel's attribute cache.
pub fn is_stale_mount(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `buf` has room for one statfs.
    let rc = unsafe { libc::statfs(path.as_ptr(), buf.as_mut_ptr()) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
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

/// How the main thread answers a control request: with the response, and a sender the
/// connection's thread signals once the response is written, so that the process does
/// not exit between the two (the client would read EOF).
struct Answer(mpsc::Sender<(Response, mpsc::Sender<()>)>);

/// How long the daemon waits, as it exits, for an answer to be written.
const ANSWER_WRITTEN_TIMEOUT: Duration = Duration::from_secs(2);

impl Answer {
    fn send(&self, response: Response) -> Option<mpsc::Receiver<()>> {
        let (written, is_written) = mpsc::channel();
        self.0.send((response, written)).ok()?;
        Some(is_written)
    }
}

enum Event {
    Signal(&'static str),
    /// `peerfs unmount`; `lazy` detaches even while files are open.
    Unmount {
        reply: Answer,
        lazy: bool,
    },
    SessionEnded,
}

/// Mounts the repo's drive at `mountpoint`, runs the node, and serves until told to stop.
pub fn run(repo: Repo, mountpoint: &Path, flags: NetFlags) -> Result<(), DaemonError> {
    let mountpoint = preflight(mountpoint)?;
    let opts = repo.config().import.profile.options();
    let store = repo.shared_store();
    store.enable_cache(repo.config().cache_size.as_u64())?;
    store.set_min_free(repo.config().min_disk_free.as_u64());
    let drive = Arc::new(Drive::load(store.clone(), opts, repo.keypair().clone())?);
    let book = PeerBook::load(repo.path())?;
    let net_config = net_config(&repo, &book, &flags)?;
    drive.set_open(matches!(net_config.readers, Readers::Everyone));
    let (net_events, net_inbox) = mpsc::sync_channel(net::EVENTS_QUEUED);
    let (net, runtime) = net::node::start(
        repo.keypair().clone(),
        net_config,
        store.clone(),
        book.entries().to_vec(),
        net_events,
    )?;
    let view = Arc::new(PeerView::new(store.clone(), net.clone(), PEERS));
    for entry in book.entries() {
        if let Some(peer) = entry.peer_id() {
            view.add_peer(
                &entry.name,
                peer,
                stored_head(store.as_ref(), &entry.id).as_ref(),
            );
        }
    }
    let fs = PeerFs::new(
        Arc::clone(&drive),
        Some((Arc::clone(&view), runtime.handle().clone())),
        repo.path(),
    );
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("peerfs".into()),
        MountOption::Subtype("peerfs".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    if repo.config().allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(FUSE_THREADS);
    config.clone_fd = true;
    let mount_err = |source| DaemonError::Mount {
        path: mountpoint.clone(),
        source,
    };
    let socket = repo.path().join(control::SOCKET);
    let control = bind_control(&socket)?;
    let mut session = Session::new(fs, &mountpoint, &config).map_err(|e| {
        let _ = std::fs::remove_file(&socket);
        mount_err(e)
    })?;
    let unmounter = session.unmount_callable();
    let notifier = session.notifier();
    // Removed again at a clean end: if it outlives the daemon, the mount was left behind.
    let _ = std::fs::write(
        repo.path().join(MOUNT_RECORD),
        mountpoint.as_os_str().as_encoded_bytes(),
    );
    info!(
        "mounted {} (drive root {})",
        mountpoint.display(),
        root_text(drive.status().root.as_ref())
    );

    let (events, inbox) = mpsc::channel();
    let ended = events.clone();
    std::thread::spawn(move || {
        if let Err(e) = session.run() {
            error!("FUSE session ended with an error: {e}");
        }
        let _ = ended.send(Event::SessionEnded);
    });
    // From here on the guard's Drop commits and unmounts, whatever happens.
    let mut mounted = Mounted::new(
        unmounter,
        Arc::clone(&drive),
        store.clone(),
        mountpoint.clone(),
        net.clone(),
    );
    watch_signals(events.clone());
    let book = Arc::new(Mutex::new(book));
    follow_heads(
        net_inbox,
        Arc::clone(&view),
        Arc::clone(&book),
        notifier.clone(),
    );
    let context = Context {
        drive: Arc::clone(&drive),
        repo: repo.path().to_path_buf(),
        peer_id: repo.peer_id(),
        mountpoint: mountpoint.clone(),
        net: net.clone(),
        book,
        view,
        notifier,
        store: store.clone(),
        blocks: blocks::serve::Server::new(store.clone(), net.clone()),
        import_profile: repo.config().import.profile,
    };
    sweeper::start(
        Arc::downgrade(&drive),
        Arc::downgrade(&store),
        Arc::clone(&context.book),
        repo.path().join("db"),
        repo.config().sweep_after.as_u64(),
    );
    serve_control(control, context, events.clone());

    let requesters = serve_until_done(&inbox, &mut mounted, &drive);
    let committed = mounted.finish();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(repo.path().join(MOUNT_RECORD));
    if let Some(head) = drive.head() {
        net.publish(head);
    }
    // A moment for the last head to leave; the node ends with its runtime.
    runtime.shutdown_timeout(Duration::from_millis(500));
    let root = drive.status().root.map(|c| c.to_string());
    info!(
        "unmounted {} (drive root {})",
        mountpoint.display(),
        root.as_deref().unwrap_or(EMPTY_DRIVE)
    );
    for reply in requesters {
        let answer = match &committed {
            Ok(_) => Response::Unmounted { root: root.clone() },
            Err(e) => Response::Error {
                message: format!("unmounted, but the final commit failed: {e}"),
            },
        };
        if let Some(written) = reply.send(answer) {
            let _ = written.recv_timeout(ANSWER_WRITTEN_TIMEOUT);
        }
    }
    committed.map(drop).map_err(DaemonError::from)
}

/// Serves until the session is over: the mount was unmounted (by us or from outside),
/// or it was detached and its last open file has closed, so that every write a program
/// was told succeeded is in the final commit. Returns who asked for the unmount.
fn serve_until_done(
    inbox: &mpsc::Receiver<Event>,
    mounted: &mut Mounted,
    drive: &Drive,
) -> Vec<Answer> {
    let mut requesters = Vec::new();
    loop {
        match inbox.recv_timeout(DETACHED_POLL) {
            Ok(Event::SessionEnded) | Err(RecvTimeoutError::Disconnected) => {
                info!("the mount is gone");
                mounted.unmounted_elsewhere();
                return requesters;
            }
            Ok(Event::Signal(name)) => {
                info!("{name}: detaching; the daemon stops once no file is open");
                mounted.detach();
            }
            Ok(Event::Unmount { reply, lazy: true }) => {
                mounted.detach();
                let _ = reply.send(Response::Detached {
                    open_files: drive.status().open_files,
                });
            }
            Ok(Event::Unmount { reply, lazy: false }) => match mounted.unmount() {
                Ok(()) => requesters.push(reply),
                Err(busy) => {
                    info!("unmount refused: {busy}");
                    let _ = reply.send(Response::Error {
                        message: busy.to_string(),
                    });
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
        }
        if mounted.is_detached() && drive.status().open_files == 0 {
            return requesters;
        }
    }
}

/// The root of the newest head stored for peer `id`.
fn stored_head(store: &dyn HeadStore, id: &str) -> Option<Head> {
    let bytes = store.head(id).ok()??;
    SignedHead::verify(&bytes).ok().map(|h| h.head().clone())
}

/// Moves the peer view to each new head a followed peer announces, and tells the
/// kernel exactly what changed.
fn follow_heads(
    inbox: mpsc::Receiver<NetEvent>,
    view: Arc<PeerView>,
    book: Arc<Mutex<PeerBook>>,
    notifier: Notifier,
) {
    std::thread::spawn(move || {
        for event in inbox {
            match event {
                NetEvent::Head(head) => {
                    let h = head.head();
                    let name = book
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .by_id(&h.peer)
                        .map(|e| e.name.clone());
                    let Some(name) = name else { continue };
                    let changes = view.add_peer(&name, h.peer, Some(h));
                    invalidate(&notifier, changes);
                }
            }
        }
    });
}

/// Tells the kernel to drop what a head change made stale. Errors only mean the kernel
/// did not hold that entry.
fn invalidate(notifier: &Notifier, changes: Vec<Invalidation>) {
    for change in changes {
        let _ = match &change {
            Invalidation::Entry { parent, name } => {
                notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name))
            }
            Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
        };
    }
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

/// What the control socket's answers need.
struct Context {
    drive: Arc<Drive>,
    repo: PathBuf,
    peer_id: libp2p::PeerId,
    mountpoint: PathBuf,
    net: NetHandle,
    book: Arc<Mutex<PeerBook>>,
    view: Arc<PeerView>,
    notifier: Notifier,
    store: Arc<RocksStore>,
    blocks: blocks::serve::Server,
    import_profile: crate::unixfs::Profile,
}

impl Context {
    fn status(&self) -> Status {
        let d = self.drive.status();
        let cache = self.store.cache_usage().unwrap_or_default();
        Status {
            pid: std::process::id(),
            peer_id: self.peer_id.to_string(),
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
            cache_bytes: cache.0,
            cache_cap: cache.1,
            peer_inodes: self.view.inode_count() as u64,
            readers: self.net.readers().summary().to_string(),
            connected_peers: self.net.connected_peers(),
        }
    }

    /// The peer whose drive `path` (a path inside the mount) is in, with the path
    /// below that drive's root.
    fn owner_of(&self, path: &Path) -> Option<(libp2p::PeerId, String)> {
        let rel = path.strip_prefix(&self.mountpoint).ok()?;
        let mut parts = rel.components();
        if parts.next()?.as_os_str() != PEERS_DIR {
            return None;
        }
        let name = parts.next()?.as_os_str().to_str()?;
        let below = parts.as_path().to_str()?.to_string();
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        Some((book.by_name(name)?.peer_id()?, below))
    }

    fn pin(&self, cid: &str, path: Option<&Path>, progress: impl FnMut(WalkProgress)) -> Response {
        let mut root: cid::Cid = match cid.parse() {
            Ok(c) => c,
            Err(e) => return error_response(format!("{cid}: not a CID ({e})")),
        };
        let label = path.map_or_else(|| root.to_string(), |p| p.display().to_string());
        // What it claims is reachable from nothing until its pin is written.
        let _no_sweep = self.store.hold_off_sweeps();
        let in_peer = path.and_then(|p| self.owner_of(p));
        let owner = in_peer.as_ref().map(|(peer, _)| *peer);
        let remote = RemoteBlocks {
            local: self.store.clone(),
            net: self.net.clone(),
            owner,
            fetch: true,
        };
        // Under peers/, the directories above the pinned tree stay too, so that its
        // path still opens when the owner is gone.
        if let Some((peer, below)) = &in_peer {
            if let Some(peer_head) = stored_head(self.store.as_ref(), &peer.to_string()) {
                match pin::keep_path(&self.store, &remote, &peer_head.root, below) {
                    Ok(named) => root = named,
                    Err(e) => return error_response(format!("pinning {label}: {e}")),
                }
            }
        }
        let ahead = |cids: &[cid::Cid]| {
            for c in cids {
                if !self.store.has(c).unwrap_or(true) {
                    self.net.prefetch(c, owner);
                }
            }
        };
        match pin::pin_tree(&self.store, &remote, &root, &label, ahead, progress) {
            Ok(done) => Response::Pinned {
                cid: root.to_string(),
                blocks: done.blocks,
                bytes: done.bytes,
            },
            Err(e) => error_response(format!("pinning {label}: {e}")),
        }
    }

    fn unpin(&self, target: &str, cid: Option<&str>) -> Response {
        let resolved = cid.and_then(|c| c.parse().ok());
        match pin::unpin(&self.store, target, resolved.as_ref()) {
            Ok(cids) if cids.is_empty() => error_response(format!("{target}: not pinned")),
            Ok(cids) => Response::Unpinned {
                cids: cids.iter().map(|c| c.to_string()).collect(),
            },
            Err(e) => error_response(e),
        }
    }

    fn pins(&self) -> Response {
        match self.store.pins() {
            Ok(pins) => Response::Pins {
                pins: pins
                    .into_iter()
                    .map(|(cid, label)| PinInfo {
                        cid: cid.to_string(),
                        label,
                    })
                    .collect(),
            },
            Err(e) => error_response(e),
        }
    }

    /// Online gc: cached blocks and our own that nothing reaches (see `sweeper`).
    fn gc(&self) -> Response {
        match sweeper::sweep(&self.drive, &self.store, &self.book, true) {
            Ok(None) => error_response("gc: no sweep was possible"),
            Ok(Some(r)) => Response::Collected {
                removed: r.removed,
                removed_bytes: r.removed_bytes,
                unfollowed: r.unfollowed,
            },
            Err(e) => error_response(format!("gc: {e}")),
        }
    }

    fn peer_add(&self, target: &str, name: Option<&str>) -> Response {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let before: Vec<_> = book.entries().to_vec();
        let entry = match book.add(target, name, &self.peer_id) {
            Ok(e) => e,
            Err(e) => return error_response(e),
        };
        drop(book);
        let Some(peer) = entry.peer_id() else {
            return error_response("bad peer ID in the peer book");
        };
        // A rename shows the peer under its new name only.
        for old in before
            .iter()
            .filter(|o| o.id == entry.id && o.name != entry.name)
        {
            invalidate(&self.notifier, self.view.remove_peer(&old.name));
        }
        self.net.follow(entry.clone());
        let head = stored_head(self.store.as_ref(), &entry.id);
        invalidate(
            &self.notifier,
            self.view.add_peer(&entry.name, peer, head.as_ref()),
        );
        let dial = Some(self.net.reach(peer));
        Response::PeerAdded { entry, dial }
    }

    fn peer_rm(&self, name: &str) -> Response {
        let removed = self
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        match removed {
            Ok(entry) => {
                if let Some(peer) = entry.peer_id() {
                    self.net.unfollow(peer);
                }
                invalidate(&self.notifier, self.view.remove_peer(&entry.name));
                Response::PeerRemoved(entry)
            }
            Err(e) => error_response(e),
        }
    }
}

fn error_response(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
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

/// Binds the control socket. Bound before the mount appears, so a `peerfs status` or
/// `unmount` sent as soon as the mount is visible waits for an answer instead of finding
/// no daemon.
fn bind_control(path: &Path) -> Result<UnixListener, DaemonError> {
    // We hold the repo lock, so a socket file left here belongs to a dead daemon.
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    })
}

/// Answers the control socket on a thread per connection.
fn serve_control(listener: UnixListener, context: Context, events: mpsc::Sender<Event>) {
    let context = Arc::new(context);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let context = Arc::clone(&context);
            let events = events.clone();
            std::thread::spawn(move || {
                if let Err(e) = answer(conn, &context, &events) {
                    warn!("control connection: {e}");
                }
            });
        }
    });
}

fn answer(
    conn: UnixStream,
    context: &Context,
    events: &mpsc::Sender<Event>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Bytes, not a string: junk that is not UTF-8 gets its "bad request" too.
    let mut line = Vec::new();
    let mut reader = BufReader::new(&conn);
    (&mut reader)
        .take(control::MAX_REQUEST)
        .read_until(b'\n', &mut line)?;
    let response = match serde_json::from_slice::<Request>(&line) {
        Ok(Request::Status) => Response::Status(context.status()),
        Ok(Request::Id) => Response::Id {
            peer_id: context.peer_id.to_string(),
            addrs: context
                .net
                .listen_addrs()
                .iter()
                .map(|a| a.to_string())
                .collect(),
        },
        Ok(Request::PeerAdd { target, name }) => context.peer_add(&target, name.as_deref()),
        Ok(Request::PeerRm { name }) => context.peer_rm(&name),
        Ok(Request::Peers) => Response::Peers {
            peers: context.net.peers(),
        },
        Ok(Request::Pin { cid, path }) => context.pin(&cid, path.as_deref(), |p| {
            // A client that went away is noticed when the answer is written.
            let _ = write_line(&conn, &Response::Progress(p));
        }),
        Ok(Request::Unpin { target, cid }) => context.unpin(&target, cid.as_deref()),
        Ok(Request::Pins) => context.pins(),
        Ok(Request::Gc) => context.gc(),
        Ok(Request::Blocks) => match context.blocks.admit() {
            Some(session) => {
                let profile = context.import_profile.to_string();
                write_line(&conn, &Response::Blocks { profile })?;
                return session.run(&mut reader, &conn);
            }
            None => error_response(format!(
                "the daemon is busy: {} blocks sessions are open already",
                blocks::MAX_SESSIONS
            )),
        },
        Ok(Request::Unmount { lazy }) => {
            let (tx, rx) = mpsc::channel();
            if events
                .send(Event::Unmount {
                    reply: Answer(tx),
                    lazy,
                })
                .is_err()
            {
                Response::Error {
                    message: "the daemon is stopping".into(),
                }
            } else {
                match rx.recv() {
                    Ok((response, written)) => {
                        let result = write_line(&conn, &response);
                        let _ = written.send(());
                        return result;
                    }
                    Err(_) => Response::Error {
                        message: "the daemon stopped before answering".into(),
                    },
                }
            }
        }
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    write_line(&conn, &response)
}

fn write_line(conn: &UnixStream, response: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_string(response).expect("responses always encode");
    out.push('\n');
    (&*conn).write_all(out.as_bytes())
}

/// How logs and answers name the root of a drive never committed.
pub const EMPTY_DRIVE: &str = "none (empty drive)";

fn root_text(root: Option<&cid::Cid>) -> String {
    root.map_or_else(|| EMPTY_DRIVE.to_string(), cid::Cid::to_string)
}

/// When a commit happened, for `status`.
pub fn format_time_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
