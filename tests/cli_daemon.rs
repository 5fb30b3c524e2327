//! The CLI beside running daemons, as a user meets it: the log, `--json` listings, pins
//! that outlive what they named, `id` and `unmount` finding the right daemon.

mod common;

use std::fs;

use common::{write, Mounted};

/// The daemon's log, read with `less` or `cat`: plain text, values as a person writes
/// them, no warning when nothing is wrong.
#[test]
fn the_daemon_log_is_plain_text_without_internal_formatting() {
    let m = Mounted::new();
    write(&m.drive().join("f"), b"x\n");
    m.unmount();
    let log = fs::read_to_string(m.repo.path().join("daemon.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "colour codes in the log: {log:?}");
    for internal in ["None", "Some("] {
        assert!(!log.contains(internal), "{internal} in the log: {log}");
    }
    assert!(log.contains("drive root none (empty drive)"), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warnings.is_empty(),
        "a clean start and stop warns: {warnings:?}"
    );
}
