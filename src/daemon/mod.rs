//! The daemon: one process per repo that mounts the drive, commits it on an interval,
//! answers the control socket, and on SIGINT/SIGTERM or `peerfs unmount` commits,
//! flushes and unmounts. Only this module and the CLI know every part. `run` below wires
//! the parts together; each concept lives in a module of its own:
//!
//! - [`session`]: the mounted session as a guard (final commit, flush, unmount on `Drop`).
//! - `committer`: the thread that commits the drive when changes pause, and announces heads.
//! - `stop`: how a session ends (signals, `peerfs unmount`, the mount gone).
//! - `handlers`: the daemon's answers on the control socket.
//! - `mail`: the inbox and outbox at work: offers, fetches, receipts (`share`).
//! - `mirror`: mirrors kept (every head of a drive in full), and who keeps mine.
//! - `outbox`: what is copied into `outbox/<peer>/`, sent once it is written.
//! - [`introduce`]: my profile in my heads, HELLOs with followed peers, profile names
//!   for `peer add`, capabilities, and suggestions through friends (`profile`).
//! - [`control`]: the control socket's protocol, and its client.
//! - [`blocks`]: blocks sessions over the control socket, for the CLI's content commands.
//! - `follow`: followed peers' new heads into the peer view, the kernel's caches and the feed.
//! - [`feed`]: the live feed of `peerfs watch`, a bounded ring of events.
//! - `sweeper`: deleting, while mounted, the blocks nothing reaches.
//! - `watch`: a control connection that streams the feed.
//! - `trim`: handing the peer view's least used directories back to the kernel.
//! - `mountpoint`: preflight checks, and the stale mount a killed daemon leaves.

pub mod blocks;
mod committer;
pub mod control;
mod error;
pub mod feed;
pub mod find;
mod follow;
mod handlers;
pub mod introduce;
mod mail;
mod mirror;
mod mountpoint;
mod outbox;
pub mod private;
mod provide;
pub mod session;
mod stop;
mod sweeper;
mod transfers;
mod trim;
mod watch;

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{MountOption, Session, SessionACL};
use session::Mounted;
use tracing::{error, info};

use crate::drive::Drive;
use crate::fuse::PeerFs;
use crate::gateway::{self, StoreAccess};
use crate::net::peerbook::PeerBook;
use crate::net::{self, NetConfig, Readers};
use crate::peers::PeerView;
use crate::repo::Repo;
use crate::unixfs::edit::Removal;
use control::Response;
pub use error::DaemonError;
use feed::Feed;
use follow::{follow_heads, stored_head};
use handlers::{bind_control, serve_control, Context};
use mountpoint::MOUNT_RECORD;
pub use mountpoint::{is_stale_mount, preflight, stale_mount, unmount_stale};
use stop::{serve_until_done, watch_signals, Event, ANSWER_WRITTEN_TIMEOUT};
use trim::trim_view;

/// FUSE worker threads: requests for different files proceed in parallel.
const FUSE_THREADS: usize = 4;

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
        upload_rate: config.upload_rate.as_u64(),
        corrupt_served_cid: corrupt_sealed_of(repo),
        nat: net::nat::NatConfig {
            relay_server: config
                .relay_server
                .parse()
                .map_err(DaemonError::BadConfig)?,
            relays: net::parse_addrs(&config.relays)?,
            friend_limits: net::relay::FriendLimits {
                circuit_bytes: config.relay_circuit_bytes.as_u64(),
                circuit_duration: config.relay_circuit_duration,
                circuits: config.relay_circuits,
            },
            upnp: config.upnp,
        },
        ipfs_dht: config.ipfs_dht,
    })
}

