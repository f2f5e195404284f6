//! Which archive entries a restore accepts. Checked for every entry in the verification
//! read, before any byte is written: a hostile or damaged archive is refused whole, with a
//! readable reason. This is the early refusal only: staging goes through `confine`, which
//! refuses the same things by construction whatever this pass let through.

use std::collections::HashSet;

use tar::EntryType;
use xxhash_rust::xxh3::xxh3_64;

use crate::backup::archive::EntryInfo;

/// The rules for one restore: entries must lie under one of the backed-up paths.
pub struct Rules {
    /// Archive paths of the restored set paths (absolute paths without the leading `/`).
    prefixes: Vec<Vec<u8>>,
    /// Accept symlinks whose absolute target lies outside the restored paths (they are
    /// recreated as they were, never followed). Off by default.
    allow_external_symlinks: bool,
    /// Symlinks seen so far: nothing may be written through one.
    symlinks: HashSet<Vec<u8>>,
    /// XXH3 of the regular files seen so far: the only things a hard link may name.
    files: HashSet<u64>,
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let Some(r) = p.strip_suffix(b"/") {
        p = r;
    }
    p
}

/// True when `path` is `prefix` or lies below it.
pub fn under(prefix: &[u8], path: &[u8]) -> bool {
    path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// Joins `rel` onto `base` lexically; `None` when `..` climbs above the root.
fn normalize(base: &[u8], rel: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = base
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for c in rel.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join(&b'/'))
}

impl Rules {
    pub fn new(prefixes: Vec<Vec<u8>>, allow_external_symlinks: bool) -> Self {
        Rules {
            prefixes,
            allow_external_symlinks,
            symlinks: HashSet::new(),
            files: HashSet::new(),
        }
    }

    fn inside(&self, path: &[u8]) -> bool {
        self.prefixes.iter().any(|p| under(p, path))
    }

