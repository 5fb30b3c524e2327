//! Command-line interface: parses arguments, opens the repo, calls the library, and
//! turns errors into one plain line on stderr.

mod addrs;
mod json;
mod mount;
mod mounts;
mod output;
mod peer;
mod pin;
mod progress;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use cid::Cid;
use clap::{Args, Parser, Subcommand};

use peerfs::add::{add_path, AddObserver, AddOptions, Added};
use peerfs::daemon::control::{self, ControlError, Request, Response};
use peerfs::repo::Repo;
use peerfs::store::{write_behind, BlockSink, Blocks, NullSink};
use peerfs::unixfs::{list, load_node, resolve, FileReader, Node, Overrides, Profile};
use peerfs::{car, get};

use output::{errln, outln};

#[derive(Parser)]
#[command(
    name = "peerfs",
    version,
    about = "A peer-to-peer filesystem of IPFS UnixFS blocks",
    after_help = "REPO is the directory of a node's identity, config and blocks; MOUNTPOINT \
                  is the empty directory its daemon mounts (your drive at MOUNTPOINT/drive, \
                  followed peers at MOUNTPOINT/peers). TARGET is CID, CID/PATH, \
                  /ipfs/CID/PATH or ipfs://CID/PATH."
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
    /// Add files or directories to the store and print their CIDs, like `ipfs add`
    Add(AddArgs),
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
        /// Where to write it (a path that does not exist yet)
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
    /// Mount the drive at MOUNTPOINT/drive (and peers at MOUNTPOINT/peers); runs the repo's daemon
    Mount {
        /// An empty directory to mount on
        #[arg(value_name = "MOUNTPOINT")]
        dir: PathBuf,
        /// Stay in the foreground instead of returning once the mount answers
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
    /// files there are open ("target is busy", naming what holds them), unless --lazy
    Unmount {
        /// Where a drive is mounted [default: where this repo's daemon mounted it]
        #[arg(value_name = "MOUNTPOINT")]
        dir: Option<PathBuf>,
        /// Detach MOUNTPOINT now even while files are open; the daemon commits them as
        /// they close, then exits (like `umount -l`)
        #[arg(long)]
        lazy: bool,
    },
    /// Show the running daemon's state: root CID, commit sequence, mount point, store size
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
    /// List followed peers: connection, RTT, head, last seen, bad blocks
    Peers {
        #[command(flatten)]
        json: Json,
    },
    /// Fetch a whole tree and keep it
    Pin {
        /// A path in the mount (under MOUNTPOINT/peers/ or MOUNTPOINT/drive/), or a CID
        #[arg(value_name = "PATH|CID")]
        target: String,
    },
    /// Stop keeping a pinned tree; `gc` frees its blocks
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
    /// Delete every block that no pin and no drive head reaches (the daemon must not be running)
    Gc,
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
        /// The name under MOUNTPOINT/peers/ [default: the peer ID, or the name it has]
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

#[derive(Args)]
struct AddArgs {
    /// Add directories recursively
    #[arg(short, long)]
    recursive: bool,
    /// Print only the root CID of each PATH
    #[arg(short, long)]
    quiet: bool,
    /// Compute CIDs only; store nothing (needs no repo)
    #[arg(short = 'n', long)]
    only_hash: bool,
    /// Import profile: unixfs-v1-2025 (default) or unixfs-v0-2015
    #[arg(long, value_name = "PROFILE")]
    profile: Option<Profile>,
    /// CID version (0 or 1); 1 implies --raw-leaves unless it is given
    #[arg(long, value_name = "N")]
    cid_version: Option<u8>,
    /// Raw leaves (--raw-leaves or --raw-leaves=false)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    raw_leaves: Option<bool>,
    /// Chunk size in bytes
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<u64>,
    /// Most links in one file node
    #[arg(long, value_name = "N")]
    max_links: Option<usize>,
    /// Record each entry's permission bits
    #[arg(long)]
    preserve_mode: bool,
    /// Record each entry's modification time (with nanoseconds)
    #[arg(long)]
    preserve_mtime: bool,
    /// Files or directories to add (directories need -r)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    keep_freed_memory(matches!(cli.command, Command::Mount { .. }));
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
        Command::Add(args) => add(args, &repo_path),
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
        Command::Pin { target } => pin::pin(&repo_path, &target),
        Command::Unpin { target } => pin::unpin(&repo_path, &target),
        Command::Pins { json } => pin::list(&repo_path, json.json),
        Command::Gc => pin::gc(&repo_path),
        Command::Unmount { dir, lazy } => mount::unmount(&repo_path, dir.as_deref(), lazy),
        Command::Status { json } => mount::status(&repo_path, json.json),
        Command::Fsck => mount::fsck(&open()?),
        Command::Cat { target } => {
            let repo = open()?;
            let (cid, node) = resolve_target(repo.store(), &target)?;
            let Node::File(f) = node else {
                bail!("{target}: not a file")
            };
            let mut out = BufWriter::with_capacity(1 << 20, output::stdout());
            FileReader::from_node(repo.store(), cid, f).copy_to(&mut out, &mut |_| {})?;
            out.flush()?;
            Ok(())
        }
        Command::Ls { long, target } => ls(&open()?, &target, long),
        Command::Get { target, out } => {
            let repo = open()?;
            let (cid, node) = resolve_target(repo.store(), &target)?;
            let total = match &node {
                Node::File(f) => Some(f.filesize),
                _ => None,
            };
            let bar = progress::bytes(total, "get");
            get::get(repo.store(), &cid, &out, &mut |n| bar.inc(n))
                .with_context(|| format!("writing {}", out.display()))?;
            bar.finish_and_clear();
            Ok(())
        }
        Command::Export { target, output } => {
            let repo = open()?;
            let (cid, _) = resolve_target(repo.store(), &target)?;
            let sink: Box<dyn Write> = match &output {
                Some(p) => {
                    Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?)
                }
                None if io::stdout().is_terminal() => {
                    bail!("refusing to write a CAR to a terminal: redirect stdout or use -o FILE")
                }
                None => Box::new(output::stdout()),
            };
            let mut out = BufWriter::with_capacity(1 << 20, sink);
            let bar = progress::bytes(None, "export");
            car::export(repo.store(), &cid, &mut out, &mut |n| bar.inc(n))?;
            out.flush()?;
            bar.finish_and_clear();
            Ok(())
        }
        Command::Import { car: path } => {
            let repo = open()?;
            let input: Box<dyn io::Read> = if path.as_os_str() == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(File::open(&path).with_context(|| format!("opening {}", path.display()))?)
            };
            let size = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            let bar = progress::bytes(size, "import");
            let imported = car::import(
                repo.store(),
                BufReader::with_capacity(1 << 20, input),
                &mut |n| bar.inc(n),
            )
            .with_context(|| format!("importing {}", path.display()))?;
            bar.finish_and_clear();
            for root in &imported.roots {
                if repo.store().has(root)? {
                    repo.store()
                        .pin(root, &format!("import {}", path.display()))?;
                }
                outln!("imported {root} ({} blocks)", imported.blocks)?;
            }
            Ok(())
        }
    }
}

