//! Backups: taking a set's archive (`create`), checking archives (`verify`), and
//! rebuilding the catalog from the backup disk (`reindex`).
//!
//! Nothing here prints: progress and notes go through [`Progress`], results are returned.

pub mod archive;
mod create;
pub mod diff;
pub mod guard;
pub mod index;
pub mod marks;
mod postgres;
mod prune;
mod redis;
pub mod sqlite;
pub use sqlite::open_live;
mod stored;
pub mod walk;

use std::path::{Path, PathBuf};

pub use create::{BackupOptions, BackupSummary, SetOutcome, backup_set};
pub use prune::{Action, PruneReport, PruneRow, prune_set};
pub use stored::{ReindexReport, VerifyOutcome, reindex, verify_backup};

/// Failures of a backup, verify or reindex, each naming the set, file or archive.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Walk(#[from] walk::WalkError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Sqlite(#[from] sqlite::SnapshotError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("destination {path} has {free} free, less than backup.min-free-space ({needed})")]
    NoSpace {
        path: PathBuf,
        free: bytesize::ByteSize,
        needed: bytesize::ByteSize,
    },
    #[error(transparent)]
    Service(#[from] crate::services::ServiceError),
    #[error("{outcome}, but services did not come back: {errors}")]
    ServicesDown { outcome: String, errors: String },
    #[error("stopped by a signal; the partial archive was removed")]
    Interrupted,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Postgres(#[from] postgres::DumpError),
    #[error(
        "{path}: changed between folder and file during the backup; the differential was \
         dropped"
    )]
    KindChanged { path: PathBuf },
    #[error("{path}: verification after writing failed; the archive was discarded")]
    VerifyAfterWrite {
        path: PathBuf,
        #[source]
        source: archive::ArchiveError,
    },
}

impl BackupError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        move |source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the backup side works, taken once from the config: the backup folders
/// (`[backup]`), the change guard's facts (the state dir), how archives are written.
#[derive(Clone, Copy)]
pub struct Dest<'a> {
    pub backup: &'a crate::config::BackupConfig,
    pub state_dir: &'a Path,
    pub archive: archive::ArchiveOptions,
}

impl<'a> Dest<'a> {
    /// The backup side of `config`.
    pub fn of(config: &'a crate::config::Config) -> Self {
        Dest {
            backup: &config.backup,
            state_dir: &config.state_dir,
            archive: archive::ArchiveOptions::of(&config.backup),
        }
    }
}

/// Backs up `set`; with `quiesce-on-backup`, its services (of `services`) are stopped
/// first and always started again, whatever the backup's result.
pub fn backup_quiesced(
    dest: Dest<'_>,
    services: &[crate::config::ServiceConfig],
    catalog: &crate::catalog::Catalog,
    set: &crate::config::BackupSet,
    options: BackupOptions,
    runner: &dyn crate::services::Runner,
    progress: &dyn Progress,
) -> Result<SetOutcome, BackupError> {
    // A fresh RDB first, while Redis still runs (a quiesce would stop it).
    if let Some(r) = &set.redis {
        progress.note(&format!("asking redis {} for a fresh save", r.address));
        redis::fresh_save(r)?;
    }
    if let Some(p) = &set.postgresql {
        progress.note(&format!("dumping postgresql database {}", p.database));
        postgres::dump(p)?;
    }
    if !set.quiesce_on_backup || set.quiesce.is_empty() {
        return backup_set(dest, catalog, set, options, progress);
    }
    let quiesced = crate::services::quiesce(services, &set.quiesce, runner, |m| progress.note(m))?;
    let result = backup_set(dest, catalog, set, options, progress);
    let down = quiesced.resume();
    if down.is_empty() {
        return result;
    }
    let errors = down
        .iter()
        .map(std::string::ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let outcome = match &result {
        Ok(SetOutcome::Created(s)) => format!("backup {} was written", s.id),
        Ok(SetOutcome::Unchanged { .. }) => "the set was unchanged".to_string(),
        Err(e) => format!("the backup failed ({})", crate::error::chain(e)),
    };
    Err(BackupError::ServicesDown { outcome, errors })
}

/// Set by SIGTERM/SIGINT (registered by the command layer): a backup stops at the next
/// entry and removes its partial archive.
pub fn stop_flag() -> &'static std::sync::Arc<std::sync::atomic::AtomicBool> {
    static FLAG: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    FLAG.get_or_init(Default::default)
}

/// Where long work reports how far it is. Implemented by the command layer (a progress
/// bar on a terminal, plain log lines otherwise); core code never prints.
pub trait Progress {
    /// A new phase begins (`archiving databases`, `verifying ...`) with `total` bytes of work.
    fn phase(&self, name: &str, total: u64);
    /// `n` more bytes of the current phase are done.
    fn advance(&self, n: u64);
    /// Something worth telling that is not an error (a skipped socket, a changed file).
    fn note(&self, message: &str);
}

/// A [`Progress`] that reports nothing, for tests and `--json` runs.
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn note(&self, _: &str) {}
}
