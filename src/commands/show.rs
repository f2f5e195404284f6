//! A job's report printed: its text (or JSON) on stdout, its failures on stderr.

use crate::config::Config;
use crate::jobs::{Done, Report};

/// Prints `report` (`json`: as JSON), then the job's failures; returns how it ended.
pub fn report(cfg: &Config, report: &Report, json: bool) -> anyhow::Result<Done> {
    crate::render::jobs::report(&mut std::io::stdout().lock(), cfg, report, json)?;
    for line in crate::render::jobs::errors(report) {
        eprintln!("steward: {line}");
    }
    Ok(report.done())
}