/// Accepts `CID`, `CID/path`, `/ipfs/CID/path` and `ipfs://CID/path`.
fn parse_target(target: &str) -> Result<(Cid, &str)> {
    let t = target
        .strip_prefix("ipfs://")
        .or_else(|| target.strip_prefix("/ipfs/"))
        .unwrap_or(target);
    let (cid_str, path) = t.split_once('/').unwrap_or((t, ""));
    let cid = Cid::try_from(cid_str).map_err(|e| {
        let plain = t.len() == target.len();
        match local_path(target).filter(|_| plain) {
            Some(hint) => anyhow!(
                "{target} is a path, but a CID is expected here (CID, CID/PATH or /ipfs/CID/PATH){hint}"
            ),
            None => anyhow!("{cid_str:?} is not a CID ({e})"),
        }
    })?;
    Ok((cid, path))
}

/// When `target` is a path on this machine, what to do instead: `Some("")` for a
/// plain path, or the CID to use when it is in a peerfs mount.
fn local_path(target: &str) -> Option<String> {
    let is_path = std::fs::symlink_metadata(target).is_ok()
        || ["/", "./", "../", "~"]
            .iter()
            .any(|p| target.starts_with(p));
    if !is_path {
        return None;
    }
    Some(match pin::cid_of_path(Path::new(target)) {
        Ok(cid) => format!(": it is {cid} in the mount"),
        Err(_) => String::new(),
    })
}

fn resolve_target(blocks: &dyn Blocks, target: &str) -> Result<(Cid, Node)> {
    let (cid, path) = parse_target(target)?;
    Ok(resolve(blocks, &cid, path)?)
}

struct AddPrinter {
    quiet: bool,
    bar: indicatif::ProgressBar,
    /// The first failure to print: reported once the work is done, never stopping it.
    failed: Option<io::Error>,
}

