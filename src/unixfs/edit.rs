//! Taking one entry out of a directory tree: the directories on its path are built
//! anew, and everything else is shared with the old tree.

use cid::Cid;

use super::{build_directory, list, load_node, Built, Error, ImportOptions};
use crate::store::{BlockSink, Blocks};

/// What a removal may take, as `unlink` and `rmdir` differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Anything but a directory.
    NotDirectory,
    /// An empty directory only.
    EmptyDirectory,
}

/// Whether the entry `cid` (named `name`, for errors) may go by `what`.
pub fn removable(blocks: &dyn Blocks, cid: &Cid, what: Removal, name: &str) -> Result<(), Error> {
    let node = load_node(blocks, cid)?;
    match (what, node.is_dir()) {
        (Removal::NotDirectory, true) => Err(Error::IsADirectory(name.into())),
        (Removal::EmptyDirectory, false) => Err(Error::NotADirectory(name.into())),
        (Removal::EmptyDirectory, true) if !list(blocks, cid, &node)?.is_empty() => {
            Err(Error::NotEmpty(name.into()))
        }
        _ => Ok(()),
    }
}

/// The tree under `root` without the entry at `path` (names from the root, at least
/// one), its new directory nodes given to `sink`.
pub fn remove_entry(
    blocks: &dyn Blocks,
    root: &Cid,
    path: &[&[u8]],
    what: Removal,
    opts: &ImportOptions,
    sink: &mut dyn BlockSink,
) -> Result<Built, Error> {
    let (name, below) = path
        .split_first()
        .ok_or_else(|| Error::NotFound(String::new()))?;
    let named = || String::from_utf8_lossy(name).into_owned();
    let node = load_node(blocks, root)?;
    if !node.is_dir() {
        return Err(Error::NotADirectory(root.to_string()));
    }
    let mut entries = list(blocks, root, &node)?;
    let at = entries
        .iter()
        .position(|e| e.name == *name)
        .ok_or_else(|| Error::NotFound(named()))?;
    if below.is_empty() {
        removable(blocks, &entries[at].cid, what, &named())?;
        entries.remove(at);
    } else {
        let child = remove_entry(blocks, &entries[at].cid, below, what, opts, sink)?;
        entries[at].cid = child.cid;
        entries[at].tsize = child.tsize;
    }
    build_directory(entries, node.meta(), opts, sink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBlocks;
    use crate::unixfs::data::Metadata;
    use crate::unixfs::testing::{dir, file, small_shards};

    fn names(store: &MemoryBlocks, root: &Cid, path: &str) -> Vec<String> {
        let (cid, node) = crate::unixfs::resolve(store, root, path).unwrap();
        list(store, &cid, &node)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.name).unwrap())
            .collect()
    }

    #[test]
    fn an_entry_goes_and_everything_else_stays_through_shards() {
        let store = MemoryBlocks::default();
        let many: Vec<(String, _)> = (0..300)
            .map(|i| (format!("f{i:03}"), file(&store, b"x", Metadata::default())))
            .collect();
        let empty = dir::<String>(&store, Vec::new());
        let sub = dir(&store, vec![("many", dir(&store, many)), ("empty", empty)]);
        let top = dir(
            &store,
            vec![
                ("sub", sub),
                ("keep", file(&store, b"k", Metadata::default())),
            ],
        );
        let opts = small_shards();
        let remove = |root: &Cid, path: &str, what| {
            let parts: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
            let mut sink = &store;
            remove_entry(&store, root, &parts, what, &opts, &mut sink)
        };

        let one_less = remove(&top.cid, "sub/many/f123", Removal::NotDirectory).unwrap();
        let left = names(&store, &one_less.cid, "sub/many");
        assert_eq!(left.len(), 299);
        assert!(!left.contains(&"f123".to_string()));
        assert_eq!(names(&store, &one_less.cid, ""), ["keep", "sub"]);

        let refused = [
            ("sub/many", Removal::EmptyDirectory, "not empty"),
            ("sub", Removal::NotDirectory, "is a directory"),
            ("keep", Removal::EmptyDirectory, "not a directory"),
            ("keep/x", Removal::NotDirectory, "not a directory"),
            ("sub/nothing", Removal::NotDirectory, "no such"),
        ];
        for (path, what, why) in refused {
            let e = remove(&top.cid, path, what).unwrap_err().to_string();
            assert!(e.contains(why), "{path}: {e}");
        }
        let no_empty = remove(&top.cid, "sub/empty", Removal::EmptyDirectory).unwrap();
        assert_eq!(names(&store, &no_empty.cid, "sub"), ["many"]);
    }
}
