//! Cron schedules evaluated in the host's local time, DST-correct: steward computes each
//! next fire instant itself (and arms a one-shot job at it), because tokio-cron-scheduler's
//! time-zone jobs drift by an hour after a DST change.
//!
//! Accepted: 5-field crontab (`min hour dom month dow`), the same with a leading seconds
//! field, and `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`,
//! `@annually`. Fields take `*`, numbers, names (`jan`, `mon`), ranges `a-b`, steps `/n` and
//! lists. A schedule may not restrict both day-of-month and day-of-week: cron ORs them,
//! tokio-cron-scheduler ANDs them, systemd and launchd disagree again.
//!
//! Local times that do not exist (spring forward) fire at the same distance after the gap
//! (02:30 becomes 03:30); times that occur twice (fall back) fire once, at the first.

mod job;
pub use job::{Job, PING_KEYS, Period, SCHEDULABLE, UnknownJob};

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    pub source: String,
    seconds: Vec<i8>,
    minutes: Vec<i8>,
    hours: Vec<i8>,
    days: Vec<i8>,
    months: Vec<i8>,
    /// 0 = Sunday.
    weekdays: Vec<i8>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(
    text: &str,
    min: i8,
    max: i8,
    names: &[&str],
    what: &str,
) -> Result<(Vec<i8>, bool), String> {
    let value = |s: &str| -> Result<i8, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as i8 + min);
        }
        s.parse::<i8>()
            .map_err(|_| format!("{what}: {s:?} is not a number"))
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<i8>()
                    .map_err(|_| format!("{what}: bad step {s:?}"))?,
            ),
            None => (part, 1),
        };
        if step < 1 {
            return Err(format!("{what}: step must be at least 1"));
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{what}: {range:?} is outside {min}-{max}"));
        }
        // Counted in i16: `59/69` must not overflow the field's i8 on its way past `hi`.
        let mut v = i16::from(lo);
        while v <= i16::from(hi) {
            out.push(v as i8);
            v += i16::from(step);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok((out, text != "*"))
}

/// Parses a schedule; the error says what is wrong with it.
pub fn parse(expr: &str) -> Result<Cron, String> {
    let expanded = match expr.trim() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        other if other.starts_with('@') => return Err(format!("unknown schedule {other:?}")),
        other => other,
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match parts.len() {
        5 => ("0", &parts[..]),
        6 => (parts[0], &parts[1..]),
        n => {
            return Err(format!(
                "{expr:?} has {n} fields; write 5 (min hour day month weekday)"
            ));
        }
    };
    let (seconds, _) = field(sec, 0, 59, &[], "seconds")?;
    let (minutes, _) = field(rest[0], 0, 59, &[], "minute")?;
    let (hours, _) = field(rest[1], 0, 23, &[], "hour")?;
    let (days, days_restricted) = field(rest[2], 1, 31, &[], "day of month")?;
    let (months, _) = field(rest[3], 1, 12, &MONTHS, "month")?;
    let (mut weekdays, weekdays_restricted) = field(rest[4], 0, 7, &DAYS, "day of week")?;
    if days_restricted && weekdays_restricted {
        return Err(format!(
            "{expr:?} restricts both the day of month and the day of week: cron runs on either, \
             tokio-cron-scheduler only on both, and systemd and launchd differ again; use one of them"
        ));
    }
    for w in &mut weekdays {
        if *w == 7 {
            *w = 0;
        }
    }
    weekdays.sort_unstable();
    weekdays.dedup();
    Ok(Cron {
        source: expr.to_string(),
        seconds,
        minutes,
        hours,
        days,
        months,
        weekdays,
        days_restricted,
        weekdays_restricted,
    })
}

impl Cron {
    fn day_matches(&self, d: Date) -> bool {
        self.months.contains(&d.month())
            && self.days.contains(&d.day())
            && self
                .weekdays
                .contains(&(d.weekday().to_sunday_zero_offset()))
    }

