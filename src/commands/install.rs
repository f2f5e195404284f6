//! `steward install systemd|launchd` and `steward uninstall`: `packaging::install`, each
//! step printed as it happens.

use std::process::ExitCode;

use crate::cli::{InstallCommand, InstallMode, InstallTarget};
use crate::config::Config;
use crate::packaging::Mode;
use crate::packaging::install::{self, Manager, Request};

fn mode(m: InstallMode) -> Mode {
    match m {
        InstallMode::Timers => Mode::Timers,
        InstallMode::Daemon => Mode::Daemon,
    }
}

fn manager(t: InstallTarget) -> Manager {
    match t {
        InstallTarget::Systemd => Manager::Systemd,
        InstallTarget::Launchd => Manager::Launchd,
    }
}

fn say(line: &str) {
    println!("{line}");
}

pub fn install(cfg: &Config, cmd: InstallCommand) -> anyhow::Result<ExitCode> {
    let (request, dry_run) = match cmd {
        InstallCommand::Systemd {
            user,
            system: _,
            mode: m,
            dry_run,
            unit_dir,
            binary,
            randomized_delay,
        } => (
            Request::Systemd {
                user,
                mode: mode(m),
                unit_dir,
                binary,
                randomized_delay,
            },
            dry_run,
        ),
        InstallCommand::Launchd {
            agent: _,
            daemon,
            mode: m,
            dry_run,
            plist_dir,
            binary,
        } => (
            Request::Launchd {
                daemon,
                mode: mode(m),
                plist_dir,
                binary,
            },
            dry_run,
        ),
    };
    let plan = install::prepare(cfg, request)?;
    if let Some(note) = &plan.note {
        eprintln!("steward: note: {note}");
    }
    install::install(cfg, plan, dry_run, &say)?;
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(cfg: &Config, target: InstallTarget, dry_run: bool) -> anyhow::Result<ExitCode> {
    install::uninstall(cfg, manager(target), dry_run, &say)?;
    Ok(ExitCode::SUCCESS)
}
