//! The daemon's side of the control socket: a thread per connection reads one request
//! and answers it from the running parts (status, peers, pins, gc, blocks sessions);
//! an unmount is handed to the main thread, which answers once it is done.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::Notifier;
use tracing::{info, warn};

use super::blocks;
use super::control::{self, PinInfo, Request, Response, Status};
use super::error::DaemonError;
use super::feed::Feed;
use super::find;
use super::follow::{invalidate, stored_head};
use super::stop::{Answer, Event};
use super::sweeper;
use crate::drive::Drive;
use crate::find::Query;
use crate::fuse::PinOrder;
use crate::net::peerbook::PeerBook;
use crate::net::reach::DialReport;
use crate::net::NetHandle;
use crate::peers::PeerView;
use crate::pin;
use crate::store::rocks::RocksStore;
use crate::store::Blocks;
use crate::vfs::layout::PEERS_DIR;

/// What the control socket's answers need.
pub(super) struct Context {
    pub(super) drive: Arc<Drive>,
    pub(super) repo: PathBuf,
    pub(super) peer_id: libp2p::PeerId,
    pub(super) mountpoint: PathBuf,
    pub(super) net: NetHandle,
    pub(super) book: Arc<Mutex<PeerBook>>,
    pub(super) view: Arc<PeerView>,
    pub(super) notifier: Notifier,
    pub(super) feed: Arc<Feed>,
    pub(super) store: Arc<RocksStore>,
    pub(super) blocks: blocks::serve::Server,
    pub(super) import_profile: crate::unixfs::Profile,
    pub(super) mail: Arc<super::mail::Mailroom>,
    pub(super) mirroring: Arc<super::mirror::Mirroring>,
    pub(super) transfers: Arc<crate::transfers::Transfers>,
    pub(super) intro: Arc<super::introduce::Introductions>,
}

