//! The items sent and received, kept in `mail.json` in the repo so that a restart of
//! either side loses nothing: what is still to be offered, fetched or acknowledged is
//! picked up where it stood. The file is small (one line per item) and replaced
//! whole, by a rename, on every change.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name inside the repo.
pub const MAIL_FILE: &str = "mail.json";
/// The pin label that keeps the inbox's own directory nodes: the daemon's business,
/// left out of `peerfs pins`.
pub const INBOX_PIN: &str = "peerfs inbox directory";

#[derive(Debug, thiserror::Error)]
pub enum ItemsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: unreadable ({message}); move it away to start with an empty inbox and outbox"
    )]
    Unreadable { path: PathBuf, message: String },
}

/// Where a sent item stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutState {
    /// Not yet taken by the recipient (it may be offline).
    Queued,
    /// Taken; the recipient fetches it and has `percent` of it.
    Delivering {
        percent: u8,
    },
    Delivered {
        at_ms: u64,
    },
    Read {
        delivered_ms: u64,
        at_ms: u64,
    },
    Refused {
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outgoing {
    pub id: String,
    pub to: String,
    pub to_name: String,
    pub name: String,
    pub root: String,
    pub size: u64,
    #[serde(default)]
    pub note: String,
    pub created_ms: u64,
    #[serde(flatten)]
    pub state: OutState,
    /// Why the last offer did not reach the recipient.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Where a received item stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InState {
    /// Its blocks are being fetched; it does not show in the inbox yet.
    Fetching {
        percent: u8,
    },
    /// All here, shown in the inbox as `shown_name`.
    Complete {
        at_ms: u64,
    },
    Read {
        complete_ms: u64,
        at_ms: u64,
    },
    /// Given up: its blocks did not verify. It never shows in the inbox.
    Failed {
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Incoming {
    pub id: String,
    pub from: String,
    pub from_name: String,
    /// The name the sender gave.
    pub name: String,
    /// The name it shows under in `inbox/<from_name>/`, once complete (the sender's,
    /// with a suffix when that was taken).
    #[serde(default)]
    pub shown_name: Option<String>,
    pub root: String,
    /// The tree shown, when the user deleted entries inside the item (its root then
    /// differs from the one offered).
    #[serde(default)]
    pub shown_root: Option<String>,
    pub size: u64,
    #[serde(default)]
    pub note: String,
    pub offered_ms: u64,
    #[serde(flatten)]
    pub state: InState,
    /// Receipts the sender has not acknowledged yet ("delivered", "read").
    #[serde(default)]
    pub receipts_due: Vec<Receipt>,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Incoming {
    /// The root of the tree shown in the inbox.
    pub fn shown_tree(&self) -> &str {
        self.shown_root.as_deref().unwrap_or(&self.root)
    }

    /// The label of the pin that keeps the item.
    pub fn pin_label(&self) -> String {
        format!("inbox {} {}", self.from, self.id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receipt {
    Delivered,
    Read,
    /// The item failed (`InState::Failed` says why).
    Failed,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Items {
    #[serde(default)]
    pub outgoing: Vec<Outgoing>,
    #[serde(default)]
    pub incoming: Vec<Incoming>,
}

impl Items {
    /// The items kept in `repo`, or none yet.
    pub fn load(repo: &Path) -> Result<Items, ItemsError> {
        let path = repo.join(MAIL_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ItemsError::Unreadable {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Items::default()),
            Err(source) => Err(ItemsError::Io { path, source }),
        }
    }

    /// Replaces the file with these items, durably.
    pub fn save(&self, repo: &Path) -> Result<(), ItemsError> {
        let path = repo.join(MAIL_FILE);
        let tmp = repo.join(format!("{MAIL_FILE}.tmp"));
        let io = |source| ItemsError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Bytes `from` has in my inbox (fetched or being fetched): what `inbox_quota` counts.
    pub fn held_from(&self, from: &str) -> u64 {
        self.incoming
            .iter()
            .filter(|i| i.from == from && !matches!(i.state, InState::Failed { .. }))
            .map(|i| i.size)
            .sum()
    }

    /// A name for `name` in `from_name`'s inbox folder that no complete item has: the
    /// name itself, else `stem (2).ext`, `stem (3).ext`, …
    pub fn free_name(&self, from_name: &str, name: &str) -> String {
        let taken = |n: &str| {
            self.incoming
                .iter()
                .any(|i| i.from_name == from_name && i.shown_name.as_deref() == Some(n))
        };
        if !taken(name) {
            return name.to_string();
        }
        let (stem, ext) = match name.rfind('.') {
            Some(dot) if dot > 0 => name.split_at(dot),
            _ => (name, ""),
        };
        (2u64..)
            .map(|n| format!("{stem} ({n}){ext}"))
            .find(|candidate| !taken(candidate))
            .unwrap_or_else(|| name.to_string())
    }
}

/// How `peerfs outbox` and `peerfs inbox` show an item's state: `queued`,
/// `delivering N%`, `delivered TIME`, `read TIME`, `refused: REASON`.
pub fn out_state_text(state: &OutState) -> String {
    match state {
        OutState::Queued => "queued".into(),
        OutState::Delivering { percent } => format!("delivering {percent}%"),
        OutState::Delivered { at_ms } => format!("delivered {}", time_text(*at_ms)),
        OutState::Read { at_ms, .. } => format!("read {}", time_text(*at_ms)),
        OutState::Refused { reason } => format!("refused: {reason}"),
    }
}

pub fn in_state_text(state: &InState) -> String {
    match state {
        InState::Fetching { percent } => format!("receiving {percent}%"),
        InState::Complete { at_ms } => format!("received {}", time_text(*at_ms)),
        InState::Read { at_ms, .. } => format!("read {}", time_text(*at_ms)),
        InState::Failed { reason } => format!("failed: {reason}"),
    }
}

pub fn time_text(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(from_name: &str, shown: &str) -> Incoming {
        Incoming {
            id: shown.into(),
            from: "p".into(),
            from_name: from_name.into(),
            name: shown.into(),
            shown_name: Some(shown.into()),
            root: String::new(),
            shown_root: None,
            size: 1,
            note: String::new(),
            offered_ms: 0,
            state: InState::Complete { at_ms: 0 },
            receipts_due: Vec::new(),
            last_error: None,
        }
    }

    #[test]
    fn a_name_already_in_the_inbox_gets_a_suffix() {
        let mut items = Items::default();
        assert_eq!(items.free_name("a", "r.pdf"), "r.pdf");
        items.incoming.push(complete("a", "r.pdf"));
        assert_eq!(items.free_name("a", "r.pdf"), "r (2).pdf");
        assert_eq!(items.free_name("b", "r.pdf"), "r.pdf");
        items.incoming.push(complete("a", "r (2).pdf"));
        assert_eq!(items.free_name("a", "r.pdf"), "r (3).pdf");
        items.incoming.push(complete("a", "dir"));
        assert_eq!(items.free_name("a", "dir"), "dir (2)");
    }

    #[test]
    fn items_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut items = Items::default();
        items.incoming.push(complete("a", "x"));
        items.outgoing.push(Outgoing {
            id: "1".into(),
            to: "t".into(),
            to_name: "b".into(),
            name: "f".into(),
            root: "c".into(),
            size: 3,
            note: String::new(),
            created_ms: 1,
            state: OutState::Refused {
                reason: "no".into(),
            },
            last_error: None,
        });
        items.save(dir.path()).unwrap();
        let back = Items::load(dir.path()).unwrap();
        assert_eq!(back.incoming.len(), 1);
        assert_eq!(
            back.outgoing[0].state,
            OutState::Refused {
                reason: "no".into()
            }
        );
    }
}
