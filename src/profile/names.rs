//! A peer's profile name made into the name of its folder under `peers/` (and
//! `inbox/`, `outbox/`): what a remote peer chose must not walk out of the folder, hide
//! itself, or take a name in use.

/// A folder name's bytes at most, before a `-N` suffix.
pub const MAX_FOLDER: usize = 64;
/// Suffixes tried before giving up on a profile name (`-2` … `-99`).
const MAX_SUFFIX: u32 = 99;

/// `name` made safe as one file name: `/`, NUL and control characters become `_`,
/// leading dots and surrounding spaces go, at most `MAX_FOLDER` bytes. `None` when
/// nothing is left.
pub fn safe(name: &str) -> Option<String> {
    let replaced: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\0' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = replaced.trim().trim_start_matches('.').trim();
    let mut end = trimmed.len().min(MAX_FOLDER);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let cut = trimmed[..end].trim_end();
    (!cut.is_empty()).then(|| cut.to_string())
}

/// The folder name for a peer whose profile says `name`: `safe(name)`, with `-2`, `-3`
/// … added while `taken` says the name is in use. `None` when the name has nothing
/// safe in it, or every suffix is taken.
pub fn folder_name(name: &str, taken: impl Fn(&str) -> bool) -> Option<String> {
    let base = safe(name)?;
    if !taken(&base) {
        return Some(base);
    }
    (2..=MAX_SUFFIX)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_safe_file_name() {
        assert_eq!(safe("Alice").as_deref(), Some("Alice"));
        assert_eq!(safe("../../etc/passwd").as_deref(), Some("_.._etc_passwd"));
        assert_eq!(safe("..").as_deref(), None);
        assert_eq!(safe(".").as_deref(), None);
        assert_eq!(safe("  .hidden ").as_deref(), Some("hidden"));
        assert_eq!(safe("a\0b\nc").as_deref(), Some("a_b_c"));
        assert_eq!(safe("").as_deref(), None);
        let long = "é".repeat(40);
        let cut = safe(&long).unwrap();
        assert!(cut.len() <= MAX_FOLDER && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_taken_name_gets_a_suffix() {
        let taken = ["Alice", "Alice-2"];
        let name = folder_name("Alice", |n| taken.contains(&n));
        assert_eq!(name.as_deref(), Some("Alice-3"));
        assert_eq!(
            folder_name("Bob", |n| taken.contains(&n)).as_deref(),
            Some("Bob")
        );
        assert_eq!(folder_name("x", |_| true), None);
    }
}
