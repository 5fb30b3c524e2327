//! Who may send to my inbox, and how much: config `accept_from` (`"following"`, the
//! default: peers I follow; `"*"`: anyone; peer-book names and peer IDs),
//! `inbox_quota` (bytes per sender) and `inbox_max_item` (bytes per item).

use std::collections::HashSet;

use libp2p::PeerId;

/// Limits on what an inbox takes.
#[derive(Clone, Debug)]
pub struct Policy {
    pub everyone: bool,
    pub following: bool,
    /// Peer IDs, and peer-book names resolved when an offer comes.
    pub listed_ids: HashSet<PeerId>,
    pub listed_names: HashSet<String>,
    pub quota: u64,
    pub max_item: u64,
}

/// Most items one sender may have in my inbox, whatever their size: each costs a line
/// in `mail.json` and memory while the daemon runs.
pub const MAX_ITEMS_PER_SENDER: usize = 10_000;

/// The sender as the policy sees it.
pub struct Sender<'a> {
    pub id: PeerId,
    /// Its name in my peer book, when I follow it.
    pub followed_as: Option<&'a str>,
}

impl Policy {
    pub fn from_config(accept_from: &[String], quota: u64, max_item: u64) -> Policy {
        let mut p = Policy {
            everyone: false,
            following: false,
            listed_ids: HashSet::new(),
            listed_names: HashSet::new(),
            quota,
            max_item,
        };
        for entry in accept_from {
            match entry.as_str() {
                "*" => p.everyone = true,
                "following" => p.following = true,
                other => match other.parse() {
                    Ok(id) => {
                        p.listed_ids.insert(id);
                    }
                    Err(_) => {
                        p.listed_names.insert(other.to_string());
                    }
                },
            }
        }
        p
    }

    /// Why an offer of `size` bytes from `sender`, who has `held` bytes and `items`
    /// items here already, is refused; `None` when it is taken.
    pub fn refusal(
        &self,
        sender: &Sender<'_>,
        size: u64,
        held: u64,
        items: usize,
    ) -> Option<String> {
        let allowed = self.everyone
            || (self.following && sender.followed_as.is_some())
            || self.listed_ids.contains(&sender.id)
            || sender
                .followed_as
                .is_some_and(|n| self.listed_names.contains(n));
        if !allowed {
            return Some(
                if self.following && self.listed_ids.is_empty() && self.listed_names.is_empty() {
                    "the recipient takes items only from peers it follows (accept_from), and it does not follow you".into()
                } else {
                    "the recipient does not take items from you (accept_from)".into()
                },
            );
        }
        if size > self.max_item {
            return Some(format!(
                "{} is over the recipient's inbox_max_item of {}",
                bytesize::ByteSize(size),
                bytesize::ByteSize(self.max_item)
            ));
        }
        if held.saturating_add(size) > self.quota {
            return Some(format!(
                "the recipient's inbox_quota for you is {}, and {} of it is used",
                bytesize::ByteSize(self.quota),
                bytesize::ByteSize(held)
            ));
        }
        if items >= MAX_ITEMS_PER_SENDER {
            return Some(format!(
                "you have {items} items in the recipient's inbox already"
            ));
        }
        None
    }
}

/// Whether `name` can be one entry of a folder: not empty, no `/` or NUL, not `.`
/// or `..`, at most 255 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn following_takes_followed_peers_only_within_the_limits() {
        let p = Policy::from_config(&["following".into()], 100, 60);
        let friend = Sender {
            id: peer(),
            followed_as: Some("a"),
        };
        let stranger = Sender {
            id: peer(),
            followed_as: None,
        };
        assert_eq!(p.refusal(&friend, 50, 0, 0), None);
        let why = p.refusal(&stranger, 1, 0, 0).unwrap();
        assert!(why.contains("does not follow you"), "{why}");
        assert!(p
            .refusal(&friend, 61, 0, 0)
            .unwrap()
            .contains("inbox_max_item"));
        assert!(p
            .refusal(&friend, 50, 60, 0)
            .unwrap()
            .contains("inbox_quota"));
    }

    #[test]
    fn names_ids_and_everyone() {
        let id = peer();
        let p = Policy::from_config(&[id.to_string(), "bob".into()], 100, 100);
        let by_id = Sender {
            id,
            followed_as: None,
        };
        let bob = Sender {
            id: peer(),
            followed_as: Some("bob"),
        };
        let carol = Sender {
            id: peer(),
            followed_as: Some("carol"),
        };
        assert_eq!(p.refusal(&by_id, 1, 0, 0), None);
        assert_eq!(p.refusal(&bob, 1, 0, 0), None);
        assert!(p.refusal(&carol, 1, 0, 0).is_some());
        let all = Policy::from_config(&["*".into()], 100, 100);
        assert_eq!(all.refusal(&carol, 1, 0, 0), None);
    }

    #[test]
    fn names_that_are_not_one_entry_are_refused() {
        assert!(valid_name("a b.txt"));
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
