//! Thin adapters from parsed subcommands to core modules: load the config, take locks,
//! call the core, print the result (table or `--json`).

mod backup;
mod backups;
mod config;
mod progress;
mod prune;
mod restore;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = load_config(cli.config.as_deref())?;
    let restoring = matches!(cli.command, Command::Restore(_));
    if !restoring && let Ok(Some(j)) = crate::restore::pending(&cfg.state_dir) {
        eprintln!(
            "steward: warning: the restore of {} was interrupted; run `steward restore --resume`",
            j.id
        );
    }
    match cli.command {
        Command::Backup(a) => backup::run(&cfg, a),
        Command::Backups(c) => backups::run(&cfg, c),
        Command::Verify(a) => verify::run(&cfg, a),
        Command::Prune(a) => prune::run(&cfg, a),
        Command::Restore(a) => restore::run(&cfg, a),
        Command::Config(c) => config::run(&cfg, c),
    }
}

/// Finds and validates the configuration (the one place that reads the environment for it).
fn load_config(explicit: Option<&std::path::Path>) -> anyhow::Result<crate::config::Config> {
    let env = std::env::var("STEWARD_CONFIG").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let path = crate::config::locate(explicit, env.as_deref(), home.as_deref());
    Ok(crate::config::load(path.as_deref())?)
}

/// Opens the catalog in the configured state dir.
fn open_catalog(cfg: &crate::config::Config) -> anyhow::Result<crate::catalog::Catalog> {
    crate::catalog::Catalog::open(&cfg.state_dir)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A Unix time as `2026-11-21 03:00:12Z`.
fn show_time(unix: i64) -> String {
    let shown = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(shown).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Bytes in IEC units.
fn show_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}
