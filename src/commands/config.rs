//! `steward config check`: validate and print the effective configuration.

use std::process::ExitCode;

use crate::cli::ConfigCommand;
use crate::config::Config;

pub fn run(cfg: &Config, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { json } = cmd;
    let sets: Vec<_> = cfg.backup.sets.iter().collect();
    cfg.check_set_paths(&sets)?;
    if json {
        super::print_json(cfg)?;
    } else {
        println!("# configuration OK: {}", cfg.origin);
        println!("{}", toml::to_string_pretty(cfg)?);
    }
    Ok(ExitCode::SUCCESS)
}
