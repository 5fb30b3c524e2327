//! `peerfs find`: a control connection that searches my drive and the followed drives
//! and streams what it finds as `Found` lines, with `Searching` progress lines between,
//! then a `Searched` summary. Peers' blocks that are not here are fetched (the walk asks
//! for a directory's entries all at once); what cannot be fetched is counted, and the
//! search goes on. With `--remote`, each owner is asked to search its own drive first
//! (`remote`), and its drive is walked here only when it does not answer; this node
//! answers such searches too (`answer`).

mod answer;
mod remote;

pub(super) use answer::{start as answer_searches, Answering};

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::control::Response;
use super::follow::stored_head;
use super::handlers::write_line as send;
use crate::find::wire::MAX_MATCHES;
use crate::find::{self, Found, Hooks, Next, Query, Walked};
use crate::net::{NetHandle, RemoteBlocks};
use crate::store::Blocks;
use crate::vfs::layout::{DRIVE_DIR, PEERS_DIR};

/// How long a result may wait for a client that does not read.
const STALLED: Duration = Duration::from_secs(30);

/// A match, where it is in the mount.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoundAt {
    /// The path in the mount.
    pub path: String,
    /// The followed peer's name; `None` for my drive.
    pub peer: Option<String>,
    pub entry: Found,
}

/// One tree to search: whose it is, its root, and where it is in the mount.
pub(super) struct Tree {
    pub(super) peer: Option<(String, libp2p::PeerId)>,
    pub(super) root: Cid,
}

/// The trees a search covers: my drive (unless peers are named) and each followed
/// peer's drive whose head is here, or only the peers named.
pub(super) fn trees(
    own_root: Option<Cid>,
    followed: &[(String, libp2p::PeerId)],
    store: &dyn crate::store::HeadStore,
    named: &[String],
) -> Result<Vec<Tree>, String> {
    if let Some(unknown) = named
        .iter()
        .find(|n| !followed.iter().any(|(f, _)| f == *n))
    {
        return Err(format!(
            "{unknown}: not a followed peer (see `peerfs peers`)"
        ));
    }
    let mut out: Vec<Tree> = match own_root {
        Some(root) if named.is_empty() => vec![Tree { peer: None, root }],
        _ => Vec::new(),
    };
    for (name, id) in followed {
        if !named.is_empty() && !named.contains(name) {
            continue;
        }
        if let Some(head) = stored_head(store, &id.to_string()) {
            out.push(Tree {
                peer: Some((name.clone(), *id)),
                root: head.root,
            });
        }
    }
    Ok(out)
}

/// Searches `trees` for `query` and streams the answer to `conn`.
pub(super) fn serve(
    conn: &UnixStream,
    mountpoint: &Path,
    (own, store, net): (&dyn Blocks, std::sync::Arc<dyn Blocks>, &NetHandle),
    trees: Vec<Tree>,
    (query, ask_owners): (&Query, bool),
) -> std::io::Result<()> {
    let matcher = match query.compile() {
        Ok(m) => m,
        Err(e) => {
            return send(
                conn,
                &Response::Error {
                    message: e.to_string(),
                },
            )
        }
    };
    conn.set_write_timeout(Some(STALLED))?;
    let mut total = Walked::default();
    for tree in trees {
        let (base, owner) = match &tree.peer {
            Some((name, id)) => (mountpoint.join(PEERS_DIR).join(name), Some(*id)),
            None => (mountpoint.join(DRIVE_DIR), None),
        };
        let remote = RemoteBlocks {
            local: store.clone(),
            net: net.clone(),
            owner,
            fetch: true,
        };
        let blocks: &dyn Blocks = if owner.is_some() { &remote } else { own };
        let peer = tree.peer.as_ref().map(|(n, _)| n.clone());
        let failed = std::cell::Cell::new(None);
        let before = total;
        let mut found = |entry: Found| {
            let hit = FoundAt {
                path: base.join(&entry.path).display().to_string(),
                peer: peer.clone(),
                entry,
            };
            go(&failed, send(conn, &Response::Found(hit)))
        };
        let mut progress = |w: &Walked| {
            let so_far = add(before, *w);
            go(&failed, send(conn, &Response::Searching(so_far)))
        };
        if let (true, Some((name, id))) = (ask_owners, &tree.peer) {
            let note = |note: String| {
                let peer = name.clone();
                send(conn, &Response::SearchNote { peer, note })
            };
            match remote::ask(net, *id, query, &mut found, &mut progress) {
                remote::Asked::Answered { walked, truncated } => {
                    total = add(total, walked);
                    if truncated {
                        note(format!(
                            "the owner's search stopped at its cap ({MAX_MATCHES} matches \
                             or a minute of walking); plain `find` walks all of it"
                        ))?;
                    }
                    continue;
                }
                remote::Asked::Stopped => return Err(stopped(&failed)),
                remote::Asked::Cut(reason) => {
                    note(format!("the owner's search broke off ({reason})"))?;
                    total.unreadable += 1;
                    continue;
                }
                remote::Asked::Unanswered(reason) => {
                    note(format!(
                        "not searched by its owner ({reason}): walking it here"
                    ))?;
                }
            }
        }
        let hooks = Hooks {
            found,
            progress,
            ahead: |cids: &[Cid]| {
                if owner.is_some() {
                    for c in cids {
                        if !store.has(c).unwrap_or(true) {
                            net.prefetch(c, owner);
                        }
                    }
                }
            },
        };
        let walked = find::search(blocks, &tree.root, &matcher, hooks);
        if let Some(e) = failed.take() {
            // The client went away: nothing more to tell it.
            return Err(e);
        }
        total = add(total, walked);
    }
    send(conn, &Response::Searched(total))
}

/// Why the client stopped reading.
fn stopped(failed: &std::cell::Cell<Option<std::io::Error>>) -> std::io::Error {
    failed
        .take()
        .unwrap_or_else(|| std::io::Error::other("the search was stopped"))
}

fn add(a: Walked, b: Walked) -> Walked {
    Walked {
        entries: a.entries + b.entries,
        matches: a.matches + b.matches,
        unreadable: a.unreadable + b.unreadable,
    }
}

/// Keeps going while the client reads; remembers why it stopped.
fn go(failed: &std::cell::Cell<Option<std::io::Error>>, sent: std::io::Result<()>) -> Next {
    match sent {
        Ok(()) => Next::Go,
        Err(e) => {
            failed.set(Some(e));
            Next::Stop
        }
    }
}
