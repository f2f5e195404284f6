//! Restore drills: the newest good backup of a set restored into a scratch folder through
//! the restore's own code (the full read with every entry checked, then staging through
//! confined folder handles, every file against the manifest, every SQLite database through
//! `PRAGMA integrity_check`), then proven on the copy: each database's rows per table
//! against those recorded at backup time, Redis and PostgreSQL dumps through their own
//! tools when installed, and the set's `drill-command`. Live data and services are never
//! touched: no journal, no quiesce, no swap. Each phase is timed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backup::Progress;
use crate::backup::archive;
use crate::catalog::{BackupRecord, DrillPhases};
use crate::config::Config;
use crate::restore::stage::{Dump, Staged};
use crate::restore::{self, RestoreError, RestoreOptions, millis};

/// The prefix of the folders drills make inside `[drill] scratch`.
const FOLDER_PREFIX: &str = "steward-drill-";

/// Why a drill could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("interrupted; the drill's copy was removed")]
    Interrupted,
}

/// A drill's own folder inside `[drill] scratch`: `tree/` holds the restored copy,
/// `archives/` what an offsite drill fetched. Removed when dropped; the next drill
/// sweeps one that a killed run left.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Removes the folders earlier drills left in `root` (a drill killed before it could
    /// clean up); returns them. Run under the drill lock, so none is in use.
    pub fn sweep(root: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            // Only this user's folders: a shared scratch (`/var/tmp`) may hold anyone's.
            let ours = name.to_string_lossy().starts_with(FOLDER_PREFIX)
                && e.file_type().is_ok_and(|t| t.is_dir())
                && e.metadata().is_ok_and(|m| {
                    use std::os::unix::fs::MetadataExt;
                    // SAFETY: geteuid has no preconditions.
                    m.uid() == unsafe { libc::geteuid() }
                });
            if ours && crate::fsutil::remove_tree(&e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }

    /// A fresh folder in `root` (made private), when `root`'s filesystem has `need` bytes
    /// free and a margin.
    pub fn create(root: &Path, need: u64) -> Result<Scratch, String> {
        crate::fsutil::create_private_dir(root)
            .map_err(|e| format!("cannot make the scratch folder {}: {e}", root.display()))?;
        room(root, need)?;
        let stamp = crate::clock::stamp(crate::clock::now_ts());
        // A name nobody can plant beforehand (the restore's staging name: the time, the
        // process and the clock's nanoseconds), made new and private: never an entry
        // someone else put there.
        let dir = root.join(format!(
            "{FOLDER_PREFIX}{}",
            restore::plan::unique_suffix(&stamp)
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        }
        Ok(Scratch { dir })
    }

    /// Whether `need` more bytes fit (see [`Scratch::create`]).
    pub fn room(&self, need: u64) -> Result<(), String> {
        room(&self.dir, need)
    }

    /// Where the copy is restored (the archive's absolute paths below it).
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// Where an offsite drill puts the archives it fetched.
    pub fn archives(&self) -> PathBuf {
        self.dir.join("archives")
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// `need` bytes and a twentieth more (the filesystem's own overhead) free at `dir`.
fn room(dir: &Path, need: u64) -> Result<(), String> {
    let free = crate::fsutil::free_space(dir)
        .map_err(|e| format!("cannot measure the free space of {}: {e}", dir.display()))?;
    let want = need.saturating_add(need / 20);
    if free < want {
        let show = |b: u64| bytesize::ByteSize(b).display().iec().to_string();
        return Err(format!(
            "the drill's scratch folder {} has {} free, the drill needs {} (set [drill] \
             scratch to a bigger disk, or free some space); nothing was restored",
            dir.display(),
            show(free),
            show(want)
        ));
    }
    Ok(())
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_tree(&self.dir);
    }
}

/// What one drill found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub files: u64,
    pub bytes: u64,
    pub phases: DrillPhases,
    /// What failed; empty when the drill passed.
    pub failures: Vec<String>,
    /// One line per check: what it found, passed or skipped and why.
    pub findings: Vec<String>,
    /// What the set's `drill-command` printed.
    pub output: Option<String>,
    /// The archive (or its base) did not read back whole: the backup itself is damaged,
    /// not only the drill failed.
    pub damaged: bool,
    /// Absolute links into the set's data, pointed into the copy.
    pub repointed: u64,
}

impl Verdict {
    /// A verdict that failed before anything was restored.
    pub fn refused(why: String) -> Verdict {
        let mut v = Verdict::default();
        v.fail(why);
        v
    }

    /// Records a failure, among the findings too.
    pub fn fail(&mut self, what: String) {
        self.findings.push(format!("FAILED {what}"));
        self.failures.push(what);
    }
}

/// Drills `record` (with `base`, a differential's full backup): restores it into
/// `scratch`'s tree and proves the copy. A damaged archive, a refused entry or a failed
/// check is a failed verdict; only an interruption is an error. `read_done` is called
/// once the archives have been read for the last time (the caller may let backups and
/// prune change the disk again).
pub fn drill(
    cfg: &Config,
    (record, base): (&BackupRecord, Option<&BackupRecord>),
    scratch: &Scratch,
    progress: &dyn Progress,
    interrupted: &AtomicBool,
    read_done: &mut dyn FnMut(),
) -> Result<Verdict, DrillError> {
    let mut v = Verdict::default();
    // Absolute links to outside the set are restored as they were (staging never follows
    // one); a real restore asks for --allow-external-symlinks for them.
    let opts = RestoreOptions {
        to: Some(scratch.tree()),
        allow_external_symlinks: true,
        ..RestoreOptions::default()
    };
    let refused = |v: &mut Verdict, e: RestoreError, plan| -> Result<(), DrillError> {
        if matches!(e, RestoreError::Interrupted) {
            return Err(DrillError::Interrupted);
        }
        v.damaged |= matches!(e, RestoreError::Archive(_));
        let text = shown_in(&crate::error::chain(&e), scratch, plan);
        // The copy's paths are shown as the set's: a full disk is the scratch's, said so.
        if full_disk(&e) {
            v.fail(format!(
                "the drill's scratch folder {} filled up ({text}); set [drill] scratch to a \
                 bigger disk",
                scratch.path().parent().unwrap_or(scratch.path()).display()
            ));
        } else {
            v.fail(text);
        }
        Ok(())
    };
    let plan = match restore::plan(cfg, record, base, &opts) {
        Ok(p) => p,
        Err(e) => {
            refused(&mut v, e, None)?;
            return Ok(v);
        }
    };
    let t = Instant::now();
    let checked = restore::check_archive(record, &plan, &opts, None, progress, interrupted);
    v.phases.verify_ms = millis(t.elapsed());
    if let Err(e) = checked {
        refused(&mut v, e, Some(&plan))?;
        return Ok(v);
    }
    let t = Instant::now();
    progress.phase(
        &format!("restoring {} into the drill's folder", record.id),
        plan.bytes,
    );
    let staged = restore::stage::stage(&plan, None, progress, interrupted)
        .and_then(|s| settle(&plan).map(|()| s))
        .and_then(|s| repoint(&plan, scratch, &mut v).map(|()| s));
    v.phases.write_ms = millis(t.elapsed());
    let meta = archive::read_meta(&record.path).ok();
    read_done();
    let staged = match staged {
        Ok(s) => s,
        Err(e) => {
            refused(&mut v, e, Some(&plan))?;
            return Ok(v);
        }
    };
    v.files = staged.files;
    v.bytes = staged.bytes;
    v.findings.push(format!(
        "restored {} files, {}, every file against the manifest: ok",
        staged.files,
        bytesize::ByteSize(staged.bytes).display().iec()
    ));
    if v.repointed > 0 {
        v.findings.push(format!(
            "{} absolute links into the set's data point into the copy (never at live data)",
            v.repointed
        ));
    }
    let t = Instant::now();
    check_databases(&plan, &staged, meta.as_ref(), scratch, &mut v);
    check_dumps(cfg, &plan, &staged, scratch, &mut v, interrupted);
    v.phases.check_ms = millis(t.elapsed());
    if interrupted.load(Ordering::SeqCst) {
        return Err(DrillError::Interrupted);
    }
    if let Some(command) = cfg.set(&record.set).and_then(|s| s.drill_command.as_ref()) {
        let t = Instant::now();
        run_command(cfg, command, record, scratch, &mut v, interrupted);
        v.phases.command_ms = millis(t.elapsed());
        if interrupted.load(Ordering::SeqCst) {
            return Err(DrillError::Interrupted);
        }
    }
    Ok(v)
}

/// A message with the drill's scratch paths shown as the set's own (`/data/app.db`, not
/// `/var/.../steward-drill-.../tree/.data.steward-staging-.../data/app.db`): the reader
/// knows the former.
fn shown_in(message: &str, scratch: &Scratch, plan: Option<&restore::Plan>) -> String {
    let mut m = message.to_string();
    for t in plan.map(|p| p.targets.as_slice()).unwrap_or_default() {
        m = m.replace(&format!("/{}/", t.staging), "/");
    }
    let tree = scratch.tree();
    m.replace(tree.to_string_lossy().as_ref(), "")
}

/// Moves each staged target to its place in the tree (the staging folder is the drill's
/// own, inside its private scratch folder), and removes the staging folders.
fn settle(plan: &restore::Plan) -> Result<(), RestoreError> {
    for t in &plan.targets {
        let staging = t.staging_path();
        let staged = staging.join(&t.name);
        if std::fs::symlink_metadata(&staged).is_ok() {
            std::fs::rename(&staged, &t.live).map_err(|source| RestoreError::Io {
                path: t.live.clone(),
                source,
            })?;
        }
        let _ = std::fs::remove_dir(&staging);
    }
    Ok(())
}

/// Whether `e` comes from a full disk (ENOSPC, or EDQUOT: a quota).
fn full_disk(e: &RestoreError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Absolute symlinks whose target lies inside the set's paths would lead a `drill-command`
/// (or an app started on the copy) out of the copy and into live data: each is pointed at
/// the same path inside the copy. Relative links that climb out of the set's paths are made
/// absolute to where they pointed live, so that they never resolve into the scratch
/// folder's own parents instead. Links to outside the set are left as they were.
fn repoint(plan: &restore::Plan, scratch: &Scratch, v: &mut Verdict) -> Result<(), RestoreError> {
    let tree = scratch.tree();
    let prefixes: Vec<PathBuf> = plan
        .targets
        .iter()
        .map(|t| PathBuf::from(format!("/{}", t.prefix)))
        .collect();
    let inside = |p: &Path| prefixes.iter().any(|x| p.starts_with(x));
    for t in &plan.targets {
        for e in walkdir::WalkDir::new(&t.live).follow_links(false) {
            let Ok(e) = e else { continue };
            if !e.path_is_symlink() {
                continue;
            }
            let link = e.path();
            let Ok(target) = std::fs::read_link(link) else {
                continue;
            };
            let Ok(original) = link.strip_prefix(&tree) else {
                continue;
            };
            let original = Path::new("/").join(original);
            let new = if target.is_absolute() {
                inside(&target).then(|| tree.join(target.strip_prefix("/").unwrap_or(&target)))
            } else {
                let resolved = crate::fsutil::lexical(
                    &original.parent().unwrap_or(Path::new("/")).join(&target),
                );
                (!inside(&resolved)).then_some(resolved)
            };
            if let Some(new) = new {
                let io = |source| RestoreError::Io {
                    path: link.to_path_buf(),
                    source,
                };
                std::fs::remove_file(link).map_err(io)?;
                std::os::unix::fs::symlink(&new, link).map_err(io)?;
                v.repointed += 1;
            }
        }
    }
    Ok(())
}

/// Where the staged entry (`target`, `rel`) is in the tree, and the path it was backed up
/// from.
fn places(plan: &restore::Plan, target: usize, rel: &[u8]) -> (PathBuf, String) {
    let at = restore::journal::unit_path(plan, &restore::Unit::entry(target, rel));
    let mut source = format!("/{}", plan.targets[target].prefix);
    if !rel.is_empty() {
        source.push('/');
        source.push_str(&String::from_utf8_lossy(rel));
    }
    (at, source)
}

/// Every restored database (staging ran `PRAGMA integrity_check` on each): its rows per
/// table against those the backup counted in the same image.
fn check_databases(
    plan: &restore::Plan,
    staged: &Staged,
    meta: Option<&archive::BackupMeta>,
    scratch: &Scratch,
    v: &mut Verdict,
) {
    for db in &staged.databases {
        let (at, source) = places(plan, db.target, &db.rel);
        let recorded = meta.and_then(|m| m.sqlite.iter().find(|s| s.path == source));
        let counted = rusqlite::Connection::open_with_flags(
            &at,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| e.to_string())
        .and_then(|c| crate::backup::sqlite::row_counts(Some(&c), Path::new("")));
        let counted = match counted {
            Ok(c) => c,
            Err(e) => {
                v.fail(format!(
                    "{source}: cannot count its rows: {}",
                    shown_in(&e, scratch, Some(plan))
                ));
                continue;
            }
        };
        match recorded {
            Some(r) if !r.tables.is_empty() => match compare_rows(&r.tables, &counted) {
                None => v.findings.push(format!(
                    "{source}: PRAGMA integrity_check ok; rows of {} tables as recorded at \
                     backup time",
                    counted.len()
                )),
                Some(diff) => v.fail(format!(
                    "{source}: rows differ from those recorded at backup time: {diff}"
                )),
            },
            _ => v.findings.push(format!(
                "{source}: PRAGMA integrity_check ok; no row counts recorded at backup time \
                 (rows of {} tables not compared)",
                counted.len()
            )),
        }
    }
}

/// What differs between the recorded and the counted rows per table (`None`: nothing).
fn compare_rows(
    recorded: &BTreeMap<String, u64>,
    counted: &BTreeMap<String, u64>,
) -> Option<String> {
    let mut out = Vec::new();
    for (table, want) in recorded {
        match counted.get(table) {
            Some(got) if got == want => {}
            Some(got) => out.push(format!("table {table} has {got} rows, recorded {want}")),
            None => out.push(format!("table {table} is missing (recorded {want} rows)")),
        }
    }
    for table in counted.keys().filter(|t| !recorded.contains_key(*t)) {
        out.push(format!("table {table} was not there at backup time"));
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// The program `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Redis dumps through `redis-check-rdb`, PostgreSQL dumps through `pg_restore --list`,
/// where those are installed (said when not).
fn check_dumps(
    cfg: &Config,
    plan: &restore::Plan,
    staged: &Staged,
    scratch: &Scratch,
    v: &mut Verdict,
    interrupted: &AtomicBool,
) {
    for (kind, target, rel) in &staged.dumps {
        let (at, source) = places(plan, *target, rel);
        let (tool, args): (&str, Vec<&OsStr>) = match kind {
            Dump::RedisRdb => ("redis-check-rdb", vec![at.as_os_str()]),
            Dump::PgCustom => ("pg_restore", vec![OsStr::new("--list"), at.as_os_str()]),
        };
        let Some(program) = on_path(tool) else {
            v.findings
                .push(format!("{source}: skipped: {tool} is not installed"));
            continue;
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(&args);
        match crate::services::run_captured(cmd, cfg.drill.command_timeout, true, Some(interrupted))
        {
            Ok(o) if o.success => v.findings.push(format!("{source}: {tool}: ok")),
            Ok(o) => v.fail(format!(
                "{source}: {tool} failed: {}",
                shown_in(&telling_lines(&o.output, 3), scratch, Some(plan))
            )),
            Err(e) => v.fail(format!("{source}: cannot run {tool}: {e}")),
        }
    }
}

/// The lines of `text` that say what went wrong (those naming an error, else the last
/// ones), at most `n`, joined.
fn telling_lines(text: &str, n: usize) -> String {
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("fatal") || l.contains("corrupt")
        })
        .collect();
    if errors.is_empty() {
        last_lines(text, n)
    } else {
        errors[..errors.len().min(n)].join(" / ")
    }
}

/// The last `n` non-empty lines of `text`, joined.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// The set's `drill-command`, in the tree, with `STEWARD_DRILL_DIR` pointing at it.
fn run_command(
    cfg: &Config,
    command: &str,
    record: &BackupRecord,
    scratch: &Scratch,
    v: &mut Verdict,
    interrupted: &AtomicBool,
) {
    let tree = scratch.tree();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&tree)
        .env("STEWARD_DRILL_DIR", &tree)
        .env("STEWARD_DRILL_SET", &record.set)
        .env("STEWARD_DRILL_BACKUP", &record.id);
    let timeout = cfg.drill.command_timeout;
    // What the command left running (an app started on a spare port) goes with the copy.
    match crate::services::run_captured_reaped(cmd, timeout, Some(interrupted)) {
        Ok(o) => {
            let timed_out = !o.success && o.output.starts_with("timed out after");
            v.output = Some(o.output.clone());
            if o.success {
                v.findings.push("drill-command: ok".into());
            } else if timed_out {
                v.fail(format!(
                    "drill-command did not finish within {} ([drill] command-timeout)",
                    humantime::format_duration(timeout)
                ));
            } else {
                v.fail(format!(
                    "drill-command failed: {}",
                    last_lines(&o.output, 3)
                ));
            }
        }
        Err(e) => v.fail(format!("drill-command could not run: {e}")),
    }
}

/// The scratch folder as it really is (links resolved) must stay apart from every set's
/// data and the backup destination: the config's own check compares the names as written.
pub fn apart(cfg: &Config) -> Result<(), String> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    // The nearest folder of the scratch path that exists, resolved, with the rest after it.
    let mut probe = cfg.drill.scratch.clone();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&probe).is_err() {
        match (probe.file_name().map(ToOwned::to_owned), probe.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                probe = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut scratch = real(&probe);
    scratch.extend(rest.iter().rev());
    let mut others: Vec<(String, PathBuf)> = cfg
        .backup
        .sets
        .iter()
        .flat_map(|s| {
            s.paths.iter().map(move |p| {
                (
                    format!("{} of set {:?}", p.value.display(), s.name),
                    real(&p.value),
                )
            })
        })
        .collect();
    others.push((
        format!(
            "the backup destination {}",
            cfg.backup.destination.display()
        ),
        real(&cfg.backup.destination),
    ));
    for (what, p) in others {
        if scratch.starts_with(&p) || p.starts_with(&scratch) {
            return Err(format!(
                "[drill] scratch {} is {} through a link, which overlaps {what}; a drill's \
                 copy must stay apart from live data and backups (nothing was drilled)",
                cfg.drill.scratch.display(),
                scratch.display()
            ));
        }
    }
    Ok(())
}

/// Bytes a drill of `record` (and `base`) restores, for the free-space check.
pub fn size_of(record: &BackupRecord) -> u64 {
    archive::read_meta(&record.path).map_or(record.source_bytes, |m| m.bytes)
}

/// A time in milliseconds, for messages: `850 ms`, `41 s`, `3 min 20 s`.
pub fn show_ms(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", d.as_secs_f64()),
        _ => format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts_that_differ_are_named_table_by_table() {
        let rec: BTreeMap<String, u64> = [("a".into(), 3), ("b".into(), 1)].into();
        let same = rec.clone();
        assert_eq!(compare_rows(&rec, &same), None);
        let got: BTreeMap<String, u64> = [("a".into(), 2), ("c".into(), 0)].into();
        assert_eq!(
            compare_rows(&rec, &got).unwrap(),
            "table a has 2 rows, recorded 3; table b is missing (recorded 1 rows); \
             table c was not there at backup time"
        );
    }

    #[test]
    fn a_sweep_removes_only_drill_folders() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("steward-drill-x/tree/deep")).unwrap();
        std::fs::create_dir(root.path().join("keep")).unwrap();
        std::fs::write(root.path().join("steward-drill-file"), b"x").unwrap();
        let removed = Scratch::sweep(root.path());
        assert_eq!(removed, vec![root.path().join("steward-drill-x")]);
        assert!(root.path().join("keep").is_dir());
        assert!(root.path().join("steward-drill-file").is_file());
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(show_ms(850), "850 ms");
        assert_eq!(show_ms(41_200), "41.2 s");
        assert_eq!(show_ms(200_000), "3 min 20 s");
    }
}
