//! Which objects of a source are part of the move: `--include` / `--exclude` glob
//! patterns (and `--include-from` / `--exclude-from` files of them), `--min-size` /
//! `--max-size`, `--min-age` / `--max-age`, with rclone's meaning:
//!
//! * `*` matches within one path segment, `**` across segments, `?` one character of a
//!   segment, `[…]` a class, `{a,b}` alternatives (globset with literal separators);
//! * a pattern that starts with `/` is anchored at the source's root; any other matches
//!   the end of the key at a segment boundary (`*.log` matches `a/b/c.log`);
//! * with any include, an object must match one; it must then match no exclude;
//! * `--min-age 7d` moves only objects last modified at least 7 days ago, `--max-age`
//!   only those modified since; an object whose time the listing does not give passes.
//!
//! The filter of an ingest is recorded in the catalog (meta `filter`), shown by
//! `status`/`report`, and applied by `verify` to both listings, so objects left out are
//! neither missing nor extra.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a filter admits, as given on the command line (patterns read from files
/// included). Recorded in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterSpec {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Seconds.
    pub min_age: Option<u64>,
    /// Seconds.
    pub max_age: Option<u64>,
}

impl FilterSpec {
    /// True when the spec admits everything.
    pub fn is_empty(&self) -> bool {
        *self == FilterSpec::default()
    }

    /// Adds the patterns of a file: one per line; blank lines and `#` comments skipped.
    pub fn read_patterns(path: &std::path::Path, option: &str) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::option(option, format!("cannot read {}: {e}", path.display())))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }

    /// One line for `status` and `report`.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if !self.include.is_empty() {
            parts.push(format!("include {}", self.include.join(" ")));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("exclude {}", self.exclude.join(" ")));
        }
        if let Some(n) = self.min_size {
            parts.push(format!("at least {n} bytes"));
        }
        if let Some(n) = self.max_size {
            parts.push(format!("at most {n} bytes"));
        }
        if let Some(s) = self.min_age {
            parts.push(format!("modified at least {s} s ago"));
        }
        if let Some(s) = self.max_age {
            parts.push(format!("modified in the last {s} s"));
        }
        match parts.is_empty() {
            true => "none (every object)".into(),
            false => parts.join("; "),
        }
    }
}

/// The filter the last ingest recorded (None before any, or if it admitted everything).
pub fn recorded(catalog: &crate::catalog::Catalog) -> Result<Option<FilterSpec>> {
    let spec: Option<FilterSpec> = catalog.meta_json(crate::catalog::META_FILTER, "filter")?;
    Ok(spec.filter(|s| !s.is_empty()))
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    spec: FilterSpec,
    include: GlobSet,
    exclude: GlobSet,
    /// Unix seconds the ages are counted from (the run's start).
    now: u64,
}

impl Filter {
    /// Compiles `spec`; a bad pattern is refused, named with its option.
    pub fn new(spec: &FilterSpec) -> Result<Filter> {
        Ok(Filter {
            include: globs(&spec.include, "--include")?,
            exclude: globs(&spec.exclude, "--exclude")?,
            spec: spec.clone(),
            now: crate::catalog::unix_now(),
        })
    }

    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Whether the object `key` (relative to the source's root), of `size` bytes, last
    /// modified at `modified` (unix seconds, if known), is part of the move.
    pub fn admits(&self, key: &str, size: u64, modified: Option<u64>) -> bool {
        let s = &self.spec;
        if s.min_size.is_some_and(|m| size < m) || s.max_size.is_some_and(|m| size > m) {
            return false;
        }
        if let Some(t) = modified {
            let age = self.now.saturating_sub(t);
            if s.min_age.is_some_and(|m| age < m) || s.max_age.is_some_and(|m| age > m) {
                return false;
            }
        }
        if !s.include.is_empty() && !self.include.is_match(key) {
            return false;
        }
        !self.exclude.is_match(key)
    }
}

/// The patterns as one set, each with rclone's anchoring.
fn globs(patterns: &[String], option: &str) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let anchored = match p.strip_prefix('/') {
            Some(rooted) => rooted.to_string(),
            None => format!("**/{p}"),
        };
        let g = GlobBuilder::new(&anchored)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::option(option, format!("pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| Error::option(option, format!("patterns: {e}")))
}

/// A size as people type it: `4096`, `512MiB`, `1GiB`, `16k` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 512MiB, 1GiB, 4096)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses an age such as `90s`, `15m`, `12h`, `7d`, `2w`, `1y` (a bare number is
/// seconds) into seconds.
pub fn parse_age(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age (try 90s, 15m, 12h, 7d, 2w, 1y)"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (s, m, h, d, w, M, y)"
            ));
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> Filter {
        Filter::new(&FilterSpec {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn patterns_mean_what_they_mean_in_rclone() {
        let x = f(
            &[],
            &[
                "*.log",
                "/customer-x/**",
                "tmp/?.bin",
                "{a,b}.txt",
                "[0-9]*",
            ],
        );
        assert!(!x.admits("app.log", 1, None));
        assert!(
            !x.admits("deep/down/app.log", 1, None),
            "unanchored: any depth"
        );
        assert!(!x.admits("customer-x/secret/k", 1, None));
        assert!(
            x.admits("other/customer-x/k", 1, None),
            "anchored at the root"
        );
        assert!(!x.admits("tmp/a.bin", 1, None) && x.admits("tmp/ab.bin", 1, None));
        assert!(!x.admits("a.txt", 1, None) && x.admits("c.txt", 1, None));
        assert!(!x.admits("dir/7up", 1, None));
        assert!(x.admits("keep/this.txt", 1, None));
        let only = f(&["*.jpg"], &["private/**"]);
        assert!(only.admits("a/b.jpg", 1, None));
        assert!(!only.admits("a/b.png", 1, None));
        assert!(!only.admits("private/x.jpg", 1, None));
        assert!(
            Filter::new(&FilterSpec {
                include: vec!["[".into()],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn sizes_and_ages_bound_the_move() {
        let now = crate::catalog::unix_now();
        let x = Filter::new(&FilterSpec {
            min_size: Some(10),
            max_size: Some(100),
            min_age: Some(3600),
            max_age: Some(7 * 86_400),
            ..Default::default()
        })
        .unwrap();
        assert!(x.admits("k", 50, Some(now - 86_400)));
        assert!(!x.admits("k", 5, Some(now - 86_400)));
        assert!(!x.admits("k", 500, Some(now - 86_400)));
        assert!(!x.admits("k", 50, Some(now - 60)), "too young");
        assert!(!x.admits("k", 50, Some(now - 30 * 86_400)), "too old");
        assert!(x.admits("k", 50, None), "no time known: passes");
        assert_eq!(parse_age("7d"), Ok(7 * 86_400));
        assert!(parse_age("7x").is_err());
    }
}
