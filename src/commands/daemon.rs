//! `steward daemon`: the scheduler daemon, its log lines on stderr.

use std::process::ExitCode;

use crate::config::Config;

pub fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    crate::daemon::run(cfg, log)?;
    Ok(ExitCode::SUCCESS)
}

/// A log line: no timestamp under journald (it adds its own), JSON with `log-format`.
fn log(json: bool, msg: &str) {
    if json {
        let line = serde_json::json!({ "ts": crate::clock::now(), "msg": msg });
        eprintln!("{line}");
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        eprintln!("steward: {msg}");
    } else {
        let now = crate::clock::show(crate::clock::now(), "%Y-%m-%dT%H:%M:%SZ");
        eprintln!("{now} steward: {msg}");
    }
}
