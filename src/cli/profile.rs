//! `profile`, `profile set` and `suggestions`: through the running daemon (which
//! carries the profile in a new head at once), else on the repo's files directly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::output::outln;
use super::{ask, json, unexpected};
use peerfs::daemon::control::{ProfileInfo, Request, Response};
use peerfs::daemon::format_time_ms;
use peerfs::profile::{self, AvatarChange, Change};
use peerfs::repo::Repo;

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// Change my profile: what is not given stays as it was. Followers get it with my
    /// next head (published at once while the daemon runs), and from that head while I
    /// am offline
    Set {
        /// A display name: at most 64 bytes of UTF-8, no control characters
        #[arg(long)]
        name: Option<String>,
        /// A short text about me: at most 1 KiB
        #[arg(long)]
        about: Option<String>,
        /// An image (PNG, JPEG, GIF or WebP, at most 256 KiB); "" removes it
        #[arg(long, value_name = "FILE")]
        avatar: Option<PathBuf>,
        /// Remove the avatar
        #[arg(long, conflicts_with = "avatar")]
        no_avatar: bool,
    },
}

pub fn run(repo_path: &Path, action: Option<ProfileCommand>, json: bool) -> Result<()> {
    let shown = match action {
        None => show(repo_path)?,
        Some(ProfileCommand::Set {
            name,
            about,
            avatar,
            no_avatar,
        }) => {
            let avatar = match avatar {
                _ if no_avatar => AvatarChange::Clear,
                Some(p) if p.as_os_str().is_empty() => AvatarChange::Clear,
                // The daemon reads it from its own working directory.
                Some(p) => AvatarChange::Set(
                    std::fs::canonicalize(&p)
                        .with_context(|| format!("the avatar {}", p.display()))?,
                ),
                None => AvatarChange::Keep,
            };
            set(
                repo_path,
                Change {
                    name,
                    about,
                    avatar,
                },
            )?
        }
    };
    if json {
        return json::print(&shown);
    }
    let Some(p) = shown else {
        outln!("no profile set (set one with `peerfs profile set --name NAME`)")?;
        return Ok(());
    };
    outln!("name:     {}", p.name)?;
    if !p.about.is_empty() {
        outln!("about:    {}", p.about)?;
    }
    match &p.avatar {
        Some(cid) => outln!("avatar:   {cid}")?,
        None => outln!("avatar:   none")?,
    }
    outln!("peer id:  {}", p.peer_id)?;
    outln!("version:  {} (set {})", p.seq, format_time_ms(p.time_ms))?;
    Ok(())
}

fn show(repo_path: &Path) -> Result<Option<ProfileInfo>> {
    match ask(repo_path, Request::Profile)? {
        Some(Response::Profile { profile }) => Ok(profile),
        Some(other) => Err(unexpected(other)),
        None => {
            let repo = Repo::open(repo_path).context("opening the repo")?;
            Ok(profile::load(repo.path(), &repo.peer_id()).map(|p| (p.profile()).into()))
        }
    }
}

fn set(repo_path: &Path, change: Change) -> Result<Option<ProfileInfo>> {
    if change.name.is_none()
        && change.about.is_none()
        && matches!(change.avatar, AvatarChange::Keep)
    {
        bail!("nothing to change: give --name, --about, --avatar or --no-avatar");
    }
    // Refused here already, with the same words the daemon would use.
    if let Some(n) = &change.name {
        profile::check_name(n)?;
    }
    if let Some(a) = &change.about {
        profile::check_about(a)?;
    }
    match ask(repo_path, Request::ProfileSet(change.clone()))? {
        Some(Response::Profile { profile }) => Ok(profile),
        Some(other) => Err(unexpected(other)),
        None => {
            let repo = Repo::open(repo_path).context("opening the repo")?;
            let p = peerfs::daemon::introduce::update_profile(
                repo.path(),
                repo.keypair(),
                repo.store(),
                &change,
            )?;
            Ok(Some(p.profile().into()))
        }
    }
}

pub fn suggestions(repo_path: &Path, json: bool) -> Result<()> {
    let list = match ask(repo_path, Request::Suggestions)? {
        Some(Response::Suggestions { suggestions }) => suggestions,
        Some(other) => return Err(unexpected(other)),
        None => bail!("no daemon is running: suggestions come from peers met while it runs"),
    };
    if json {
        return json::print(&list);
    }
    if list.is_empty() {
        outln!(
            "no suggestions: none of the peers I follow shares whom it follows \
             (config share_following = true on their side)"
        )?;
    }
    for s in &list {
        let name = s.profile_name.as_deref().unwrap_or("(no profile name)");
        outln!("{name}  {}", s.peer_id)?;
        outln!("  through:   {}", s.through.join(", "))?;
        let target = s.addresses.first().unwrap_or(&s.peer_id);
        outln!("  follow:    peerfs peer add {target}")?;
    }
    Ok(())
}