    /// The symlink `path` passes through, if any (a folder of it that the archive made a
    /// symlink).
    fn through_symlink(&self, path: &[u8]) -> Option<String> {
        if self.symlinks.is_empty() {
            return None;
        }
        path.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| &path[..i])
            .find(|p| self.symlinks.contains(*p))
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// Checks one entry; `Err` says why it is refused.
    pub fn check(&mut self, e: &EntryInfo<'_>) -> Result<(), String> {
        let path = trim_slashes(e.path);
        if e.kind == EntryType::Symlink && self.prefixes.iter().any(|p| p.as_slice() == path) {
            return Err("the set path itself is a symlink".into());
        }
        self.check_entry(e)?;
        if let Some(link) = self.through_symlink(path) {
            return Err(format!(
                "its folder {link} is a symlink; nothing is written through one"
            ));
        }
        match e.kind {
            EntryType::Symlink => {
                self.symlinks.insert(path.to_vec());
            }
            EntryType::Regular | EntryType::Continuous => {
                self.files.insert(xxh3_64(path));
            }
            EntryType::Link => {
                let link = trim_slashes(e.link.unwrap_or_default());
                if !self.files.contains(&xxh3_64(link)) {
                    return Err(format!(
                        "hard link to {}, which is not a regular file restored before it",
                        String::from_utf8_lossy(link)
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_entry(&self, e: &EntryInfo<'_>) -> Result<(), String> {
        let path = trim_slashes(e.path);
        if path.starts_with(b".steward/") && matches!(e.kind, EntryType::Regular) {
            return Ok(());
        }
        if path.starts_with(b"/") {
            return Err("absolute path".into());
        }
        if path.split(|&b| b == b'/').any(|c| c == b"..") {
            return Err("`..` component".into());
        }
        if !self.inside(path) {
            return Err("outside the backed-up paths".into());
        }
        if e.mode & 0o6000 != 0 {
            return Err(format!("setuid/setgid bits (mode {:o})", e.mode));
        }
        match e.kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => Ok(()),
            EntryType::Symlink => {
                let link = e.link.ok_or("symlink without a target")?;
                let shown = String::from_utf8_lossy(link);
                let resolved = if let Some(abs) = link.strip_prefix(b"/") {
                    normalize(b"", abs)
                } else {
                    let dir = path.rsplit_once_byte();
                    normalize(dir, link)
                };
                match resolved {
                    Some(r) if self.inside(&r) => Ok(()),
                    _ if link.starts_with(b"/") && self.allow_external_symlinks => Ok(()),
                    _ => Err(format!(
                        "symlink to {shown} points outside the restored paths"
                    )),
                }
            }
            EntryType::Link => {
                let link = e.link.ok_or("hard link without a target")?;
                let shown = String::from_utf8_lossy(link);
                match normalize(b"", link) {
                    Some(r) if !link.starts_with(b"/") && self.inside(&r) && r == link => Ok(()),
                    _ => Err(format!(
                        "hard link to {shown} points outside the restored paths"
                    )),
                }
            }
            EntryType::Char | EntryType::Block => Err("device node".into()),
            EntryType::Fifo => Err("FIFO".into()),
            other => Err(format!("unsupported entry type {other:?}")),
        }
    }
}

trait ParentDir {
    fn rsplit_once_byte(&self) -> &[u8];
}

impl ParentDir for [u8] {
    /// The folder part of an archive path (empty for a top-level name).
    fn rsplit_once_byte(&self) -> &[u8] {
        match self.iter().rposition(|&b| b == b'/') {
            Some(i) => &self[..i],
            None => b"",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(
        path: &'a [u8],
        kind: EntryType,
        link: Option<&'a [u8]>,
        mode: u32,
    ) -> EntryInfo<'a> {
        EntryInfo {
            path,
            kind,
            link,
            mode,
        }
    }

    #[test]
    fn hostile_entries_are_refused_with_the_reason() {
        let r = Rules::new(vec![b"srv/app".to_vec()], false);
        let ok = |p: &[u8], k, l: Option<&[u8]>| r.check_entry(&entry(p, k, l, 0o644));
        assert!(ok(b"srv/app", EntryType::Directory, None).is_ok());
        assert!(ok(b"srv/app/", EntryType::Directory, None).is_ok());
        assert!(ok(b"srv/app/a.db", EntryType::Regular, None).is_ok());
        assert!(ok(b"srv/app/l", EntryType::Symlink, Some(b"a.db")).is_ok());
        assert!(ok(b"srv/app/d/l", EntryType::Symlink, Some(b"../a.db")).is_ok());
        assert!(ok(b"srv/app/l", EntryType::Symlink, Some(b"/srv/app/a.db")).is_ok());
        assert!(ok(b"srv/app/h", EntryType::Link, Some(b"srv/app/a.db")).is_ok());
        let refused = [
            (
                ok(b"srv/app/../etc/passwd", EntryType::Regular, None),
                "`..`",
            ),
            (ok(b"/etc/passwd", EntryType::Regular, None), "absolute"),
            (ok(b"etc/passwd", EntryType::Regular, None), "outside"),
            (ok(b"srv/application", EntryType::Regular, None), "outside"),
            (
                ok(b"srv/app/l", EntryType::Symlink, Some(b"/etc/shadow")),
                "symlink",
            ),
            (
                ok(b"srv/app/l", EntryType::Symlink, Some(b"../../../etc")),
                "symlink",
            ),
            (
                ok(b"srv/app/h", EntryType::Link, Some(b"etc/shadow")),
                "hard link",
            ),
            (
                ok(b"srv/app/h", EntryType::Link, Some(b"srv/app/../../etc/x")),
                "hard link",
            ),
            (ok(b"srv/app/dev", EntryType::Char, None), "device"),
            (ok(b"srv/app/blk", EntryType::Block, None), "device"),
            (ok(b"srv/app/p", EntryType::Fifo, None), "FIFO"),
            (
                r.check_entry(&entry(b"srv/app/suid", EntryType::Regular, None, 0o4755)),
                "setuid",
            ),
            (
                r.check_entry(&entry(b"srv/app/sgid", EntryType::Directory, None, 0o2755)),
                "setuid/setgid",
            ),
        ];
        for (result, why) in refused {
            let e = result.expect_err(why);
            assert!(e.contains(why), "{e} should mention {why}");
        }
        let lenient = Rules::new(vec![b"srv/app".to_vec()], true);
        assert!(
            lenient
                .check_entry(&entry(
                    b"srv/app/python",
                    EntryType::Symlink,
                    Some(b"/usr/bin/python3"),
                    0o777
                ))
                .is_ok()
        );
    }

    #[test]
    fn nothing_through_a_symlink_and_hard_links_only_to_files_seen() {
        let mut r = Rules::new(vec![b"srv/app".to_vec()], true);
        let mut check = |p: &[u8], k, l: Option<&[u8]>| r.check(&entry(p, k, l, 0o644));
        assert!(check(b"srv/app", EntryType::Directory, None).is_ok());
        assert!(check(b"srv/app/d", EntryType::Symlink, Some(b"sub")).is_ok());
        let e = check(b"srv/app/d/x", EntryType::Regular, None).unwrap_err();
        assert!(e.contains("srv/app/d is a symlink"), "{e}");
        let e = check(b"srv/app/h", EntryType::Link, Some(b"srv/app/f")).unwrap_err();
        assert!(e.contains("not a regular file restored before"), "{e}");
        assert!(check(b"srv/app/f", EntryType::Regular, None).is_ok());
        assert!(check(b"srv/app/h", EntryType::Link, Some(b"srv/app/f")).is_ok());
        let e = check(b"srv/app/h2", EntryType::Link, Some(b"srv/app/d")).unwrap_err();
        assert!(e.contains("hard link"), "{e}");
        let e = check(b"srv/app", EntryType::Symlink, Some(b"/etc")).unwrap_err();
        assert!(e.contains("set path itself"), "{e}");
    }
}