    /// The instants this schedule fires at on local day `d`, in order.
    fn instants(&self, d: Date, tz: &TimeZone) -> Vec<Timestamp> {
        let mut v = Vec::new();
        for &h in &self.hours {
            for &m in &self.minutes {
                for &s in &self.seconds {
                    let dt = DateTime::from_parts(d, jiff::civil::time(h, m, s, 0));
                    // Compatible: a time in a gap moves later by the gap, a repeated time
                    // is the first of the two.
                    if let Ok(z) = dt.to_zoned(tz.clone()) {
                        v.push(z.timestamp());
                    }
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }

    /// The first fire instant strictly after `after`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut day = after.to_zoned(tz.clone()).date();
        for _ in 0..(366 * 8) {
            if self.day_matches(day) {
                let found = if self.seconds.len() * self.minutes.len() * self.hours.len() > 2000 {
                    // Dense schedules: search near `after` instead of listing the day.
                    self.dense_next(day, after, tz)
                } else {
                    self.instants(day, tz).into_iter().find(|t| *t > after)
                };
                if found.is_some() {
                    return found;
                }
            }
            day = day.checked_add(1.day()).ok()?;
        }
        None
    }

    fn dense_next(&self, day: Date, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut t = after.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
        for _ in 0..(2 * 86_400) {
            let z = t.to_zoned(tz.clone());
            if z.date() > day {
                return None;
            }
            if z.date() == day
                && self.hours.contains(&z.hour())
                && self.minutes.contains(&z.minute())
                && self.seconds.contains(&z.second())
            {
                return Some(t);
            }
            t = t.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
        }
        None
    }

    /// The last fire instant at or before `at` (for catch-up), looking back at most a year.
    pub fn prev_at_or_before(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut day = at.to_zoned(tz.clone()).date();
        for _ in 0..367 {
            if self.day_matches(day)
                && let Some(t) = self.instants(day, tz).into_iter().rev().find(|t| *t <= at)
            {
                return Some(t);
            }
            day = day.checked_sub(1.day()).ok()?;
        }
        None
    }

    /// The expanded fields (seconds, minutes, hours, days, months, weekdays with 0 =
    /// Sunday) and whether days and weekdays are restricted, for unit generation.
    #[allow(clippy::type_complexity)]
    pub fn fields(&self) -> ([&[i8]; 6], bool, bool) {
        (
            [
                &self.seconds,
                &self.minutes,
                &self.hours,
                &self.days,
                &self.months,
                &self.weekdays,
            ],
            self.days_restricted,
            self.weekdays_restricted,
        )
    }
}

/// Every fire instant of `jobs` in `[from, to)`, in time order and, at one instant, in
/// the order the jobs are given (config order): what the daemon and the generated timers
/// run in that window. Ends early with `None` past `limit` ticks, so a dense schedule over
/// a long window cannot fill memory.
pub fn between<'a, J>(
    jobs: &'a [(J, Cron)],
    from: Timestamp,
    to: Timestamp,
    tz: &TimeZone,
    limit: usize,
) -> Option<Vec<(Timestamp, &'a J)>> {
    let first = from.to_zoned(tz.clone()).date();
    let last = to.to_zoned(tz.clone()).date();
    let mut out = Vec::new();
    for (job, cron) in jobs {
        // Day by day, each day's instants listed once: a minutely check over two months is
        // 86 400 ticks, not 86 400 searches.
        let mut day = first;
        while day <= last {
            if cron.day_matches(day) {
                for t in cron.instants(day, tz) {
                    if t >= from && t < to {
                        if out.len() >= limit {
                            return None;
                        }
                        out.push((t, job));
                    }
                }
            }
            day = day.checked_add(1.day()).ok()?;
        }
    }
    // Stable: jobs at the same instant keep config order.
    out.sort_by_key(|(t, _)| *t);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, s: &str) -> Timestamp {
        let dt: DateTime = s.parse().unwrap();
        dt.to_zoned(TimeZone::get(tz).unwrap()).unwrap().timestamp()
    }

    /// The next fires after `from` (local), as UTC RFC 3339 strings.
    fn fires(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let c = parse(expr).unwrap();
        let zone = TimeZone::get(tz).unwrap();
        let mut t = at(tz, from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = c.next_after(t, &zone).unwrap();
            out.push(t.to_string());
        }
        out
    }

    /// `between` lists exactly what repeated `next_after` finds, across a DST change, with
    /// jobs at one instant in the order given.
    #[test]
    fn between_agrees_with_next_after() {
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let jobs: Vec<(&str, Cron)> = ["30 2 * * *", "0 */6 * * *", "*/20 * * * *", "0 5 1 * *"]
            .iter()
            .map(|e| (*e, parse(e).unwrap()))
            .collect();
        let from = at("Europe/Berlin", "2026-03-27T00:00");
        let to = at("Europe/Berlin", "2026-04-02T00:00");
        let got = between(&jobs, from, to, &zone, 10_000).unwrap();
        let mut want = Vec::new();
        for (job, cron) in &jobs {
            let mut t = from
                .checked_sub(jiff::SignedDuration::from_secs(1))
                .unwrap();
            while let Some(n) = cron.next_after(t, &zone).filter(|n| *n < to) {
                want.push((n, job));
                t = n;
            }
        }
        want.sort_by_key(|(t, _)| *t);
        assert_eq!(got, want);
        // The hourly and the 20-minute jobs both fire at 06:00: config order.
        let six = at("Europe/Berlin", "2026-03-27T06:00");
        let at_six: Vec<_> = got
            .iter()
            .filter(|(t, _)| *t == six)
            .map(|(_, j)| **j)
            .collect();
        assert_eq!(at_six, ["0 */6 * * *", "*/20 * * * *"]);
        assert!(
            between(&jobs, from, to, &zone, 10).is_none(),
            "the limit holds"
        );
    }

