//! The one clock. Every timestamp steward records or shows comes from here (jiff, the
//! project's one time library). Debug builds honour `STEWARD_NOW` (Unix seconds) so tests
//! can move the clock (reminders, backoff, names) without waiting; release builds always
//! use the system clock.

use jiff::Timestamp;

/// Now.
pub fn now_ts() -> Timestamp {
    #[cfg(debug_assertions)]
    if let Some(t) = std::env::var("STEWARD_NOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .and_then(|s| Timestamp::from_second(s).ok())
    {
        return t;
    }
    Timestamp::now()
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    now_ts().as_second()
}

/// `t` as the compact UTC stamp used in archive and restore names: `YYYYMMDDTHHMMSSZ`.
pub fn stamp(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Parses a [`stamp`] back; `None` when `s` is not one.
pub fn parse_stamp(s: &str) -> Option<Timestamp> {
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", s).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Unix seconds in UTC with the given strftime `format`, or the number itself when it is
/// out of range.
pub fn show(unix: i64, format: &str) -> String {
    Timestamp::from_second(unix)
        .map_or_else(|_| unix.to_string(), |t| t.strftime(format).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_show_in_utc() {
        let t = Timestamp::from_second(1_767_225_600).unwrap();
        assert_eq!(stamp(t), "20260101T000000Z");
        assert_eq!(parse_stamp("20260101T000000Z"), Some(t));
        assert_eq!(parse_stamp("2026-01-01"), None);
        assert_eq!(show(1_767_225_600, "%Y-%m-%d %H:%M"), "2026-01-01 00:00");
    }
}
