//! Command-line interface: parses arguments, opens the repo, calls the library, and
//! turns errors into one plain line on stderr.

mod add;
mod addrs;
mod content;
mod find;
mod gateway;
mod json;
mod mail;
mod mirror;
mod mount;
mod mounts;
mod output;
mod peer;
mod pin;
mod private;
mod profile;
mod progress;
mod store;
mod transfers;
mod watch;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use peerfs::daemon::control::{self, ControlError, Request, Response};
use peerfs::repo::Repo;

use output::{errln, outln};

#[derive(Parser)]
#[command(
    name = "peerfs",
    version,
    about = "A peer-to-peer filesystem of IPFS UnixFS blocks",
    after_help = "REPO is the directory of a node's identity, config and blocks; MOUNTPOINT \
                  is the empty directory its daemon mounts (your drive at MOUNTPOINT/drive, \
                  followed peers at MOUNTPOINT/peers). TARGET is CID, CID/PATH, \
                  /ipfs/CID/PATH or ipfs://CID/PATH. While the daemon runs, add, cat, ls, \
                  get, export and import go through it, and cat, ls, get and export fetch \
                  from peers what is not here; gc asks it to sweep; fsck needs it stopped."
)]
struct Cli {
    /// The repo to use [default: $PEERFS_HOME, else ~/.local/share/peerfs]
    #[arg(long, global = true, value_name = "REPO")]
    repo: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repo: a new identity (ed25519), a config, an empty block store
    Init,
    /// Add files or directories to the store, pin them and print their CIDs, like `ipfs add`
    Add(add::AddArgs),
    /// Write a file's contents to stdout
    Cat {
        /// The file: CID, CID/PATH, /ipfs/CID/PATH or ipfs://CID/PATH
        #[arg(value_name = "TARGET")]
        target: String,
    },
    /// List a directory
    Ls {
        /// Long listing: mode, size, mtime, name, CID
        #[arg(short = 'l')]
        long: bool,
        /// The directory: CID, CID/PATH, /ipfs/CID/PATH or ipfs://CID/PATH
        #[arg(value_name = "TARGET")]
        target: String,
    },
    /// Recreate a file or tree on local disk, with modes, mtimes and symlinks
    Get {
        /// What to get: CID, CID/PATH, /ipfs/CID/PATH or ipfs://CID/PATH
        #[arg(value_name = "TARGET")]
        target: String,
        /// Where to write it: a new path, or an existing directory to merge the tree into
        #[arg(value_name = "OUT")]
        out: PathBuf,
    },
    /// Write a DAG as a CARv1 archive to stdout (or -o FILE)
    Export {
        /// The DAG's root: CID, CID/PATH, /ipfs/CID/PATH or ipfs://CID/PATH
        #[arg(value_name = "TARGET")]
        target: String,
        /// Write the archive to FILE instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Import the blocks of a CAR archive (v1 or v2) and pin its roots
    Import {
        /// The archive; `-` reads stdin
        #[arg(value_name = "CAR")]
        car: PathBuf,
    },
    /// Serve the store over HTTP as an IPFS gateway (trustless: ?format=raw and
    /// ?format=car; files and directory listings for browsers) until Ctrl-C
    #[command(
        after_help = "It serves what this node pinned, added or imported, and the drive only \
                      when config readers = \"*\"; blocks cached for peers' drives never. It \
                      fetches nothing: what is not here is a 404. While the drive is mounted, config \
                      gateway = \"ADDR:PORT\" has the daemon serve it instead."
    )]
    Gateway {
        /// Address and port to listen on (another machine can reach it only if this
        /// names a non-loopback address)
        #[arg(long, value_name = "ADDR:PORT", default_value = peerfs::gateway::DEFAULT_LISTEN)]
        listen: String,
    },
    /// Mount the drive at MOUNTPOINT/drive (and peers at MOUNTPOINT/peers); runs the repo's daemon
    Mount {
        /// An empty directory to mount on
        #[arg(value_name = "MOUNTPOINT")]
        dir: PathBuf,
        /// Stay in the foreground (logs on stderr) instead of returning once the mount answers
        #[arg(long)]
        foreground: bool,
        /// Log lines as text or json (RUST_LOG sets the level)
        #[arg(long, value_name = "FORMAT", default_value = "text")]
        log_format: LogFormat,
        /// Listen on this multiaddr instead of config's `listen` (repeatable)
        #[arg(long = "listen", value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Do not look for peers on the LAN with mDNS
        #[arg(long)]
        no_mdns: bool,
    },
    /// Unmount MOUNTPOINT, whichever repo's it is, then commit and flush; refused while
    /// files there are open or processes have their working directory there ("target is
    /// busy", naming them), unless --lazy
    Unmount {
        /// Where a drive is mounted [default: where this repo's daemon mounted it]
        #[arg(value_name = "MOUNTPOINT")]
        dir: Option<PathBuf>,
        /// Detach MOUNTPOINT now even while files are open; the daemon commits them as
        /// they close, then exits (like `umount -l`)
        #[arg(long)]
        lazy: bool,
    },
    /// Show the running daemon's state: root CID, commit sequence, mount point, open files,
    /// store and cache size, who may read the drive and who is connected and reading it
    /// (without a daemon: says so, and names a stale mount a killed one left)
    Status {
        #[command(flatten)]
        json: Json,
    },
    /// Check every block reachable from the drive's root (the daemon must not be running)
    Fsck,
    /// Print this node's peer ID and the addresses other nodes can dial it at
    Id {
        #[command(flatten)]
        json: Json,
    },
    /// Follow or stop following a peer
    #[command(subcommand)]
    Peer(PeerCommand),
    /// List followed peers: profile name, capabilities, connection, RTT, head, last seen,
    /// bad blocks, last dial error
    Peers {
        #[command(flatten)]
        json: Json,
    },
    /// Show my profile (name, about, avatar), which peers see; `profile set` changes it
    Profile {
        #[command(subcommand)]
        action: Option<profile::ProfileCommand>,
        #[command(flatten)]
        json: Json,
    },
    /// List peers my followed peers follow (those with share_following = true) and I do
    /// not: profile name, peer ID, through whom; `peerfs peer add` takes any of them
    Suggestions {
        #[command(flatten)]
        json: Json,
    },
    /// Print what happens as it happens: changes in followed drives (added, changed,
    /// removed), their new heads, peers connecting and leaving; until interrupted
    Watch {
        /// Only events about these followed peers
        #[arg(value_name = "NAME")]
        peers: Vec<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Search my drive and the followed drives, as `find` does: prints paths in the
    /// mount; peers' directories not here are fetched
    Find {
        /// A glob on the name, as `find -name` takes it (quote it: '*.pdf')
        pattern: Option<String>,
        /// Only this followed peer's drive (repeatable; my drive is then left out)
        #[arg(long = "peer", value_name = "NAME")]
        peers: Vec<String>,
        /// f (file), d (directory) or l (symlink)
        #[arg(long = "type", value_name = "f|d|l")]
        kind: Option<String>,
        /// +N more than, -N less than, N about (units c, k, M, G, T: powers of 1024)
        #[arg(long, value_name = "[+-]N[kMGT]", allow_hyphen_values = true)]
        size: Option<String>,
        /// Modified within this long (s, m, h, d, w): 2d is the last two days
        #[arg(long, value_name = "AGE")]
        newer: Option<String>,
        /// Ask each peer to search its own drive (no directory blocks fetched); a peer
        /// that does not answer is walked here as without it
        #[arg(long)]
        remote: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Send files or folders to a followed peer's inbox (MOUNTPOINT/inbox/ME/NAME there),
    /// showing progress until delivered
    Send(mail::SendArgs),
    /// List items I sent: recipient, name, size, time, state (queued, delivering N%,
    /// delivered TIME, read TIME, refused: REASON)
    Outbox {
        #[command(flatten)]
        json: Json,
    },
    /// List items peers sent me: sender, name, size, time, state
    Inbox {
        #[command(flatten)]
        json: Json,
    },
    /// Fetch a whole tree and keep it (without a running daemon: only a tree all here)
    Pin {
        /// A path in the mount (under MOUNTPOINT/peers/ or MOUNTPOINT/drive/), or a CID
        #[arg(value_name = "PATH|CID")]
        target: String,
        /// Which transfer gets the bandwidth first: low, normal or high
        #[arg(long, value_name = "LEVEL")]
        priority: Option<peerfs::transfers::Priority>,
        /// Print how far it is and which peers sent how much, as it runs
        #[arg(short, long)]
        verbose: bool,
    },
    /// List the pins and inbox deliveries the daemon runs (ID, state, priority, how far,
    /// from whom); with a subcommand, pause, resume, cancel or reprioritise one
    Transfers {
        #[command(subcommand)]
        action: Option<transfers::TransferCommand>,
        #[command(flatten)]
        json: Json,
    },
    /// Stop keeping a pinned tree; its blocks go at the next sweep or `gc`, unless
    /// something else still reaches them
    Unpin {
        /// The path it was pinned as, or its CID (which drops all its labels)
        #[arg(value_name = "PATH|CID")]
        target: String,
    },
    /// List pins: CID, what was pinned, and which pins are stale
    Pins {
        #[command(flatten)]
        json: Json,
    },
    /// Make a folder of my drive private to some peers (encrypted for them: any other
    /// peer that holds it cannot read it), or say who may read it
    Share {
        /// A directory of my drive (MOUNTPOINT/drive/…)
        path: String,
        /// Who may read it, by name or peer ID: the whole set (removing one starts a new
        /// key generation)
        #[arg(long, value_name = "NAME[,NAME…]", value_delimiter = ',')]
        with: Option<Vec<String>>,
        #[command(flatten)]
        json: Json,
    },
    /// Delete every block that no pin, no head of my drive or a followed peer's, and (while
    /// mounted) nothing the drive holds in memory reaches, then give the space back
    Gc,
    /// Keep a followed peer's drive in full, every new head of it, so it stays readable
    /// from here while its owner is away
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// List mirrors: name, peer ID, head held in full, bytes kept, quota, state (synced,
    /// fetching N%, over quota, behind)
    Mirrors {
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Subcommand)]
enum MirrorCommand {
    /// Mirror a peer (following it first if NAME is a peer ID or multiaddr not followed)
    Add {
        /// Its name in the peer book, its peer ID, or a multiaddr ending in /p2p/PEERID
        #[arg(value_name = "NAME")]
        name: String,
        /// Bytes one head may have at most (e.g. 10GiB); a larger head is not fetched
        /// and the one held stays
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
    },
    /// Stop mirroring a peer (it stays followed); what was kept goes at the next gc
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `--json` of the listings; the shapes are in the README and stay stable.
#[derive(Args, Clone, Copy)]
struct Json {
    /// Print one JSON document (shape documented in the README) instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Follow a peer: its drive appears at MOUNTPOINT/peers/NAME
    Add {
        /// A multiaddr ending in /p2p/PEERID (as `peerfs id` prints it), or a bare peer ID
        #[arg(value_name = "MULTIADDR|PEERID")]
        target: String,
        /// The name under MOUNTPOINT/peers/ [default: its profile name made safe and
        /// unique, if known by the time it connects; else the peer ID; or the name it has]
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop following a peer
    Rm {
        /// Its name, or its peer ID
        #[arg(value_name = "NAME|PEERID")]
        name: String,
    },
}

/// Sends `req` to the daemon; `None` when no daemon runs.
pub(crate) fn ask(repo: &Path, req: Request) -> Result<Option<Response>> {
    match control::request(repo, &req) {
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(r) => Ok(Some(r)),
        Err(ControlError::NotRunning(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn unexpected(r: Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the daemon: {r:?}")
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    keep_freed_memory(matches!(
        cli.command,
        Command::Mount { .. } | Command::Gateway { .. }
    ));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if output::closed() && is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            errln!("peerfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks are megabyte buffers allocated and freed in a loop. By default glibc hands each
/// one back to the kernel and the next one page-faults in fresh zeroed pages, which cost
/// more than hashing them. Keeping freed memory in the heap for reuse avoids that.
/// The daemon keeps less: it runs for days, and every thread's arena would hold on to
/// its share.
fn keep_freed_memory(daemon: bool) {
    let keep: libc::c_int = if daemon { 8 << 20 } else { 256 << 20 };
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, keep);
        libc::mallopt(libc::M_TRIM_THRESHOLD, keep);
        if daemon {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        // A reader's write error is wrapped transparently, so not a source of its own.
        let io = match c.downcast_ref::<peerfs::unixfs::Error>() {
            Some(peerfs::unixfs::Error::Io(io)) => Some(io),
            _ => c.downcast_ref::<io::Error>(),
        };
        io.is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<()> {
    let repo_path = cli.repo.clone().unwrap_or_else(Repo::default_path);
    let open = || Repo::open(&repo_path).context("opening the repo");
    match cli.command {
        Command::Init => {
            let repo = Repo::init(&repo_path).context("creating the repo")?;
            outln!("initialized peerfs repo at {}", repo.path().display())?;
            outln!("peer id: {}", repo.peer_id())?;
            Ok(())
        }
        Command::Add(args) => add::add(args, &repo_path),
        Command::Mount {
            dir,
            foreground,
            log_format,
            listen,
            no_mdns,
        } => mount::mount(
            &repo_path,
            &dir,
            foreground,
            log_format,
            peerfs::daemon::NetFlags { listen, no_mdns },
        ),
        Command::Id { json } => peer::id(&repo_path, json.json),
        Command::Peer(PeerCommand::Add { target, name }) => {
            peer::add(&repo_path, &target, name.as_deref())
        }
        Command::Peer(PeerCommand::Rm { name }) => peer::rm(&repo_path, &name),
        Command::Peers { json } => peer::list(&repo_path, json.json),
        Command::Profile { action, json } => profile::run(&repo_path, action, json.json),
        Command::Suggestions { json } => profile::suggestions(&repo_path, json.json),
        Command::Watch { peers, json } => watch::watch(&repo_path, peers, json.json),
        Command::Find {
            pattern,
            peers,
            kind,
            size,
            newer,
            remote,
            json,
        } => find::find(
            &repo_path,
            find::Args {
                pattern,
                peers,
                kind,
                size,
                newer,
                remote,
                json: json.json,
            },
        ),
        Command::Send(args) => mail::send(args, &repo_path),
        Command::Outbox { json } => mail::outbox(&repo_path, json.json),
        Command::Inbox { json } => mail::inbox(&repo_path, json.json),
        Command::Pin {
            target,
            priority,
            verbose,
        } => pin::pin(&repo_path, &target, priority, verbose),
        Command::Transfers { action, json } => transfers::run(&repo_path, action, json.json),
        Command::Unpin { target } => pin::unpin(&repo_path, &target),
        Command::Pins { json } => pin::list(&repo_path, json.json),
        Command::Gc => pin::gc(&repo_path),
        Command::Mirror(MirrorCommand::Add { name, quota }) => {
            mirror::add(&repo_path, &name, quota.as_deref())
        }
        Command::Mirror(MirrorCommand::Rm { name }) => mirror::rm(&repo_path, &name),
        Command::Mirrors { json } => mirror::list(&repo_path, json.json),
        Command::Share { path, with, json } => private::share(&repo_path, &path, with, json.json),
        Command::Unmount { dir, lazy } => mount::unmount(&repo_path, dir.as_deref(), lazy),
        Command::Status { json } => mount::status(&repo_path, json.json),
        Command::Fsck => mount::fsck(&open()?),
        Command::Cat { target } => content::cat(&repo_path, &target),
        Command::Ls { long, target } => content::ls(&repo_path, &target, long),
        Command::Get { target, out } => content::get(&repo_path, &target, &out),
        Command::Export { target, output } => {
            content::export(&repo_path, &target, output.as_deref())
        }
        Command::Import { car } => content::import(&repo_path, &car),
        Command::Gateway { listen } => gateway::gateway(&repo_path, &listen),
    }
}
