//! Daily, weekly and monthly maintenance: SQLite care (checkpoint, VACUUM when there is
//! room, ANALYZE, optimize, integrity), log compression and pruning, scratch folders,
//! sampled backup verification, catalog history, and the capacity report.
//!
//! Every task honours `dry_run`: it says what it would do and changes nothing. The report
//! (runs, backup growth, disk forecast) is in `report.rs`.

mod report;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::backup::{self, Progress};
use crate::catalog::{BackupStatus, Catalog};
use crate::config::{Config, LogsTask, SqliteAction, Task};
use crate::services::Runner;

pub use report::{DiskForecast, ReportData, SetGrowth, days_until_full, report, report_data};

/// What one task did (or would do).
#[derive(Debug, Default, Serialize)]
pub struct TaskReport {
    pub task: String,
    pub done: Vec<String>,
    pub warnings: Vec<String>,
    pub bytes_reclaimed: u64,
    pub files_compressed: u64,
    pub files_removed: u64,
    /// Files this task removed or replaced by a compressed copy (not in dry runs).
    #[serde(skip)]
    pub gone: Vec<PathBuf>,
    /// The report text, for a `report` task.
    pub report: Option<String>,
}

/// A task that failed, naming what.
#[derive(Debug, thiserror::Error)]
#[error("{task}: {message}")]
pub struct TaskError {
    pub task: String,
    pub message: String,
}

fn fail(task: &str, m: impl std::fmt::Display) -> TaskError {
    TaskError {
        task: task.to_string(),
        message: m.to_string(),
    }
}

/// Runs `tasks` in order; a failed task does not stop the others.
pub fn run(
    config: &Config,
    catalog: &Catalog,
    tasks: &[Task],
    dry_run: bool,
    now: i64,
    runner: &dyn Runner,
    progress: &dyn Progress,
) -> Vec<Result<TaskReport, TaskError>> {
    tasks
        .iter()
        .map(|t| match t {
            Task::Sqlite {
                databases,
                actions,
                quiesce,
                vacuum_margin,
            } => sqlite_task(
                config,
                databases,
                actions,
                quiesce,
                *vacuum_margin,
                dry_run,
                runner,
                progress,
            ),
            Task::Logs(l) => {
                logs_task(l, dry_run, SystemTime::now()).map(|r| ledger(config, now, r))
            }
            Task::Tmp { paths, max_age } => {
                tmp_task(paths, *max_age, dry_run).map(|r| ledger(config, now, r))
            }
            Task::VerifyBackups { sample } => verify_task(catalog, *sample, dry_run, progress),
            Task::VerifyOffsite { sample } => {
                offsite_task(config, catalog, *sample, dry_run, progress)
            }
            Task::Catalog { keep_runs } => {
                let name = "catalog".to_string();
                let before = now - keep_runs.as_secs() as i64;
                if dry_run {
                    Ok(TaskReport {
                        task: name,
                        done: vec![format!(
                            "would forget runs and disk samples before {before}"
                        )],
                        ..Default::default()
                    })
                } else {
                    catalog
                        .forget_before(before)
                        .map(|n| TaskReport {
                            task: name.clone(),
                            done: vec![format!("forgot {n} old rows")],
                            ..Default::default()
                        })
                        .map_err(|e| fail(&name, e))
                }
            }
            Task::Report => report(config, catalog, now).map(|text| TaskReport {
                task: "report".into(),
                done: vec!["capacity report".into()],
                report: Some(text),
                ..Default::default()
            }),
        })
        .collect()
}

/// Records what a task removed in the change guard's ledger, so the next backup does not
/// count it as lost; a ledger that cannot be written is a warning (a false alarm may
/// follow), never a failed task.
fn ledger(config: &Config, now: i64, mut r: TaskReport) -> TaskReport {
    if let Err(e) = crate::backup::guard::record_maintained(&config.state_dir, &r.gone, now) {
        r.warnings.push(format!(
            "recording the removed files for the change guard failed: {e}"
        ));
    }
    r
}

/// The built-in daily task: the rollback copies of restores past `[restore]
/// keep-rollbacks` are removed, except those written into after the swap, which are warned
/// about every day until a human looks (`steward restore --cleanup`).
pub fn rollbacks_task(config: &Config, now: i64, dry_run: bool) -> Result<TaskReport, TaskError> {
    let name = "restore rollback copies";
    let e = crate::restore::rollbacks::expire(config, now, dry_run).map_err(|e| fail(name, e))?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut r = TaskReport {
        task: name.into(),
        files_removed: e.removed.len() as u64,
        bytes_reclaimed: e.removed.iter().map(|k| k.bytes).sum(),
        ..Default::default()
    };
    for k in &e.removed {
        r.done.push(format!(
            "{verb} {} (from the restore of {})",
            k.path.display(),
            k.id
        ));
    }
    if e.kept > 0 {
        r.done.push(format!(
            "{} copies kept (younger than keep-rollbacks)",
            e.kept
        ));
    }
    for f in &e.failed {
        r.warnings
            .push(format!("not removed (tried again tomorrow): {f}"));
    }
    for k in &e.changed {
        r.warnings.push(format!(
            "{} was written into after the restore of {} replaced it: it is kept; look at \
             it, then `steward restore --cleanup` removes it",
            k.path.display(),
            k.id
        ));
    }
    Ok(r)
}

