//! `id`, `peer add`, `peer rm` and `peers`: through the running daemon when there is
//! one (so it dials and shows the peer at once), else on the repo's files directly.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use libp2p::Multiaddr;

use super::output::{errln, outln};
use super::{addrs, ask, json, unexpected};
use peerfs::daemon::control::{Request, Response};
use peerfs::daemon::format_time_ms;
use peerfs::net::peerbook::{self, PeerBook, PeerEntry};
use peerfs::net::reach::{DialFailure, DialReport};
use peerfs::net::PeerInfo;
use peerfs::repo::Repo;

pub fn id(repo_path: &Path, json: bool) -> Result<()> {
    let (me, listening, pid, reachability) = match ask(repo_path, Request::Id)? {
        Some(Response::Id {
            peer_id,
            addrs,
            reachability,
        }) => {
            let pid = match ask(repo_path, Request::Status)? {
                Some(Response::Status(s)) => Some(s.pid),
                _ => None,
            };
            (peer_id, addrs, pid, reachability)
        }
        Some(other) => return Err(unexpected(other)),
        None => {
            let repo = Repo::open(repo_path).context("opening the repo")?;
            let me = repo.peer_id().to_string();
            // Not running: what it will listen on, with each wildcard made concrete.
            let listen = repo.config().listen.iter();
            let addrs = listen.map(|a| format!("{a}/p2p/{me}")).collect();
            (me, addrs, None, None)
        }
    };
    let parsed: Vec<Multiaddr> = listening.iter().filter_map(|a| a.parse().ok()).collect();
    let addrs = addrs::dialable(&parsed);
    if json {
        return json::print(&json::Id {
            peer_id: me,
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            reachability,
            daemon_running: pid.is_some(),
            daemon_pid: pid,
        });
    }
    if !std::io::stdout().is_terminal() {
        // For scripts: the peer ID, then one address per line.
        outln!("{me}")?;
        for a in &addrs {
            outln!("{a}")?;
        }
        if pid.is_none() {
            errln!("peerfs: no daemon is running; these are the addresses of config `listen`");
        }
        return Ok(());
    }
    outln!("peer id:    {me}")?;
    match pid {
        Some(pid) => outln!("daemon:     running (pid {pid})")?,
        None => outln!("daemon:     not running; it will listen on these (config `listen`)")?,
    }
    if let Some(r) = &reachability {
        let what = match r.as_str() {
            "public" => "public (peers dialled this node back)",
            "private" => "private (behind NAT: reached through relays)",
            _ => "unknown (not checked yet)",
        };
        outln!("reachable:  {what}")?;
    }
    outln!("addresses (give one to `peerfs peer add` on the other node):")?;
    let width = addrs.iter().map(|a| a.to_string().len()).max().unwrap_or(0);
    for a in &addrs {
        let port = if addrs::port_unknown(a) {
            ", port chosen when the daemon starts"
        } else {
            ""
        };
        let label = if peerfs::net::nat::is_relayed(a) {
            "through a relay"
        } else {
            addrs::Scope::of(a).label()
        };
        outln!("  {:width$}  ({label}{port})", a.to_string())?;
    }
    if addrs.is_empty() {
        outln!("  none")?;
    }
    Ok(())
}

pub fn add(repo_path: &Path, target: &str, name: Option<&str>) -> Result<()> {
    // The name it had, to say when it changes.
    let (id, addr) = peerbook::parse_target(target)?;
    let before = PeerBook::load(repo_path)
        .ok()
        .and_then(|b| b.by_id(&id).cloned());
    let request = Request::PeerAdd {
        target: target.to_string(),
        name: name.map(str::to_string),
    };
    let (entry, dial) = match ask(repo_path, request)? {
        Some(Response::PeerAdded { entry, dial }) => (entry, dial),
        Some(other) => return Err(unexpected(other)),
        None => {
            let repo = Repo::open(repo_path).context("opening the repo")?;
            let entry = PeerBook::load(repo.path())?.add(target, name, &repo.peer_id())?;
            (entry, None)
        }
    };
    match before {
        None => outln!("following {} ({})", entry.name, entry.id)?,
        Some(old) if old.name != entry.name => outln!(
            "renamed {} to {} ({}): its drive is now under peers/{}",
            old.name,
            entry.name,
            entry.id,
            entry.name
        )?,
        Some(_) => outln!("already following {} ({})", entry.name, entry.id)?,
    }
    if addr.is_some() {
        outln!(
            "addresses, newest first (at most {}): {}",
            peerbook::MAX_ADDRS,
            entry.addrs.join(" ")
        )?;
    }
    match dial {
        None => outln!("no daemon is running: it is dialled when the daemon starts")?,
        Some(DialReport::Connected { addr, rtt_ms }) => outln!(
            "connected{}{}",
            addr.map_or_else(String::new, |a| format!(" at {a}")),
            rtt_ms.map_or_else(String::new, |r| format!(", rtt {r:.1} ms"))
        )?,
        Some(DialReport::Failed(failure)) => {
            let hint = match failure {
                DialFailure::WrongPeer { .. } => "check the peer ID; ",
                DialFailure::Refused { .. } | DialFailure::TimedOut { .. } => {
                    "check the address and that its daemon runs; "
                }
                _ => "",
            };
            outln!("not reachable now: {failure}")?;
            outln!(
                "it stays followed and is dialled again with backoff ({hint}`peerfs peer rm {}` \
                 undoes the add)",
                entry.name
            )?;
        }
    }
    Ok(())
}

