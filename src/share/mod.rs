//! Sending items to a peer's inbox: what goes on the wire, what is kept on disk, and
//! who may send. The daemon's `mail` module runs it (offers out, offers in, fetches,
//! receipts); this module knows neither FUSE nor the daemon.
//!
//! - [`wire`]: `/peerfs/offer/1.0.0`: signed letters (offer, progress, delivered,
//!   read) and their answers.
//! - [`items`]: the outbox and inbox items, persisted in the repo's `mail.json`.
//! - [`policy`]: `accept_from`, `inbox_quota`, `inbox_max_item`.

pub mod items;
pub mod policy;
pub mod wire;
