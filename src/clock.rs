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
