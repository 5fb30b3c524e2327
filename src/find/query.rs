//! What a search looks for: a glob on the name, a kind, a size and a time, spelled the
//! way `find` users spell them (`--size +10M`, `--newer 2d`).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::unixfs::diff::EntryKind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{0:?} is not a glob pattern: {1}")]
    Pattern(String, String),
    #[error("{0:?} is not a size: a number with an optional unit c, k, M, G or T, after + (more than) or - (less than)")]
    Size(String),
    #[error("{0:?} is not an age: a number with a unit s, m, h, d or w")]
    Age(String),
    #[error("{0:?} is not a type: f (file), d (directory) or l (symlink)")]
    Kind(String),
}

/// A size test, as `find -size` spells it with `c`, `k`, `M`, `G` or `T` (powers of
/// 1024; no unit is bytes): `+N` more than, `-N` less than, `N` the same when
/// rounded up to the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeTest {
    Above(u64),
    Below(u64),
    /// Rounded up to `unit` bytes, `count` units.
    Units {
        count: u64,
        unit: u64,
    },
}

impl SizeTest {
    pub fn accepts(self, size: u64) -> bool {
        match self {
            SizeTest::Above(n) => size > n,
            SizeTest::Below(n) => size < n,
            SizeTest::Units { count, unit } => size.div_ceil(unit.max(1)) == count,
        }
    }
}

impl FromStr for SizeTest {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, QueryError> {
        let bad = || QueryError::Size(s.to_string());
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => (0, s),
        };
        let (digits, unit) = match rest.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&rest[..i], unit_size(c).ok_or_else(bad)?),
            _ => (rest, 1),
        };
        let count: u64 = digits.parse().map_err(|_| bad())?;
        let bytes = count.checked_mul(unit).ok_or_else(bad)?;
        Ok(match sign {
            1 => SizeTest::Above(bytes),
            -1 => SizeTest::Below(bytes),
            _ => SizeTest::Units { count, unit },
        })
    }
}

fn unit_size(c: char) -> Option<u64> {
    Some(match c {
        'c' => 1,
        'k' | 'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => return None,
    })
}

/// An age: `--newer 2d` is "modified in the last two days".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Newer {
    pub secs: u64,
}

impl FromStr for Newer {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, QueryError> {
        let bad = || QueryError::Age(s.to_string());
        let (i, unit) = s.char_indices().last().ok_or_else(bad)?;
        let per = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = s[..i].parse().map_err(|_| bad())?;
        Ok(Newer {
            secs: n.checked_mul(per).ok_or_else(bad)?,
        })
    }
}

/// `f`, `d` or `l`, as `find -type` spells them.
pub fn parse_kind(s: &str) -> Result<EntryKind, QueryError> {
    match s {
        "f" => Ok(EntryKind::File),
        "d" => Ok(EntryKind::Directory),
        "l" => Ok(EntryKind::Symlink),
        _ => Err(QueryError::Kind(s.to_string())),
    }
}

/// A search's tests, all of which an entry must pass. It travels to the daemon as it
/// is; `compile` makes it ready to test entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// A glob on the entry's name (`*.pdf`), as `find -name` takes it.
    pub pattern: Option<String>,
    pub kind: Option<EntryKind>,
    /// Files and symlinks only: a directory has no size to test.
    pub size: Option<SizeTest>,
    /// Modified at or after this time (seconds since the Unix epoch). An entry that
    /// records no time does not pass.
    pub modified_since: Option<i64>,
}

impl Query {
    /// Checks the pattern.
    pub fn compile(&self) -> Result<Matcher, QueryError> {
        let pattern = match &self.pattern {
            Some(p) => Some(
                glob::Pattern::new(p).map_err(|e| QueryError::Pattern(p.clone(), e.to_string()))?,
            ),
            None => None,
        };
        Ok(Matcher {
            query: self.clone(),
            pattern,
        })
    }
}

/// A query ready to test entries.
pub struct Matcher {
    query: Query,
    pattern: Option<glob::Pattern>,
}

impl Matcher {
    pub fn accepts(
        &self,
        name: &str,
        kind: EntryKind,
        size: Option<u64>,
        mtime: Option<i64>,
    ) -> bool {
        let q = &self.query;
        self.pattern.as_ref().is_none_or(|p| p.matches(name))
            && q.kind.is_none_or(|k| k == kind)
            && q.size.is_none_or(|t| size.is_some_and(|s| t.accepts(s)))
            && q.modified_since
                .is_none_or(|since| mtime.is_some_and(|m| m >= since))
    }
}