impl Context {
    fn status(&self) -> Status {
        let d = self.drive.status();
        let cache = self.store.cache_usage().unwrap_or_default();
        // What peers and mirrors see: with private folders, a root other than mine.
        let published = stored_head(self.store.as_ref(), crate::head::OWN_HEAD);
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
            store_bytes: sweeper::dir_size(&self.repo.join("db")),
            cache_bytes: cache.0,
            cache_cap: cache.1,
            peer_inodes: self.view.inode_count() as u64,
            readers: self.net.readers().summary().to_string(),
            private_blocks_failed: self.view.unsealed_failures(),
            connected_peers: self.net.connected_peers(),
            published_root: published
                .as_ref()
                .filter(|h| Some(h.root) != d.root)
                .map(|h| h.root.to_string()),
            replicas: published
                .map(|h| self.mirroring.replicas_of(h.seq, Some(&h.root)))
                .unwrap_or_default(),
            min_replicas: self.mirroring.min_replicas,
            ipfs_dht: self.net.ipfs_dht_status(),
        }
    }

    /// The peer whose drive `path` (a path inside the mount) is in, with the path
    /// below that drive's root.
    pub(super) fn owner_of(&self, path: &Path) -> Option<(libp2p::PeerId, String)> {
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

    fn find(
        &self,
        conn: &UnixStream,
        query: (&Query, bool),
        named: &[String],
    ) -> std::io::Result<()> {
        let followed: Vec<(String, libp2p::PeerId)> = {
            let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            book.entries()
                .iter()
                .filter_map(|e| Some((e.name.clone(), e.peer_id()?)))
                .collect()
        };
        let own_root = self.drive.status().root;
        match find::trees(own_root, &followed, self.store.as_ref(), named) {
            Ok(trees) => {
                let store: Arc<dyn Blocks> = self.store.clone();
                let parts = (self.drive.blocks(), store, &self.net);
                find::serve(conn, &self.mountpoint, parts, trees, query)
            }
            Err(message) => write_line(conn, &Response::Error { message }),
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
                    // The inbox's and mirrors' own pins: `mirrors` shows the latter.
                    .filter(|(_, label)| {
                        label != crate::share::items::INBOX_PIN
                            && !label.starts_with(crate::mirror::PIN_PREFIX)
                    })
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

    /// `peer add`. A peer added without a name, new to the book, is named after its
    /// profile: known already (its stored head), or asked for once it is connected;
    /// without one it keeps its peer ID as its name.
    pub(super) fn peer_add(&self, target: &str, name: Option<&str>) -> Response {
        let new_peer = match crate::net::peerbook::parse_target(target) {
            Ok((id, _)) if name.is_none() => {
                let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
                book.by_id(&id).is_none().then_some(id)
            }
            _ => None,
        };
        let Some(peer) = new_peer else {
            return self.add_named(target, name);
        };
        if let Some(folder) = self.folder_for(&peer) {
            return self.add_named(target, Some(&folder));
        }
        let added = self.add_named(target, None);
        let Response::PeerAdded {
            dial: Some(DialReport::Connected { .. }),
            ..
        } = &added
        else {
            return added;
        };
        // A connection replaced as the two dials meet can fail the first stream.
        if self.intro.ask(peer).is_none() {
            std::thread::sleep(Duration::from_millis(300));
            self.intro.ask(peer);
        }
        match self.folder_for(&peer) {
            Some(folder) => self.add_named(&peer.to_string(), Some(&folder)),
            None => added,
        }
    }

    /// A folder name from `peer`'s profile name, unique among the book's names.
    fn folder_for(&self, peer: &libp2p::PeerId) -> Option<String> {
        let profile = self.intro.profile_of(peer)?;
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let id = peer.to_string();
        crate::profile::names::folder_name(&profile.profile().name, |n| {
            book.entries().iter().any(|e| e.name == n && e.id != id)
        })
    }

    fn add_named(&self, target: &str, name: Option<&str>) -> Response {
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

/// Binds the control socket. Bound before the mount appears, so a `peerfs status` or
/// `unmount` sent as soon as the mount is visible waits for an answer instead of finding
/// no daemon.
pub(super) fn bind_control(path: &Path) -> Result<UnixListener, DaemonError> {
    // We hold the repo lock, so a socket file left here belongs to a dead daemon.
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    })
}

/// Answers the control socket on a thread per connection.
pub(super) fn serve_control(
    listener: UnixListener,
    context: Arc<Context>,
    events: mpsc::Sender<Event>,
) {
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
            reachability: Some(context.net.reachability().to_string()),
        },
        Ok(Request::PeerAdd { target, name }) => context.peer_add(&target, name.as_deref()),
        Ok(Request::PeerRm { name }) => context.peer_rm(&name),
        Ok(Request::Peers) => {
            let mut peers = context.net.peers();
            context.mirroring.name_mirrors(&mut peers);
            context.intro.describe(&mut peers);
            Response::Peers { peers }
        }
        Ok(Request::Profile) => Response::Profile {
            profile: context
                .intro
                .mine()
                .map(|p| control::ProfileInfo::from(p.profile())),
        },
        Ok(Request::ProfileSet(change)) => match context.intro.set(&change) {
            Ok(p) => Response::Profile {
                profile: Some(control::ProfileInfo::from(p.profile())),
            },
            Err(e) => error_response(e),
        },
        Ok(Request::Suggestions) => Response::Suggestions {
            suggestions: context.intro.suggestions(),
        },
        Ok(Request::Pin {
            cid,
            path,
            priority,
            verbose,
        }) => context.pin(
            &cid,
            path.as_deref(),
            priority.unwrap_or_default(),
            &mut |p, t| {
                // A client that went away is noticed when the answer is written.
                let _ = write_line(&conn, &Response::Progress(p));
                if let Some(t) = t.filter(|_| verbose) {
                    let _ = write_line(&conn, &Response::Transfer(t));
                }
            },
        ),
        Ok(Request::Transfers) => Response::Transfers {
            transfers: context.transfers.list(),
        },
        Ok(Request::Transfer { id, change }) => context.change_transfer(id, change),
        Ok(Request::Unpin { target, cid }) => context.unpin(&target, cid.as_deref()),
        Ok(Request::Pins) => context.pins(),
        Ok(Request::Gc) => context.gc(),
        Ok(Request::MirrorAdd { name, quota }) => context.mirror_add(&name, quota),
        Ok(Request::MirrorRm { name }) => context.mirroring.remove(&name),
        Ok(Request::Mirrors) => Response::Mirrors {
            mirrors: context.mirroring.list(),
        },
        Ok(Request::Send {
            to,
            name,
            root,
            size,
            note,
        }) => match context.mail.send(&to, &name, &root, size, &note) {
            Ok(item) => Response::Sent(item),
            Err(e) => error_response(e),
        },
        Ok(Request::Outbox) => Response::Outbox {
            items: context.mail.outgoing(),
        },
        Ok(Request::Inbox) => Response::Inbox {
            items: context.mail.incoming(),
        },
        Ok(Request::Share { path, readers }) => {
            let sharing = super::private::Sharing {
                drive: Arc::clone(&context.drive),
                book: Arc::clone(&context.book),
                mountpoint: context.mountpoint.clone(),
            };
            let done = match readers {
                Some(r) => sharing.set(&path, &r),
                None => sharing.show(&path),
            };
            done.map_or_else(error_response, Response::Shared)
        }
        Ok(Request::Watch { peers }) => return super::watch::serve(&conn, &context.feed, &peers),
        Ok(Request::Find {
            query,
            peers,
            remote,
        }) => return context.find(&conn, (&query, remote), &peers),
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

pub(super) fn write_line(conn: &UnixStream, response: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_string(response).expect("responses always encode");
    out.push('\n');
    (&*conn).write_all(out.as_bytes())
}

/// Carries out the pins and unpins asked for through `user.peerfs.pin`, one at a time,
/// on a thread of its own: a pin fetches a whole tree, and the FUSE call that asked
/// has long returned.
pub(super) fn carry_out_pins(orders: mpsc::Receiver<PinOrder>, context: Arc<Context>) {
    std::thread::spawn(move || {
        for order in orders {
            let path = context.mountpoint.join(&order.path);
            let cid = order.cid.to_string();
            let done = if order.pin {
                context.pin(&cid, Some(&path), Default::default(), &mut |_, _| {})
            } else {
                context.unpin(&path.display().to_string(), Some(&cid))
            };
            match done {
                Response::Error { message } => {
                    warn!("user.peerfs.pin on {}: {message}", path.display())
                }
                _ => info!(
                    "user.peerfs.pin on {}: {}",
                    path.display(),
                    if order.pin { "pinned" } else { "unpinned" }
                ),
            }
        }
    });
}
