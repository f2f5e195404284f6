//! `steward config check`: validate and print the configuration (as written, normalized;
//! `--json`: every value in effect).

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
        println!(
            "# As written, normalized: a valid config that reads back the same. Keys left out \
             have their defaults;\n# `steward config check --json` shows every value in effect."
        );
        print!("{}", cfg.effective);
    }
    Ok(ExitCode::SUCCESS)
}
