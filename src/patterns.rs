//! Path patterns, compiled once: exclude rules for backup sets (checked and compiled when
//! the config is validated) and the `--path` filter of a restore. Imports nothing from the
//! rest of the crate, so config, walk and restore can all depend on it.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}")]
pub struct PatternError {
    pub pattern: String,
    #[source]
    pub source: globset::Error,
}

fn compile(p: &str, glob: &str) -> Result<globset::Glob, PatternError> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|source| PatternError {
            pattern: p.to_string(),
            source,
        })
}

fn build(b: GlobSetBuilder, patterns: &[String]) -> Result<GlobSet, PatternError> {
    b.build().map_err(|source| PatternError {
        pattern: patterns.join(", "),
        source,
    })
}

/// Exclude rules in the spirit of `.gitignore`: a pattern without `/` matches a name at any
/// depth (`*.tmp`), a trailing `/` matches directories only (`cache/`), a pattern with a
/// leading `/` matches the absolute path, and any other pattern with `/` matches a path
/// suffix.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    any: GlobSet,
    dirs: GlobSet,
}

impl Excludes {
    /// Compiles `patterns`; the error names the one that is not a valid glob.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut any = GlobSetBuilder::new();
        let mut dirs = GlobSetBuilder::new();
        for p in patterns {
            let (body, dir_only) = match p.strip_suffix('/') {
                Some(b) => (b, true),
                None => (p.as_str(), false),
            };
            let full = if body.starts_with('/') {
                body.to_string()
            } else {
                format!("**/{body}")
            };
            let glob = compile(p, &full)?;
            if dir_only {
                dirs.add(glob);
            } else {
                any.add(glob);
            }
        }
        Ok(Excludes {
            any: build(any, patterns)?,
            dirs: build(dirs, patterns)?,
        })
    }

    /// Whether `path` (a directory when `is_dir`) is excluded.
    pub fn excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.any.is_match(path) || (is_dir && self.dirs.is_match(path))
    }
}

/// The `--path` globs of a restore, matched against an entry's absolute path as it was
/// backed up. A relative pattern (`uploads/**`) is taken below each of `roots` (the
/// restored set paths, without their leading `/`).
#[derive(Debug, Clone)]
pub struct PathFilter(GlobSet);

impl PathFilter {
    /// `None` when there are no patterns (everything is restored).
    pub fn new(patterns: &[String], roots: &[&str]) -> Result<Option<Self>, PatternError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let expanded: Vec<String> = if p.starts_with('/') {
                vec![p.clone()]
            } else {
                roots
                    .iter()
                    .map(|r| format!("/{r}/{}", p.trim_start_matches("./")))
                    .collect()
            };
            for e in expanded {
                b.add(Glob::new(&e).map_err(|source| PatternError {
                    pattern: p.clone(),
                    source,
                })?);
            }
        }
        build(b, patterns).map(|g| Some(PathFilter(g)))
    }

    /// Whether the archive path `rel` (an absolute path without its leading `/`) matches.
    pub fn matches(&self, rel: &[u8]) -> bool {
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(rel);
        self.0.is_match(Path::new(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&abs),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_rules_follow_gitignore_spirit() {
        let x = Excludes::new(&["*.tmp".into(), "cache/".into(), "/srv/a/skip".into()]).unwrap();
        assert!(x.excluded(Path::new("/srv/a/b/x.tmp"), false));
        assert!(x.excluded(Path::new("/srv/a/cache"), true));
        assert!(!x.excluded(Path::new("/srv/a/cache"), false));
        assert!(x.excluded(Path::new("/srv/a/skip"), false));
        assert!(!x.excluded(Path::new("/srv/b/skip"), false));
        assert!(Excludes::new(&["[".into()]).is_err());
    }

    #[test]
    fn relative_path_filters_are_taken_below_each_root() {
        let f = PathFilter::new(&["uploads/**".into()], &["srv/a", "srv/b"])
            .unwrap()
            .unwrap();
        assert!(f.matches(b"srv/a/uploads/x"));
        assert!(f.matches(b"srv/b/uploads/y/z"));
        assert!(!f.matches(b"srv/c/uploads/x"));
        assert!(PathFilter::new(&[], &["srv/a"]).unwrap().is_none());
    }
}