pub fn rm(repo_path: &Path, name: &str) -> Result<()> {
    let request = Request::PeerRm {
        name: name.to_string(),
    };
    let entry = match ask(repo_path, request)? {
        Some(Response::PeerRemoved(e)) => e,
        Some(other) => return Err(unexpected(other)),
        None => {
            let repo = Repo::open(repo_path).context("opening the repo")?;
            PeerBook::load(repo.path())?.remove(name)?
        }
    };
    outln!("no longer following {} ({})", entry.name, entry.id)?;
    Ok(())
}

pub fn list(repo_path: &Path, json: bool) -> Result<()> {
    let peers = match ask(repo_path, Request::Peers)? {
        Some(Response::Peers { peers }) => peers,
        Some(other) => return Err(unexpected(other)),
        None => {
            let repo = Repo::open(repo_path).context("opening the repo")?;
            if !json {
                outln!("(no daemon is running: showing the peer book only)")?;
            }
            PeerBook::load(repo.path())?
                .entries()
                .iter()
                .map(offline_info)
                .collect()
        }
    };
    if json {
        return json::print(&peers.iter().map(json::Peer::from).collect::<Vec<_>>());
    }
    if peers.is_empty() {
        outln!("following no one (add a peer with `peerfs peer add MULTIADDR --name NAME`)")?;
    }
    for p in peers {
        print_peer(&p)?;
    }
    Ok(())
}

fn offline_info(e: &PeerEntry) -> PeerInfo {
    PeerInfo {
        name: e.name.clone(),
        id: e.id.clone(),
        connected: false,
        addrs: e.addrs.clone(),
        rtt_ms: None,
        head_seq: None,
        head_root: None,
        last_seen_ms: None,
        bad_blocks: 0,
        blocks_fetched: 0,
        last_dial_error: None,
        last_dial_error_ms: None,
        connection: None,
        transport: None,
        mirrors: Vec::new(),
        ..PeerInfo::default()
    }
}

fn print_peer(p: &PeerInfo) -> Result<()> {
    match &p.profile_name {
        Some(n) if *n != p.name => outln!("{} (calls itself {n})", p.name)?,
        _ => outln!("{}", p.name)?,
    }
    outln!("  peer id:     {}", p.id)?;
    if let Some(about) = &p.about {
        outln!("  about:       {}", about.replace('\n', " "))?;
    }
    if !p.capabilities.is_empty() {
        outln!("  offers:      {}", p.capabilities.join(", "))?;
    }
    if !p.mirrors.is_empty() {
        outln!("  mirrors:     {}", p.mirrors.join(", "))?;
    }
    let how = match (&p.connection, &p.transport) {
        (Some(c), Some(t)) => format!(", {c} over {t}"),
        (Some(c), None) => format!(", {c}"),
        _ => String::new(),
    };
    outln!(
        "  connected:   {}{how}{}",
        if p.connected { "yes" } else { "no" },
        p.rtt_ms
            .map_or_else(String::new, |r| format!(" (rtt {r:.1} ms)"))
    )?;
    if let (Some(error), false) = (&p.last_dial_error, p.connected) {
        let when = p
            .last_dial_error_ms
            .map_or_else(String::new, |ms| format!(" at {}", format_time_ms(ms)));
        outln!("  last dial:   failed{when}: {error}")?;
    }
    outln!("  addresses:   {}", p.addrs.join(" "))?;
    match (&p.head_seq, &p.head_root) {
        (Some(seq), Some(root)) => outln!("  head:        seq {seq}, root {root}")?,
        _ => outln!("  head:        none seen yet")?,
    }
    outln!(
        "  last seen:   {}",
        p.last_seen_ms
            .map_or_else(|| "never".into(), format_time_ms)
    )?;
    outln!("  fetched:     {} blocks", p.blocks_fetched)?;
    outln!("  bad blocks:  {}", p.bad_blocks)?;
    Ok(())
}
