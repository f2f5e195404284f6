//! Text for people, written into the writer the caller gives (the command layer gives
//! stdout): each job's report, the host's status, a restore's plan and result, as tables
//! and lines or as JSON. Nothing here decides anything or reads the terminal.

pub mod jobs;
pub mod restore;
pub mod status;

use std::io::{self, Write};

/// `value` as pretty JSON, a line of its own.
pub fn json(out: &mut dyn Write, value: &impl serde::Serialize) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    writeln!(out, "{text}")
}

/// A Unix time as `2026-11-21 03:00:12Z`.
pub fn time(unix: i64) -> String {
    crate::clock::show(unix, "%Y-%m-%d %H:%M:%SZ")
}

/// Bytes in IEC units.
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}
