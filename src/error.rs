//! Exit codes, the error-chain formatter, and the rules every error in steward follows.
//! Imports nothing from the crate (the mapping from an error to its exit code is
//! `crate::exit_code`, at the top).
//!
//! # Error rules
//!
//! 1. **Each module has its own errors**: a `thiserror` enum beside the code that fails,
//!    named after the module (`ArchiveError`, `WalkError`, `RestoreError`). A leaf returns
//!    its own error, never a caller's catch-all; a caller wraps it (`#[from]`, or
//!    `#[error(transparent)]` when it adds nothing).
//! 2. **One I/O convention**: the message names the path (or the thing: a key, a command,
//!    a pattern) and the cause is the `#[source]`, never also in the message:
//!    `#[error("{path}")] Io { path, #[source] source: io::Error }`. A chain then reads
//!    `context: path: cause` once.
//! 3. **Text that is stored, mailed or put in a run record** is [`chain`] of the error
//!    (every cause, `a: b: c`). `{e}` alone drops the causes, and `{e:#}` chains only
//!    `anyhow` errors.
//! 4. **`anyhow` only where many modules' errors meet to be reported**: `commands/`,
//!    `jobs/` and `daemon/`, each adding what it was doing with `.context(..)`. Everything
//!    below them returns typed errors.
//! 5. **Exit codes** come from the most specific cause in the chain (`crate::exit_code`):
//!    a configuration error is [`CONFIG`], another run's lock [`LOCKED`], anything else
//!    [`FAILED`].

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
