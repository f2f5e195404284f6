//! `steward config check`: validate and print the configuration (as written, normalized;
//! `--json`: every value in effect).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ConfigCommand;
use crate::config::Config;

pub fn run(cfg: &Config, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { json } = cmd;
    // Valid, but a path that cannot be read now fails its set's backups: said.
    for set in &cfg.backup.sets {
        for m in cfg.missing_set_paths(set) {
            eprintln!("steward: warning: {m}");
        }
    }
    // The page's token file is read only where the page is served, so that a mistake
    // there costs the page, not the jobs; here it is refused like the config it is.
    if let Some(path) = &cfg.serve.token_file
        && let Err(m) = crate::config::read_token(path)
    {
        return Err(crate::serve::ServeError::Token {
            path: path.clone(),
            message: m,
        })
        .context("serve.token-file");
    }
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
