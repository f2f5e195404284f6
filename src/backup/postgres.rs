//! A PostgreSQL dump before a set is archived: `pg_dump --format=custom` into a partial
//! file beside the configured dump path, flushed and renamed over it only when pg_dump
//! succeeded, so the set never holds a half-written dump. (A tar entry needs its size up
//! front, so the dump is a file, not a stream; `pg_restore` reads it back.)

use std::process::Command;

use crate::config::PostgresSource;

/// Why the dump did not happen.
#[derive(Debug, thiserror::Error)]
#[error("postgresql {database}: {message}")]
pub struct DumpError {
    pub database: String,
    pub message: String,
}

/// Dumps the database to its dump path.
pub fn dump(src: &PostgresSource) -> Result<(), DumpError> {
    let fail = |message: String| DumpError {
        database: src.database.clone(),
        message,
    };
    let mut partial = src.dump.clone().into_os_string();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    if let Some(dir) = src.dump.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    }
    let _ = std::fs::remove_file(&partial);
    let mut cmd = Command::new(&src.pg_dump);
    cmd.arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--file={}", partial.display()))
        .arg(format!("--dbname={}", src.database));
    if let Some(h) = &src.host {
        cmd.arg(format!("--host={h}"));
    }
    if let Some(p) = src.port {
        cmd.arg(format!("--port={p}"));
    }
    if let Some(u) = &src.user {
        cmd.arg(format!("--username={u}"));
    }
    if let Some(p) = &src.password {
        cmd.env("PGPASSWORD", p.read().map_err(fail)?);
    }
    let out = crate::services::run_captured(cmd, src.timeout, true, None)
        .map_err(|e| fail(format!("cannot run {}: {e}", src.pg_dump)))?;
    if !out.success {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(format!("pg_dump failed: {}", out.output.trim())));
    }
    let sync = std::fs::File::open(&partial).and_then(|f| f.sync_all());
    sync.and_then(|()| std::fs::rename(&partial, &src.dump))
        .map_err(|e| fail(format!("{}: {e}", src.dump.display())))
}
