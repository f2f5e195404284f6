//! Thin adapters from parsed subcommands to the core: load the config, turn arguments
//! into a job's options, call the job, print its report (table or `--json`). No command
//! file calls another; what several print is `show`'s (and `crate::render`'s).

mod alert;
mod backups;
mod config;
mod daemon;
mod install;
mod offsite;
mod progress;
mod restore;
mod run;
mod serve;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::jobs;

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if !matches!(cli.command, Command::Daemon) {
        // `steward backups list | head -1`: a closed stdout ends the command quietly with
        // the usual status of a pipeline's writer (SIGPIPE), never a panic in println!.
        // Sockets are unaffected (std writes them with MSG_NOSIGNAL / SO_NOSIGPIPE). The
        // daemon keeps ignoring it: a log reader going away must not stop it.
        crate::fsutil::default_sigpipe();
    }
    // Neither needs (nor may be stopped by) a configuration.
    match &cli.command {
        Command::Completions { shell } => {
            crate::cli::completions(*shell, &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            crate::cli::man(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let scheduled = matches!(cli.command, Command::Run { .. } | Command::Daemon);
    let cfg = match load_config(cli.config.as_deref()) {
        Ok(cfg) => {
            if scheduled {
                crate::jobs::record_config(&cfg, None, &warn);
            }
            cfg
        }
        Err(e) => {
            // A timer or the daemon has nobody reading its stderr: alert instead of going
            // silent, through what is left of the file.
            if scheduled
                && let Some(rest) = config_path(cli.config.as_deref())
                    .as_deref()
                    .and_then(crate::config::salvage)
            {
                crate::jobs::record_config(&rest, Some(&format!("{e:#}")), &warn);
            }
            return Err(e);
        }
    };
    let restoring = matches!(cli.command, Command::Restore(_));
    if !restoring {
        warn_interrupted_restore(&cfg);
    }
    let ui = ui();
    let job = |r: anyhow::Result<jobs::Report>, json: bool| -> anyhow::Result<ExitCode> {
        show::report(&cfg, &r?, json).map(exit)
    };
    match cli.command {
        Command::Backup(a) => {
            let options = jobs::backup::BackupJob {
                sets: a.sets,
                force: a.force,
                full: a.full,
            };
            job(
                jobs::backup::run(&cfg, &options, ui).map(jobs::Report::Backup),
                a.json,
            )
        }
        Command::Backups(c) => backups::run(&cfg, c),
        Command::Verify(a) if a.offsite => {
            offsite::verify(&cfg, a.target.as_deref(), a.identity.as_deref(), a.json).map(exit)
        }
        Command::Verify(a) => {
            let choice = match (a.id, a.all) {
                (Some(id), _) => jobs::verify::Choice::Id(id),
                (None, true) => jobs::verify::Choice::All,
                // --latest, and the default: the newest backup of each set.
                (None, false) => jobs::verify::Choice::Latest,
            };
            job(
                jobs::verify::run(&cfg, &choice, a.set.as_deref(), ui).map(jobs::Report::Verify),
                a.json,
            )
        }
        Command::Drill(a) => {
            let from = match a.offsite {
                None => jobs::drill::From::Local,
                Some(target) => jobs::drill::From::Offsite {
                    target: Some(target),
                    identity: a.identity,
                },
            };
            let options = jobs::drill::DrillJob { sets: a.sets, from };
            job(
                jobs::drill::run(&cfg, &options, ui).map(jobs::Report::Drill),
                a.json,
            )
        }
        Command::Prune(a) => job(
            jobs::prune::run(&cfg, a.set.as_deref(), a.dry_run, ui).map(jobs::Report::Prune),
            a.json,
        ),
        Command::Restore(a) => restore::run(&cfg, a),
        Command::Offsite(c) => offsite::run(&cfg, c),
        Command::Config(c) => config::run(&cfg, c),
        Command::Check { json } => job(jobs::check::run(&cfg, ui).map(jobs::Report::Check), json),
        Command::Alert(c) => alert::run(&cfg, c),
        Command::Maintain {
            period,
            dry_run,
            json,
        } => job(
            jobs::maintain::run(&cfg, period.into(), dry_run, ui).map(jobs::Report::Maintain),
            json,
        ),
        Command::Report { json } => run::report(&cfg, json),
        Command::Run { job } => run::run(&cfg, &job),
        Command::Status { json } => run::status(&cfg, json),
        Command::Serve { listen } => serve::serve(cfg, listen),
        Command::Fleet { json } => serve::fleet(&cfg, json),
        Command::Schedule { between, job, json } => run::schedule(&cfg, &between, &job, json),
        Command::Daemon => daemon::run(cfg),
        Command::Install(c) => install::install(&cfg, c),
        Command::Uninstall { target, dry_run } => install::uninstall(&cfg, target, dry_run),
        Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
    }
}

/// Tells about an interrupted restore and abandoned staging folders on every command, so
/// nobody misses that services or data may be in between.
fn warn_interrupted_restore(cfg: &crate::config::Config) {
    match crate::restore::pending(&cfg.state_dir) {
        Ok(Some(j)) => {
            let down = if j.stopped.is_empty() {
                String::new()
            } else {
                format!(" (services it stopped: {})", j.stopped.join(", "))
            };
            eprintln!(
                "steward: warning: the restore of {} was interrupted{down}; run `steward restore --resume`",
                j.id
            );
        }
        Ok(None) => {}
        Err(e) => eprintln!("steward: warning: {e:#}"),
    }
    for p in crate::restore::abandoned(cfg) {
        eprintln!(
            "steward: warning: abandoned restore staging folder {}; `steward restore --cleanup` removes it",
            p.display()
        );
    }
}

/// Where the configuration is (the one place that reads the environment for it); `None`:
/// the embedded default.
fn config_path(explicit: Option<&std::path::Path>) -> Option<PathBuf> {
    let env = std::env::var("STEWARD_CONFIG").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    crate::config::locate(explicit, env.as_deref(), home.as_deref())
}

/// Finds and validates the configuration.
fn load_config(explicit: Option<&std::path::Path>) -> anyhow::Result<crate::config::Config> {
    Ok(crate::config::load(config_path(explicit).as_deref())?)
}

/// Opens the catalog in the configured state dir.
fn open_catalog(cfg: &crate::config::Config) -> anyhow::Result<crate::catalog::Catalog> {
    crate::catalog::Catalog::open(&cfg.state_dir)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    Ok(crate::render::json(&mut std::io::stdout().lock(), value)?)
}

/// Tells on stderr about trouble around a job that does not fail it.
fn warn(message: &str) {
    eprintln!("steward: warning: {message}");
}

/// What a job gets from the terminal: warnings on stderr, a progress display there.
fn ui() -> jobs::Ui<'static> {
    jobs::Ui {
        warn: &warn,
        progress: &progress::for_stderr,
        queue: false,
    }
}

/// A job's exit code.
fn exit(done: crate::jobs::Done) -> ExitCode {
    ExitCode::from(done.code)
}