impl AddPrinter {
    fn print(&mut self, args: std::fmt::Arguments<'_>) {
        let printed = self.bar.suspend(|| output::line(args));
        if let Err(e) = printed {
            self.failed.get_or_insert(e);
        }
    }
}

impl AddObserver for AddPrinter {
    fn added(&mut self, e: &Added<'_>) {
        if !self.quiet {
            self.print(format_args!("added {} {}", e.cid, e.display));
        }
    }

    fn bytes(&mut self, n: u64) {
        self.bar.inc(n);
    }

    fn skipped(&mut self, path: &Path, why: &str) {
        self.bar
            .suspend(|| errln!("peerfs: {}: {why}", path.display()));
    }
}

fn add(args: AddArgs, repo_path: &Path) -> Result<()> {
    let repo = if args.only_hash {
        None
    } else {
        Some(Repo::open(repo_path).context("opening the repo")?)
    };
    let profile = args
        .profile
        .or_else(|| repo.as_ref().map(|r| r.config().import.profile))
        .unwrap_or_default();
    let overrides = Overrides {
        cid_version: args.cid_version,
        raw_leaves: args.raw_leaves,
        chunk_size: args.chunk_size,
        max_links: args.max_links,
    };
    let import = profile.options().with(&overrides).map_err(|e| anyhow!(e))?;
    let opts = AddOptions {
        import,
        recursive: args.recursive,
        preserve_mode: args.preserve_mode,
        preserve_mtime: args.preserve_mtime,
    };
    let total = args
        .paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum::<u64>();
    let bar = progress::bytes((total > 0).then_some(total), "add");
    let mut printer = AddPrinter {
        quiet: args.quiet,
        bar: bar.clone(),
        failed: None,
    };
    for path in &args.paths {
        let root = match &repo {
            Some(repo) => {
                let root = write_behind(repo.store(), |sink| {
                    Ok::<_, anyhow::Error>(add_path(path, &opts, sink, &mut printer)?)
                })?;
                repo.store()
                    .pin(&root.cid, &format!("add {}", path.display()))?;
                root
            }
            None => add_path(
                path,
                &opts,
                &mut NullSink as &mut dyn BlockSink,
                &mut printer,
            )?,
        };
        if args.quiet {
            printer.print(format_args!("{}", root.cid));
        }
    }
    bar.finish_and_clear();
    match printer.failed {
        Some(e) => Err(anyhow::Error::new(e).context("printing to stdout")),
        None => Ok(()),
    }
}

fn ls(repo: &Repo, target: &str, long: bool) -> Result<()> {
    let blocks = repo.store();
    let (cid, node) = resolve_target(blocks, target)?;
    if !node.is_dir() {
        print_entry(&mut output::stdout(), target.as_bytes(), &cid, &node, long)?;
        return Ok(());
    }
    let mut out = BufWriter::new(output::stdout());
    for entry in list(blocks, &cid, &node)? {
        let child = load_node(blocks, &entry.cid)?;
        print_entry(&mut out, &entry.name, &entry.cid, &child, long)?;
    }
    out.flush()?;
    Ok(())
}

fn print_entry(out: &mut dyn Write, name: &[u8], cid: &Cid, node: &Node, long: bool) -> Result<()> {
    let name = String::from_utf8_lossy(name);
    let (size, suffix) = match node {
        Node::File(f) => (f.filesize.to_string(), ""),
        Node::Symlink { .. } => ("-".to_string(), "@"),
        _ => ("-".to_string(), "/"),
    };
    if !long {
        writeln!(out, "{cid} {size:>12} {name}{suffix}")?;
        return Ok(());
    }
    let meta = node.meta();
    let mtime = meta
        .mtime
        .map_or_else(|| "-".to_string(), |t| format_time(t.secs));
    let link = match node {
        Node::Symlink { target, .. } => format!(" -> {}", String::from_utf8_lossy(target)),
        _ => String::new(),
    };
    writeln!(
        out,
        "{} {size:>12} {mtime:>20} {name}{link}  {cid}",
        mode_string(node)
    )?;
    Ok(())
}

fn mode_string(node: &Node) -> String {
    let (kind, default) = match node {
        Node::File(_) => ('-', 0o644),
        Node::Symlink { .. } => ('l', 0o777),
        _ => ('d', 0o755),
    };
    let mode = if kind == 'l' {
        0o777
    } else {
        node.meta().mode.unwrap_or(default)
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// RFC 3339 in UTC, to the second.
fn format_time(secs: i64) -> String {
    let t = if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t).to_string()
}