    #[test]
    fn berlin_spring_forward_and_fall_back() {
        // 2026-03-29: 02:00 CET -> 03:00 CEST. 02:30 does not exist: it fires at 03:30 CEST.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00", 3),
            [
                "2026-03-29T01:30:00Z",
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z"
            ]
        );
        assert_eq!(
            fires("0 3 * * *", "Europe/Berlin", "2026-03-28T12:00", 2),
            ["2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"]
        );
        // 2026-10-25: 03:00 CEST -> 02:00 CET. 02:30 happens twice: it fires once, first.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        assert_eq!(
            fires("0 3 * * *", "Europe/Berlin", "2026-10-24T12:00", 2),
            ["2026-10-25T02:00:00Z", "2026-10-26T02:00:00Z"]
        );
    }

    #[test]
    fn new_york_spring_forward_and_fall_back() {
        // 2026-03-08: 02:00 EST -> 03:00 EDT.
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-03-07T12:00", 2),
            ["2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z"]
        );
        assert_eq!(
            fires("0 3 * * *", "America/New_York", "2026-03-07T12:00", 2),
            ["2026-03-08T07:00:00Z", "2026-03-09T07:00:00Z"]
        );
        // 2026-11-01: 02:00 EDT -> 01:00 EST; 02:30 and 03:00 exist once, in EST.
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-10-31T12:00", 2),
            ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"]
        );
        assert_eq!(
            fires("0 3 * * *", "America/New_York", "2026-10-31T12:00", 2),
            ["2026-11-01T08:00:00Z", "2026-11-02T08:00:00Z"]
        );
        // 01:30 happens twice that night: once.
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2026-10-31T12:00", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    #[test]
    fn month_ends_leap_day_and_shorthands() {
        assert_eq!(
            fires("0 0 31 * *", "UTC", "2026-01-31T12:00", 3),
            [
                "2026-03-31T00:00:00Z",
                "2026-05-31T00:00:00Z",
                "2026-07-31T00:00:00Z"
            ]
        );
        assert_eq!(
            fires("0 12 29 2 *", "UTC", "2026-01-01T00:00", 1),
            ["2028-02-29T12:00:00Z"]
        );
        assert_eq!(
            fires("@monthly", "UTC", "2026-12-15T00:00", 1),
            ["2027-01-01T00:00:00Z"]
        );
        assert_eq!(
            fires("@weekly", "UTC", "2026-11-21T00:00", 1),
            ["2026-11-22T00:00:00Z"]
        );
        assert_eq!(
            fires("0 4 * * sun", "UTC", "2026-11-21T00:00", 1),
            ["2026-11-22T04:00:00Z"]
        );
        assert_eq!(
            fires("*/15 9-10 * jan-mar mon-fri", "UTC", "2026-01-02T10:50", 2),
            ["2026-01-05T09:00:00Z", "2026-01-05T09:15:00Z"]
        );
        // Seconds field (tests and fast schedules).
        assert_eq!(
            fires("*/2 * * * * *", "UTC", "2026-01-01T00:00:00", 2),
            ["2026-01-01T00:00:02Z", "2026-01-01T00:00:04Z"]
        );
    }

    #[test]
    fn previous_fire_for_catch_up() {
        let c = parse("0 3 * * *").unwrap();
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let prev = c
            .prev_at_or_before(at("Europe/Berlin", "2026-11-21T10:00"), &tz)
            .unwrap();
        assert_eq!(prev.to_string(), "2026-11-21T02:00:00Z");
        let prev = c
            .prev_at_or_before(at("Europe/Berlin", "2026-11-21T02:59"), &tz)
            .unwrap();
        assert_eq!(prev.to_string(), "2026-11-20T02:00:00Z");
    }

    /// Regression: `59/69` passed `config check`, then the step overflowed an i8 and
    /// `status` panicked computing the next run.
    #[test]
    fn regression_a_step_past_the_end_of_the_field_does_not_overflow() {
        let c = parse("59/69 * * * *").unwrap();
        assert_eq!(c.minutes, vec![59]);
        let c = parse("*/127 */100 * * *").unwrap();
        assert_eq!((c.minutes.clone(), c.hours.clone()), (vec![0], vec![0]));
        let next = c.next_after(at("UTC", "2026-01-01T00:00:01"), &TimeZone::UTC);
        assert!(next.is_some());
        assert!(parse("0/200 * * * *").is_err());
    }

    #[test]
    fn bad_schedules_are_explained() {
        assert!(
            parse("0 3 1 * mon")
                .unwrap_err()
                .contains("both the day of month and the day of week")
        );
        assert!(parse("0 3 * *").unwrap_err().contains("4 fields"));
        assert!(parse("61 * * * *").unwrap_err().contains("outside"));
        assert!(parse("@often").unwrap_err().contains("unknown"));
        assert!(parse("0 3 * foo *").unwrap_err().contains("month"));
    }
}