fn size_with_wal(db: &Path) -> u64 {
    let side = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
    };
    fs::metadata(db).map_or(0, |m| m.len()) + side("-wal")
}

/// Runs `sql` on `conn`, waiting out other writers' locks for a while.
fn exec_busy(conn: &rusqlite::Connection, sql: &str) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match conn.execute_batch(sql) {
            Ok(()) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && tries < 5 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(200 * tries));
            }
            Err(rusqlite::Error::SqliteFailure(e, m))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                return Err(format!(
                    "{sql}: the database stayed locked by another process ({})",
                    m.unwrap_or_else(|| e.to_string())
                ));
            }
            Err(e) => return Err(format!("{sql}: {e}")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sqlite_task(
    config: &Config,
    databases: &[PathBuf],
    actions: &[SqliteAction],
    quiesce: &[String],
    margin: u64,
    dry_run: bool,
    runner: &dyn Runner,
    progress: &dyn Progress,
) -> Result<TaskReport, TaskError> {
    let name = "sqlite".to_string();
    let mut rep = TaskReport {
        task: name.clone(),
        ..Default::default()
    };
    let quiesced = if quiesce.is_empty() || dry_run {
        None
    } else {
        Some(
            crate::services::quiesce(&config.services, quiesce, runner, |m| progress.note(m))
                .map_err(|e| fail(&name, e))?,
        )
    };
    let mut result = Ok(());
    for db in databases {
        let shown = db.display().to_string();
        if dry_run {
            rep.done.push(format!(
                "would run {actions:?} on {shown} ({} bytes)",
                size_with_wal(db)
            ));
            continue;
        }
        let conn = match rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        ) {
            Ok(c) => c,
            Err(e) => {
                result = Err(fail(&name, format!("{shown}: {e}")));
                break;
            }
        };
        let _ = conn.busy_timeout(Duration::from_secs(30));
        for action in actions {
            let step = match action {
                SqliteAction::WalCheckpoint => exec_busy(&conn, "PRAGMA wal_checkpoint(TRUNCATE);")
                    .map(|()| format!("{shown}: WAL checkpointed")),
                SqliteAction::Analyze => {
                    exec_busy(&conn, "ANALYZE;").map(|()| format!("{shown}: analyzed"))
                }
                SqliteAction::Optimize => {
                    exec_busy(&conn, "PRAGMA optimize;").map(|()| format!("{shown}: optimized"))
                }
                SqliteAction::IntegrityCheck => conn
                    .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                    .map_err(|e| format!("integrity_check: {e}"))
                    .and_then(|s| {
                        if s == "ok" {
                            Ok(format!("{shown}: integrity ok"))
                        } else {
                            Err(format!("integrity_check: {s}"))
                        }
                    }),
                SqliteAction::Vacuum => {
                    let before = size_with_wal(db);
                    let dir = db.parent().unwrap_or(Path::new("/"));
                    let free = crate::fsutil::free_space(dir).unwrap_or(0);
                    if free < before.saturating_add(margin) {
                        rep.warnings.push(format!(
                            "{shown}: VACUUM skipped: {} free, it may need {} (the database plus the margin)",
                            bytesize::ByteSize(free).display().iec(),
                            bytesize::ByteSize(before.saturating_add(margin)).display().iec()
                        ));
                        continue;
                    }
                    exec_busy(&conn, "VACUUM;")
                        .and_then(|()| exec_busy(&conn, "PRAGMA wal_checkpoint(TRUNCATE);"))
                        .map(|()| {
                            let after = size_with_wal(db);
                            let saved = before.saturating_sub(after);
                            rep.bytes_reclaimed += saved;
                            format!(
                                "{shown}: vacuumed, {} reclaimed",
                                bytesize::ByteSize(saved).display().iec()
                            )
                        })
                }
            };
            match step {
                Ok(line) => rep.done.push(line),
                Err(e) => {
                    result = Err(fail(&name, format!("{shown}: {e}")));
                    break;
                }
            }
        }
        if result.is_err() {
            break;
        }
    }
    if let Some(q) = quiesced {
        let down = q.resume();
        if result.is_ok() && !down.is_empty() {
            result = Err(fail(
                &name,
                down.iter()
                    .map(std::string::ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
    }
    result.map(|()| rep)
}

/// True when another process has `path` open (Linux: /proc/*/fd). Where that cannot be
/// known, files are assumed open only if younger than a minute.
fn open_elsewhere(path: &Path) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return fs::metadata(path)
            .and_then(|m| m.modified())
            .map_or(true, |t| {
                t.elapsed().unwrap_or_default() < Duration::from_mins(1)
            });
    };
    let me = std::process::id().to_string();
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for p in procs.flatten() {
        let pid = p.file_name();
        if pid.to_string_lossy() == me || !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(fds) = fs::read_dir(p.path().join("fd")) {
            for fd in fds.flatten() {
                if fs::read_link(fd.path()).is_ok_and(|l| l == target) {
                    return true;
                }
            }
        }
    }
    false
}

/// Compresses `src` to `src.zst` (keeping mode and mtime); with `truncate`, empties the
/// original instead of removing it (copytruncate).
fn compress_file(src: &Path, truncate: bool) -> io::Result<u64> {
    let meta = fs::metadata(src)?;
    let mut dst_name = src.as_os_str().to_owned();
    dst_name.push(".zst");
    let dst = PathBuf::from(dst_name);
    let tmp = dst.with_extension("zst.partial");
    {
        let mut input = File::open(src)?;
        let out = File::create(&tmp)?;
        let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
        enc.include_checksum(true)?;
        io::copy(&mut input, &mut enc)?;
        let out = enc.finish()?;
        out.set_permissions(meta.permissions())?;
        out.set_modified(meta.modified()?)?;
        out.sync_all()?;
    }
    fs::rename(&tmp, &dst)?;
    let compressed = fs::metadata(&dst)?.len();
    if truncate {
        File::options().write(true).open(src)?.set_len(0)?;
    } else {
        fs::remove_file(src)?;
    }
    Ok(meta.len().saturating_sub(compressed))
}

fn logs_task(t: &LogsTask, dry_run: bool, now: SystemTime) -> Result<TaskReport, TaskError> {
    let name = "logs".to_string();
    let mut rep = TaskReport {
        task: name.clone(),
        ..Default::default()
    };
    let glob = globset::Glob::new(&t.pattern)
        .map_err(|e| fail(&name, e))?
        .compile_matcher();
    for dir in &t.paths {
        // (path, mtime, size), newest first.
        let mut files: Vec<(PathBuf, SystemTime, u64)> = Vec::new();
        for e in walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
        {
            if !e.file_type().is_file() || !glob.is_match(e.file_name()) {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            files.push((e.path().to_path_buf(), m.modified().unwrap_or(now), m.len()));
        }
        files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        let age = |t0: SystemTime| now.duration_since(t0).unwrap_or_default();
        let mut remove = vec![false; files.len()];
        if let Some(max) = t.delete_after {
            for (i, f) in files.iter().enumerate().skip(t.keep_min_files) {
                if age(f.1) > max {
                    remove[i] = true;
                }
            }
        }
        if let Some(cap) = t.max_total_size {
            let mut total: u64 = files
                .iter()
                .zip(&remove)
                .filter(|(_, r)| !**r)
                .map(|(f, _)| f.2)
                .sum();
            for i in (t.keep_min_files..files.len()).rev() {
                if total <= cap {
                    break;
                }
                if !remove[i] {
                    remove[i] = true;
                    total -= files[i].2;
                }
            }
        }
        for (i, (path, mtime, size)) in files.iter().enumerate() {
            let shown = path.display();
            if remove[i] {
                if dry_run {
                    rep.done.push(format!("would remove {shown}"));
                } else {
                    fs::remove_file(path).map_err(|e| fail(&name, format!("{shown}: {e}")))?;
                    rep.done.push(format!("removed {shown}"));
                    rep.gone.push(path.clone());
                }
                rep.files_removed += 1;
                rep.bytes_reclaimed += size;
                continue;
            }
            let compressible = t.compress_after.is_some_and(|c| age(*mtime) > c)
                && path
                    .extension()
                    .is_none_or(|e| e != "zst" && e != "gz" && e != "xz" && e != "bz2");
            if !compressible {
                continue;
            }
            let busy = open_elsewhere(path);
            if busy && !t.copy_truncate {
                rep.warnings
                    .push(format!("{shown}: open in another process; not compressed"));
                continue;
            }
            if dry_run {
                rep.done.push(format!("would compress {shown}"));
                rep.files_compressed += 1;
                continue;
            }
            let saved =
                compress_file(path, busy).map_err(|e| fail(&name, format!("{shown}: {e}")))?;
            rep.done.push(format!("compressed {shown}"));
            if !busy {
                rep.gone.push(path.clone());
            }
            rep.files_compressed += 1;
            rep.bytes_reclaimed += saved;
        }
    }
    Ok(rep)
}

fn tmp_task(paths: &[PathBuf], max_age: Duration, dry_run: bool) -> Result<TaskReport, TaskError> {
    let name = "tmp".to_string();
    let mut rep = TaskReport {
        task: name.clone(),
        ..Default::default()
    };
    let now = SystemTime::now();
    for dir in paths {
        for e in walkdir::WalkDir::new(dir)
            .min_depth(1)
            .contents_first(true)
            .into_iter()
            .filter_map(Result::ok)
        {
            let Ok(m) = e.metadata() else { continue };
            let old = m
                .modified()
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > max_age);
            if !old {
                continue;
            }
            let shown = e.path().display();
            if e.file_type().is_dir() {
                // Only folders left empty.
                if !dry_run && fs::remove_dir(e.path()).is_ok() {
                    rep.done.push(format!("removed empty folder {shown}"));
                }
                continue;
            }
            if dry_run {
                rep.done.push(format!("would remove {shown}"));
            } else {
                fs::remove_file(e.path()).map_err(|err| fail(&name, format!("{shown}: {err}")))?;
                rep.done.push(format!("removed {shown}"));
                rep.gone.push(e.path().to_path_buf());
            }
            rep.files_removed += 1;
            rep.bytes_reclaimed += m.size();
        }
    }
    Ok(rep)
}

/// The sampled offsite check: the copies checked longest ago first.
fn offsite_task(
    config: &Config,
    catalog: &Catalog,
    sample: f64,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<TaskReport, TaskError> {
    let name = "verify-offsite".to_string();
    let mut rep = TaskReport {
        task: name.clone(),
        ..Default::default()
    };
    let mut failed = Vec::new();
    for t in &config.offsite {
        let mut copies = catalog
            .offsite_copies(Some(&t.name))
            .map_err(|e| fail(&name, e))?;
        copies.sort_by_key(|c| c.checked_at.unwrap_or(0));
        let n = ((copies.len() as f64) * sample).ceil() as usize;
        if dry_run {
            rep.done.extend(
                copies
                    .iter()
                    .take(n)
                    .map(|c| format!("would check {}", c.key)),
            );
            continue;
        }
        let store = crate::offsite::Store::open(t).map_err(|e| fail(&name, e))?;
        // The whole audit (signatures, the bucket against the catalog, the chain) every
        // time; the download of a share, the longest-unchecked first.
        let sampled: Vec<&str> = copies
            .iter()
            .take(n)
            .map(|c| c.backup_id.as_str())
            .collect();
        let own = crate::offsite::Signer::load(&config.state_dir).map_err(|e| fail(&name, e))?;
        let trust = crate::offsite::Trust::new(&t.signing_keys, own.as_ref());
        let scratch = config.state_dir.join("offsite-check");
        let tz = jiff::tz::TimeZone::system();
        let keep = |set: &str| config.offsite_keep(t, set);
        let depth = crate::offsite::Depth {
            download: &|c| sampled.contains(&c.backup_id.as_str()),
            identity: None,
            scratch: &scratch,
            keep: &keep,
            tz: &tz,
        };
        let found = crate::offsite::audit(
            t,
            &store,
            catalog,
            &trust,
            &crate::fsutil::hostname(),
            &depth,
            progress,
        )
        .map_err(|e| fail(&name, e))?;
        for f in found {
            if !f.ok {
                failed.push(format!(
                    "{}: {}",
                    f.id.as_deref().unwrap_or(&f.key),
                    f.error
                ));
            } else if f.id.as_deref().is_some_and(|id| sampled.contains(&id)) {
                rep.done.push(format!("checked {}", f.key));
            }
        }
    }
    if failed.is_empty() {
        Ok(rep)
    } else {
        Err(fail(&name, failed.join("; ")))
    }
}

fn verify_task(
    catalog: &Catalog,
    sample: f64,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<TaskReport, TaskError> {
    let name = "verify-backups".to_string();
    let mut rep = TaskReport {
        task: name.clone(),
        ..Default::default()
    };
    let mut all: Vec<_> = catalog
        .backups(None)
        .map_err(|e| fail(&name, e))?
        .into_iter()
        .filter(|b| b.status == BackupStatus::Verified)
        .collect();
    // The ones checked longest ago first, so a sample rotates through everything.
    all.sort_by_key(|b| b.verified_at.unwrap_or(0));
    let n = ((all.len() as f64) * sample).ceil() as usize;
    let mut failed = Vec::new();
    for b in all.iter().take(n) {
        if dry_run {
            rep.done.push(format!("would verify {}", b.id));
            continue;
        }
        match backup::verify_backup(catalog, b, progress) {
            Ok(o) if o.ok => rep.done.push(format!("verified {}", b.id)),
            Ok(o) => failed.push(o.error.unwrap_or_default()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if failed.is_empty() {
        Ok(rep)
    } else {
        Err(fail(&name, failed.join("; ")))
    }
}
