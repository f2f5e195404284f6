//! The current time. Debug builds honour `STEWARD_NOW` (Unix seconds) so tests can move
//! the clock (reminders, backoff) without waiting; release builds always use the system
//! clock.

/// Now, in Unix seconds.
pub fn now() -> i64 {
    #[cfg(debug_assertions)]
    if let Some(t) = std::env::var("STEWARD_NOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return t;
    }
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `t` as the compact UTC stamp used in archive and restore names: `YYYYMMDDTHHMMSSZ`.
pub fn stamp(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    // Cannot fail for a four-digit year, which every clock reading has.
    t.to_offset(time::UtcOffset::UTC)
        .format(f)
        .unwrap_or_default()
}