/// Mounts the repo's drive at `mountpoint`, runs the node, and serves until told to stop.
pub fn run(repo: Repo, mountpoint: &Path, flags: NetFlags) -> Result<(), DaemonError> {
    let mountpoint = preflight(mountpoint)?;
    let opts = repo.config().import.profile.options();
    let store = repo.shared_store();
    store.enable_cache(repo.config().cache_size.as_u64())?;
    crate::store::rocks::keep_reclaiming(Arc::downgrade(&store));
    store.set_min_free(repo.config().min_disk_free.as_u64());
    let drive = Arc::new(Drive::load(store.clone(), opts, repo.keypair().clone())?);
    let publisher = crate::seal::publish::Publisher::open(repo.path(), store.clone() as _)
        .map_err(|e| crate::store::StoreError::Io {
            path: repo
                .path()
                .join(crate::seal::folders::FILE)
                .display()
                .to_string(),
            source: e,
        })?;
    drive.set_publisher(Arc::new(publisher));
    let book = PeerBook::load(repo.path())?;
    let net_config = net_config(&repo, &book, &flags)?;
    let readers = net_config.readers.clone();
    let corrupt_served_blocks = net_config.corrupt_served_blocks;
    drive.set_open(matches!(readers, Readers::Everyone));
    let (net_events, net_inbox) = mpsc::sync_channel(net::EVENTS_QUEUED);
    let (net, runtime) = net::node::start(
        repo.keypair().clone(),
        net_config,
        store.clone(),
        book.entries().to_vec(),
        net_events,
    )?;
    let reader_key = peerfs_reader_key(repo.keypair());
    let view = Arc::new(PeerView::new(
        store.clone(),
        net.clone(),
        repo.config().peer_inode_limit,
        repo.config().peer_listing_limit,
        Arc::new(crate::seal::unseal::Unsealer::new(reader_key)),
    ));
    for entry in book.entries() {
        if let Some(peer) = entry.peer_id() {
            view.add_peer(
                &entry.name,
                peer,
                stored_head(store.as_ref(), &entry.id).as_ref(),
            );
        }
    }
    let mut fs = PeerFs::new(
        Arc::clone(&drive),
        Some((Arc::clone(&view), runtime.handle().clone())),
        repo.path(),
    );
    let (pin_orders, pin_inbox) = mpsc::channel();
    fs.with_pin_orders(pin_orders);
    let readers_slot = Arc::new(private::ReadersSlot::default());
    fs.with_readers(Arc::clone(&readers_slot) as _);
    // The mailroom starts once the mount's notifier exists; reads before that tell
    // nobody (the inbox is not shown yet either).
    let mail_slot: Arc<std::sync::OnceLock<std::sync::Weak<mail::Mailroom>>> = Arc::default();
    let slot = Arc::clone(&mail_slot);
    fs.on_inbox_read(Arc::new(move |folder: &str, name: &str| {
        if let Some(m) = slot.get().and_then(std::sync::Weak::upgrade) {
            m.read(folder, name);
        }
    }));
    let slot = Arc::clone(&mail_slot);
    fs.on_inbox_remove(Arc::new(
        move |folder: &str, path: &[String], what: Removal| match slot
            .get()
            .and_then(std::sync::Weak::upgrade)
        {
            Some(m) => m.remove(folder, path, what),
            None => Err(crate::vfs::FsError::ReadOnly),
        },
    ));
    let outbox = outbox::make(repo.path(), book_names(repo.path()), Arc::clone(&mail_slot));
    fs.with_outbox(Arc::clone(&outbox));
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
    let _ = readers_slot.0.set(private::Sharing {
        drive: Arc::clone(&drive),
        book: Arc::clone(&book),
        mountpoint: mountpoint.clone(),
    });
    let feed = Arc::new(Feed::default());
    let transfers = Arc::new(crate::transfers::Transfers::open(repo.path()));
    let mail = mail::Mailroom::start(mail::Parts {
        repo: repo.path().to_path_buf(),
        key: repo.keypair().clone(),
        net: net.clone(),
        store: store.clone(),
        book: Arc::clone(&book),
        feed: Arc::clone(&feed),
        view: Arc::clone(&view),
        notifier: notifier.clone(),
        policy: crate::share::policy::Policy::from_config(
            &repo.config().accept_from,
            repo.config().inbox_quota.as_u64(),
            repo.config().inbox_max_item.as_u64(),
        ),
        read_receipts: repo.config().read_receipts,
        opts: repo.config().import.profile.options(),
        transfers: Arc::clone(&transfers),
    })
    .map_err(DaemonError::BadConfig)?;
    let _ = mail_slot.set(Arc::downgrade(&mail));
    find::answer_searches(find::Answering {
        net: net.clone(),
        store: store.clone(),
        book: Arc::clone(&book),
    })
    .map_err(DaemonError::BadConfig)?;
    outbox::send_finished(
        Arc::downgrade(&outbox),
        Arc::downgrade(&mail),
        store.clone(),
        repo.config().import.profile.options(),
    );
    let connected = Arc::downgrade(&mail);
    // Introductions start once mirroring has (they say whether this node mirrors).
    let intro_slot: Arc<std::sync::OnceLock<std::sync::Weak<introduce::Introductions>>> =
        Arc::default();
    let introduce_to = Arc::clone(&intro_slot);
    follow_heads(
        net_inbox,
        Arc::clone(&view),
        Arc::clone(&book),
        notifier.clone(),
        Arc::clone(&feed),
        Box::new(move |peer| {
            if let Some(m) = connected.upgrade() {
                m.connected(&peer);
            }
            if let Some(i) = introduce_to.get().and_then(std::sync::Weak::upgrade) {
                i.connected(peer);
            }
        }),
    );
    trim_view(Arc::downgrade(&view), notifier.clone());
    let mirroring = mirror::Mirroring::start(mirror::Parts {
        repo: repo.path().to_path_buf(),
        key: repo.keypair().clone(),
        store: store.clone(),
        net: net.clone(),
        book: Arc::clone(&book),
        min_replicas: repo.config().min_replicas,
    })
    .map_err(DaemonError::BadConfig)?;
    let intro = introduce::Introductions::start(introduce::Parts {
        repo: repo.path().to_path_buf(),
        key: repo.keypair().clone(),
        drive: Arc::clone(&drive),
        net: net.clone(),
        store: store.clone(),
        book: Arc::clone(&book),
        mirroring: Arc::downgrade(&mirroring),
        share_following: repo.config().share_following,
        relay_server: repo
            .config()
            .relay_server
            .parse()
            .map_err(DaemonError::BadConfig)?,
        fixed: introduce::offered(repo.config()),
    })
    .map_err(DaemonError::BadConfig)?;
    let _ = intro_slot.set(Arc::downgrade(&intro));
    let context = Context {
        drive: Arc::clone(&drive),
        repo: repo.path().to_path_buf(),
        peer_id: repo.peer_id(),
        mountpoint: mountpoint.clone(),
        net: net.clone(),
        book,
        view,
        notifier,
        feed,
        store: store.clone(),
        blocks: blocks::serve::Server::new(store.clone(), net.clone()),
        import_profile: repo.config().import.profile,
        mail,
        mirroring,
        transfers,
        intro,
    };
    let context = Arc::new(context);
    handlers::carry_out_pins(pin_inbox, Arc::clone(&context));
    transfers::resume_pins(Arc::clone(&context));
    sweeper::start(
        Arc::downgrade(&drive),
        Arc::downgrade(&store),
        Arc::clone(&context.book),
        repo.path().join("db"),
        repo.config().sweep_after.as_u64(),
    );
    let access = Arc::new(StoreAccess::new(
        store.clone(),
        matches!(readers, Readers::Everyone),
    ));
    if let Some(listen) = &repo.config().gateway {
        serve_gateway(listen, Arc::clone(&access), runtime.handle());
    }
    // Fetching from Bitswap peers works either way; `bitswap` says whether we serve.
    let serving: Arc<dyn gateway::Access> = access;
    net.start_bitswap(
        repo.config().bitswap.then_some(Arc::clone(&serving)),
        corrupt_served_blocks,
    );
    provide::start(
        repo.config(),
        Arc::downgrade(&drive),
        store.clone(),
        serving,
        net.clone(),
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
/// The followed peers' names, read from the peer book as `outbox/` is listed.
fn book_names(repo: &Path) -> Arc<dyn Fn() -> Vec<String> + Send + Sync> {
    let repo = repo.to_path_buf();
    Arc::new(move || {
        PeerBook::load(&repo)
            .map(|b| b.entries().iter().map(|e| e.name.clone()).collect())
            .unwrap_or_default()
    })
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

/// The gateway of config `gateway` on the network's runtime. An address it cannot
/// listen on is logged and the mount goes on without it: the drive is the main job.
fn serve_gateway(listen: &str, access: Arc<StoreAccess>, runtime: &tokio::runtime::Handle) {
    let listener = std::net::TcpListener::bind(listen).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            error!("gateway: listening on {listen} (config gateway): {e}; not serving it");
            return;
        }
    };
    info!("gateway listening on http://{listen}/ipfs/");
    runtime.spawn(async move {
        let served = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => gateway::serve(listener, access).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            error!("gateway stopped: {e}");
        }
    });
}

/// This node's X25519 key for private folders (none for a non-Ed25519 identity: it
/// reads no private folder).
fn peerfs_reader_key(key: &libp2p_identity::Keypair) -> Option<crate::seal::keys::ReaderKey> {
    crate::seal::keys::ReaderKey::from_identity(key)
        .inspect_err(|e| tracing::warn!("private folders: {e}"))
        .ok()
}

/// Test-only fault: `PEERFS_TEST_CORRUPT_SEALED` names a private folder's plaintext
/// block, whose sealed form is then served with a byte flipped.
fn corrupt_sealed_of(repo: &Repo) -> Option<cid::Cid> {
    let plain: cid::Cid = std::env::var("PEERFS_TEST_CORRUPT_SEALED")
        .ok()?
        .parse()
        .ok()?;
    let memo = repo.store().sealed_memo(&plain).ok()??;
    crate::seal::tree::Memoed::decode(&memo).map(|m| m.sealed)
}
