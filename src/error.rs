//! Exit codes and the error-chain formatter. Imports nothing from the crate (the mapping
//! from an error to its exit code is `crate::exit_code`, at the top).

/// Success; `check`: all OK.
pub const OK: u8 = 0;
/// `check`: a warning.
pub const WARNING: u8 = 1;
/// `check`: critical; other commands: the job failed (clap uses 2 for usage errors too).
pub const FAILED: u8 = 2;
/// Another run holds the job's lock (EX_TEMPFAIL).
pub const LOCKED: u8 = 75;
/// The configuration is invalid (EX_CONFIG).
pub const CONFIG: u8 = 78;

/// A command's failure that is already reported (e.g. a table with failed rows), carrying
/// only the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    pub message: String,
}

/// An error with its causes, `a: b: c` (for messages stored or mailed, where `{:#}` of
/// anyhow is not at hand).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
