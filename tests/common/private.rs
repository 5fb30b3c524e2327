//! Helpers for the tests of private folders: secret bytes with a marker inside, and a
//! search of a repo's files for it.

use std::path::Path;
use std::process::Command;

use super::bytes;

pub const MARKER: &str = "SECRET-MARKER-4d1c9e";
pub const PUBLIC_MARKER: &str = "PUBLIC-MARKER-77ab02";

/// Bytes that do not compress (so a marker inside stays whole in the store's files),
/// with the marker at the start.
pub fn secret_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut b = bytes(len, seed);
    b[..MARKER.len()].copy_from_slice(MARKER.as_bytes());
    b
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_with(dir: &Path, needle: &str) -> String {
    let out = Command::new("grep")
        .args(["-r", "-a", "-l", "-F", needle])
        .arg(dir)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn fails_with(dir: &Path, script: &str, errno_text: &str) {
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{script}: succeeded");
    assert!(err.contains(errno_text), "{script}: {err}");
}
