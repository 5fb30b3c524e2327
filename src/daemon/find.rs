//! `peerfs find`: a control connection that searches my drive and the followed drives
//! and streams what it finds as `Found` lines, with `Searching` progress lines between,
//! then a `Searched` summary. Peers' blocks that are not here are fetched (the walk asks
//! for a directory's entries all at once); what cannot be fetched is counted, and the
//! search goes on.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::control::Response;
use super::follow::stored_head;
use super::handlers::write_line as send;
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
    query: &Query,
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
        let hooks = Hooks {
            found: |entry: Found| {
                let hit = FoundAt {
                    path: base.join(&entry.path).display().to_string(),
                    peer: peer.clone(),
                    entry,
                };
                go(&failed, send(conn, &Response::Found(hit)))
            },
            progress: |w: &Walked| {
                let so_far = add(before, *w);
                go(&failed, send(conn, &Response::Searching(so_far)))
            },
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
