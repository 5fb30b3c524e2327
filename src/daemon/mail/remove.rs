//! Deleting in the inbox: a whole item (`rm`, `rmdir` of an emptied folder item), or an
//! entry inside a folder item, so that `rm -r` and `mv` out of the inbox (which copies,
//! then deletes) work as on a disk.

use std::sync::Arc;

use cid::Cid;

use super::{lock, Mailroom};
use crate::store::Blocks;
use crate::unixfs::edit::{removable, remove_entry, Removal};
use crate::vfs::FsError;

impl Mailroom {
    /// `inbox/<folder>/<path…>` deleted. A whole item (a path of one name) goes from the
    /// inbox, its quota and the pins. An entry inside a folder item goes from the item:
    /// the directories above it are built anew, and the item's pin moves to the new
    /// tree.
    pub(in crate::daemon) fn remove(
        self: &Arc<Self>,
        folder: &str,
        path: &[String],
        what: Removal,
    ) -> Result<(), FsError> {
        let (name, inside) = path.split_first().ok_or(FsError::NotFound)?;
        let store = &self.parts.store;
        let mut items = lock(&self.items);
        let at = items
            .incoming
            .iter()
            .position(|i| i.from_name == *folder && i.shown_name.as_deref() == Some(name))
            .ok_or(FsError::NotFound)?;
        let root = Cid::try_from(items.incoming[at].shown_tree()).map_err(|_| FsError::Invalid)?;
        let label = items.incoming[at].pin_label();
        if inside.is_empty() {
            removable(store.as_ref(), &root, what, name)?;
            items.incoming.remove(at);
        } else {
            let names: Vec<&[u8]> = inside.iter().map(|n| n.as_bytes()).collect();
            let mut blocks = Vec::new();
            let built = remove_entry(
                store.as_ref(),
                &root,
                &names,
                what,
                &self.parts.opts,
                &mut blocks,
            )?;
            store.put_many(&blocks, true)?;
            store.pin(&built.cid, &label)?;
            let item = &mut items.incoming[at];
            item.shown_root = Some(built.cid.to_string());
            // What counts against the sender's quota is what is left.
            item.size = item.size.min(built.tsize);
        }
        let snapshot = items.clone();
        drop(items);
        self.save(&snapshot);
        let _ = store.unpin_label(&root, &label);
        if inside.is_empty() {
            // The view moves now; the kernel, which holds the folder while it unlinks,
            // is told after.
            self.parts.view.drop_inbox_entry(folder, name);
        }
        let changes = self.rebuild_inbox();
        let notifier = self.parts.notifier.clone();
        std::thread::spawn(move || super::super::follow::invalidate(&notifier, changes));
        Ok(())
    }
}
