//! steward's entry point: parse, run, map the error to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = steward::cli::Cli::parse();
    match steward::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("steward: error: {err:#}");
            steward::exit_code(&err)
        }
    }
}
