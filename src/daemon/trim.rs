//! Keeping the peer view within its inode limit: what it says to drop goes to the
//! kernel from this thread, outside every FUSE handler (see `peers::trim`).

use std::sync::Weak;
use std::time::Duration;

use fuser::Notifier;

use super::follow::invalidate;
use crate::peers::PeerView;

/// How often the thread looks whether the view is still there.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Sends the view's trims to the kernel until the view is gone.
pub(super) fn trim_view(view: Weak<PeerView>, notifier: Notifier) {
    std::thread::spawn(move || {
        while let Some(view) = view.upgrade() {
            let drops = view.next_trim(CHECK_EVERY);
            drop(view);
            invalidate(&notifier, drops);
        }
    });
}
