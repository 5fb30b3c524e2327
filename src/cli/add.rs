//! `peerfs add`: files and trees into the store (the daemon's while it runs), pinned
//! under `add PATH`; or, with `--only-hash`, CIDs computed with no repo at all.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Args;

use peerfs::add::{add_path, AddObserver, AddOptions, Added};
use peerfs::store::{write_behind, BlockSink, NullSink};
use peerfs::unixfs::{Overrides, Profile};

use super::output::{self, errln};
use super::progress;
use super::store::Store;

#[derive(Args)]
pub struct AddArgs {
    /// Add directories recursively
    #[arg(short, long)]
    recursive: bool,
    /// Print only the root CID of each PATH
    #[arg(short, long)]
    quiet: bool,
    /// Compute CIDs only; store nothing (needs no repo)
    #[arg(short = 'n', long)]
    only_hash: bool,
    /// Import profile: unixfs-v1-2025 (CIDv1, raw leaves, 1 MiB chunks, 1024 links; the
    /// default) or unixfs-v0-2015 (Kubo's classic: CIDv0, 256 KiB chunks, 174 links)
    #[arg(long, value_name = "PROFILE")]
    profile: Option<Profile>,
    /// CID version (0 or 1); 1 implies --raw-leaves unless it is given
    #[arg(long, value_name = "N")]
    cid_version: Option<u8>,
    /// Store file leaves as raw blocks (--raw-leaves), or as UnixFS file nodes
    /// (--raw-leaves=false) [default: the profile's]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    raw_leaves: Option<bool>,
    /// Chunk size in bytes, at most 1 MiB [default: the profile's]
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<u64>,
    /// Most links in one file node [default: the profile's]
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

pub fn add(args: AddArgs, repo_path: &Path) -> Result<()> {
    let store = if args.only_hash {
        None
    } else {
        Some(Store::open(repo_path)?)
    };
    let profile = args
        .profile
        .or_else(|| store.as_ref().map(Store::profile))
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
        let root = match &store {
            Some(store) => {
                let root = write_behind(store.blocks(), |sink| {
                    Ok::<_, anyhow::Error>(add_path(path, &opts, sink, &mut printer)?)
                })?;
                store.pin(&root.cid, &format!("add {}", path.display()))?;
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
