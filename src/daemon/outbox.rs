//! `outbox/<peer>/`: what is copied there is stored, pinned and sent to the peer once
//! it is finished (see [`crate::outbox`] for when that is).

use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tracing::{info, warn};

use super::mail::Mailroom;
use crate::add::{add_path, AddObserver, AddOptions, Added};
use crate::outbox::Outbox;
use crate::store::rocks::RocksStore;
use crate::store::write_behind;
use crate::unixfs::ImportOptions;

/// The staging folder in the repo.
const OUTBOX_DIR: &str = "outbox";
/// How often finished items are looked for.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// `outbox/`, its folders named by `peers`, its deliveries told by the mailroom once
/// it runs.
pub(super) fn make(
    repo: &Path,
    peers: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    mail: Arc<OnceLock<Weak<Mailroom>>>,
) -> Arc<Outbox> {
    Arc::new(Outbox::new(
        repo.join(OUTBOX_DIR),
        Box::new(move || peers()),
        Box::new(move |peer, item| mail.get()?.upgrade()?.delivery(peer, item)),
    ))
}

/// Counts the bytes of the files added.
#[derive(Default)]
struct Counted(u64);

impl AddObserver for Counted {
    fn added(&mut self, _: &Added<'_>) {}
    fn bytes(&mut self, n: u64) {
        self.0 += n;
    }
    fn skipped(&mut self, path: &Path, why: &str) {
        warn!("outbox: {} skipped: {why}", path.display());
    }
}

/// A thread that sends each finished item, until the outbox or the mailroom goes.
pub(super) fn send_finished(
    outbox: Weak<Outbox>,
    mail: Weak<Mailroom>,
    store: Arc<RocksStore>,
    import: ImportOptions,
) {
    let opts = AddOptions {
        import,
        recursive: true,
        preserve_mode: false,
        preserve_mtime: false,
    };
    std::thread::spawn(move || loop {
        std::thread::sleep(LOOK_EVERY);
        let (Some(outbox), Some(mail)) = (outbox.upgrade(), mail.upgrade()) else {
            return;
        };
        for (peer, item, path) in outbox.finished() {
            let mut counted = Counted::default();
            let _no_sweep = store.hold_off_sweeps();
            type Failed = Box<dyn std::error::Error + Send + Sync>;
            let added = write_behind(store.as_ref(), |sink| -> Result<_, Failed> {
                Ok(add_path(&path, &opts, sink, &mut counted)?)
            });
            let root = match added {
                Ok(root) => root.cid,
                Err(e) => {
                    warn!("outbox: storing {peer}/{item}: {e}");
                    continue;
                }
            };
            match mail.send(&peer, &item, &root.to_string(), counted.0, "") {
                Ok(sent) => info!("outbox: {item} queued for {peer} as {}", sent.id),
                Err(e) => warn!("outbox: sending {peer}/{item}: {e}"),
            }
        }
    });
}
