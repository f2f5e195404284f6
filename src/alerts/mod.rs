//! Alerts people trust: a state machine per check (one mail when a thing breaks, reminders
//! while it stays broken, one when it recovers, nothing in between), one digest mail per
//! cycle, and an outbox in the catalog so no alert is lost when SMTP is down or steward
//! restarts.

mod push;

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};

use crate::checks::{Reading, Severity};
use crate::config::{EmailConfig, PasswordSource, Security, Window};

/// Alerting failures.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot read the SMTP password: {0}")]
    Password(String),
    #[error("cannot build the mail: {0}")]
    Message(String),
    #[error("SMTP {server}: {detail}")]
    Smtp { server: String, detail: String },
    #[error("{url}: {detail}")]
    Push { url: String, detail: String },
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

/// What kind of change an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Problem,
    Escalated,
    Improved,
    Reminder,
    Recovered,
}

/// One thing to tell.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: Kind,
    pub name: String,
    pub from: Severity,
    pub to: Severity,
    pub value: String,
    pub threshold: String,
    pub since: i64,
}

/// A check's alert state (as the catalog stores it).
pub use crate::catalog::CheckState as State;

/// Advances one check by one reading at `now`: the new state and the event to tell, if
/// any. The effective state turns bad when at least `n` of the last `m` raw results were
/// (then the worst of them), and turns OK again after `n` OK results in a row, so a
/// flapping check does not mail every cycle.
pub fn step(
    prev: Option<&State>,
    r: &Reading,
    window: Window,
    now: i64,
    remind_every: Duration,
) -> (State, Option<Event>) {
    let mut history: String = prev.map(|p| p.history.clone()).unwrap_or_default();
    history.push(r.severity.letter());
    if history.len() > 32 {
        history = history[history.len() - 32..].to_string();
    }
    let recent: Vec<Severity> = history
        .chars()
        .rev()
        .take(window.m as usize)
        .map(Severity::from_letter)
        .collect();
    let bad = recent.iter().filter(|s| **s != Severity::Ok).count() as u32;
    let before = prev.map_or(Severity::Ok, |p| p.state);
    // Hysteresis: once in trouble, recovery needs the last `n` results OK in a row, or
    // a check failing every other cycle would still toggle at the window's edge.
    let ok_run = history.chars().rev().take_while(|c| *c == 'O').count() as u32;
    let effective = if bad >= window.n {
        recent.iter().copied().max().unwrap_or(Severity::Ok)
    } else if before != Severity::Ok && ok_run < window.n {
        before
    } else {
        Severity::Ok
    };
    let mut last_notified = prev.and_then(|p| p.last_notified);
    let kind = match (before, effective) {
        (Severity::Ok, Severity::Ok) => None,
        (Severity::Ok, _) => Some(Kind::Problem),
        (_, Severity::Ok) => Some(Kind::Recovered),
        (b, e) if e > b => Some(Kind::Escalated),
        (b, e) if e < b => Some(Kind::Improved),
        _ => match last_notified {
            Some(t) if now.saturating_sub(t) >= remind_every.as_secs() as i64 => {
                Some(Kind::Reminder)
            }
            None => Some(Kind::Reminder),
            _ => None,
        },
    };
    let since = if effective == before {
        prev.map_or(now, |p| p.since)
    } else {
        now
    };
    match kind {
        Some(Kind::Recovered) => last_notified = None,
        Some(_) => last_notified = Some(now),
        None => {}
    }
    let state = State {
        name: r.name.clone(),
        state: effective,
        since,
        history,
        last_notified,
        value: r.value.clone(),
        threshold: r.threshold.clone(),
    };
    let event = kind.map(|kind| Event {
        kind,
        name: r.name.clone(),
        from: before,
        to: effective,
        value: r.value.clone(),
        threshold: r.threshold.clone(),
        since,
    });
    (state, event)
}

fn show_time(unix: i64) -> String {
    crate::clock::show(unix, "%Y-%m-%d %H:%MZ")
}

/// The digest mail for a cycle's events: subject with host, worst state and counts.
pub fn digest(
    host: &str,
    events: &[Event],
    states: &[State],
    now: i64,
) -> Option<(String, String)> {
    if events.is_empty() {
        return None;
    }
    let worst = states.iter().map(|s| s.state).max().unwrap_or(Severity::Ok);
    let crit = states.iter().filter(|s| s.state == Severity::Crit).count();
    let warn = states.iter().filter(|s| s.state == Severity::Warn).count();
    let recovered = events.iter().filter(|e| e.kind == Kind::Recovered).count();
    let mut counts = vec![format!("{crit} critical"), format!("{warn} warning")];
    if recovered > 0 {
        counts.push(format!("{recovered} recovered"));
    }
    let subject = format!("[steward] {host}: {} - {}", worst.word(), counts.join(", "));
    let mut body = format!("steward on {host}, {}\n\n", show_time(now));
    for e in events {
        let label = match e.kind {
            Kind::Problem | Kind::Escalated | Kind::Improved => e.to.word(),
            Kind::Reminder => "STILL",
            Kind::Recovered => "RECOVERED",
        };
        let detail = match e.kind {
            Kind::Reminder => format!("{} since {}", e.to.word(), show_time(e.since)),
            Kind::Recovered => format!("was {}", e.from.word()),
            _ if e.from != Severity::Ok => format!("was {}", e.from.word()),
            _ => String::new(),
        };
        body.push_str(&format!(
            "{label:<10} {}: {} (limit: {}) {detail}\n",
            e.name, e.value, e.threshold
        ));
    }
    let open: Vec<&State> = states.iter().filter(|s| s.state != Severity::Ok).collect();
    if !open.is_empty() {
        body.push_str("\nNot OK now:\n");
        for s in open {
            body.push_str(&format!(
                "  {:<8} {}: {} since {}\n",
                s.state.word(),
                s.name,
                s.value,
                show_time(s.since)
            ));
        }
    }
    Some((subject, body))
}

/// The context of one round of alerting.
pub struct Round<'a> {
    pub remind_every: Duration,
    pub host: &'a str,
    /// The channels a digest is queued for (`email`, `ntfy`, `webhook`; none: no alerts
    /// configured).
    pub channels: Vec<&'static str>,
    pub now: i64,
}

/// Steps every reading, saves the states and queues the digest in one transaction.
/// Returns the current states and the events.
pub fn record(
    catalog: &mut Catalog,
    readings: &[Reading],
    round: &Round<'_>,
) -> Result<(Vec<State>, Vec<Event>), AlertError> {
    let Round {
        remind_every,
        host,
        ref channels,
        now,
    } = *round;
    let prev: std::collections::HashMap<String, State> = catalog
        .check_states()?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut states = Vec::new();
    let mut events = Vec::new();
    for r in readings {
        let (s, e) = step(prev.get(&r.name), r, r.window, now, remind_every);
        states.push(s);
        events.extend(e);
    }
    // Checks not measured this cycle (jobs, say) keep their state for the subject line.
    let measured: std::collections::HashSet<&str> =
        readings.iter().map(|r| r.name.as_str()).collect();
    let mut all = states.clone();
    all.extend(
        prev.values()
            .filter(|p| !measured.contains(p.name.as_str()))
            .cloned(),
    );
    let worst = all.iter().map(|s| s.state).max().unwrap_or(Severity::Ok);
    let mail = digest(host, &events, &all, now);
    let notices: Vec<crate::catalog::Notice<'_>> = match &mail {
        Some((subject, body)) => channels
            .iter()
            .map(|c| crate::catalog::Notice {
                channel: c,
                subject,
                body,
                level: worst,
            })
            .collect(),
        None => Vec::new(),
    };
    catalog.save_states(&states, &notices, now)?;
    Ok((states, events))
}

/// The result of a job (backup, verify, prune, restore), as a check named `job NAME`, so
/// a failure alerts at once and the next success sends the recovery.
pub fn record_job(
    catalog: &mut Catalog,
    job: &crate::schedule::Job,
    ok: bool,
    detail: &str,
    round: &Round<'_>,
) -> Result<Vec<Event>, AlertError> {
    let r = Reading {
        name: job.alert_name(),
        severity: if ok { Severity::Ok } else { Severity::Crit },
        value: if ok {
            "succeeded".into()
        } else {
            detail.to_string()
        },
        threshold: "succeeds".into(),
        window: Window::default(),
    };
    Ok(record(catalog, std::slice::from_ref(&r), round)?.1)
}

fn password(email: &EmailConfig) -> Result<Option<String>, AlertError> {
    secret(email.password.as_ref())
}

/// A password or token, read when it is used.
fn secret(source: Option<&PasswordSource>) -> Result<Option<String>, AlertError> {
    source
        .map(PasswordSource::read)
        .transpose()
        .map_err(AlertError::Password)
}

fn smtp_err(email: &EmailConfig, detail: impl std::fmt::Display) -> AlertError {
    AlertError::Smtp {
        server: format!("{}:{}", email.host, email.port),
        detail: detail.to_string(),
    }
}

/// Sends one mail now through `email`.
pub fn send(email: &EmailConfig, subject: &str, body: &str) -> Result<(), AlertError> {
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| AlertError::Message(format!("{e}")))?;
    let mut builder = Message::builder().from(from).subject(subject);
    for to in &email.to {
        builder = builder.to(to
            .parse()
            .map_err(|e| AlertError::Message(format!("{to}: {e}")))?);
    }
    let message = builder
        .body(body.to_string())
        .map_err(|e| AlertError::Message(e.to_string()))?;
    let tls = if email.security == Security::None {
        Tls::None
    } else {
        let mut params = TlsParameters::builder(email.host.clone());
        if let Some(ca) = &email.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| smtp_err(email, format!("{}: {e}", ca.display())))?;
            params = params
                .add_root_certificate(Certificate::from_pem(&pem).map_err(|e| smtp_err(email, e))?);
        }
        let params = params.build_rustls().map_err(|e| smtp_err(email, e))?;
        match email.security {
            Security::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        }
    };
    let mut transport = SmtpTransport::builder_dangerous(email.host.clone())
        .port(email.port)
        .tls(tls)
        .timeout(Some(email.timeout));
    if let (Some(user), Some(pass)) = (&email.username, password(email)?) {
        transport = transport.credentials(Credentials::new(user.clone(), pass));
    }
    transport
        .build()
        .send(&message)
        .map(|_| ())
        .map_err(|e| smtp_err(email, crate::error::chain(&e)))
}

/// What a delivery round did.
#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    pub sent: usize,
    pub failed: usize,
    pub waiting: i64,
    pub last_error: Option<String>,
    /// Another process holds the outbox and is delivering; nothing was sent here.
    pub busy: bool,
}

/// How [`deliver`] treats the outbox lock and the backoff.
#[derive(Debug, Clone, Copy)]
pub struct Flush {
    /// Wait for another process's delivery to end (`alert flush`) instead of leaving the
    /// outbox to it (a check or a job).
    pub wait: bool,
    /// Send everything waiting, whatever its backoff.
    pub now_or_never: bool,
}

/// Sends every due mail in the outbox; a failure is retried later, waiting 1, 2, 4 ...
/// minutes (at most an hour) between attempts, counted from `now`.
///
/// Exactly once across processes: delivery runs under the `outbox` lock in the state dir,
/// and reads the due rows only once it holds it, so two processes never send the same
/// row. A crash after the server accepted a mail and before its row is deleted sends that
/// mail again on the next delivery: the rare duplicate is chosen over the rare loss,
/// since an alert that never arrives is the worse failure.
pub fn deliver(
    catalog: &Catalog,
    alerts: &crate::config::AlertsConfig,
    state_dir: &std::path::Path,
    now: i64,
    how: Flush,
) -> Result<Delivery, AlertError> {
    let mut d = Delivery::default();
    let _lock = if how.wait {
        crate::lock::acquire_waiting(state_dir, "outbox")?
    } else {
        match crate::lock::acquire(state_dir, "outbox") {
            Ok(l) => l,
            Err(crate::lock::LockError::Held { .. }) => {
                d.busy = true;
                d.waiting = catalog.outbox_len()?;
                return Ok(d);
            }
            Err(e) => return Err(e.into()),
        }
    };
    let due = if how.now_or_never { i64::MAX } else { now };
    // Push channels strictly in order: once one notice of a channel waits (not due, or
    // failed just now), the later ones wait behind it. Mail is tried row by row (each
    // message stands alone in an inbox, dated by its own header).
    let mut blocked: Vec<String> = Vec::new();
    for m in catalog.queued()? {
        if blocked.contains(&m.channel) {
            continue;
        }
        if m.next_attempt > due {
            if m.channel != "email" {
                blocked.push(m.channel.clone());
            }
            continue;
        }
        let sent = match m.channel.as_str() {
            "email" => alerts.email.as_ref().map(|e| send(e, &m.subject, &m.body)),
            "ntfy" => alerts.ntfy.as_ref().map(|p| push::ntfy(p, &m)),
            "webhook" => alerts.webhook.as_ref().map(|p| push::webhook(p, &m)),
            _ => None,
        };
        match sent {
            // A channel no longer configured: its notices have nowhere to go.
            None => catalog.mail_sent(m.id)?,
            Some(Ok(())) => {
                catalog.mail_sent(m.id)?;
                d.sent += 1;
            }
            Some(Err(e)) => {
                let wait = (60i64 << m.attempts.clamp(0, 6)).min(3600);
                catalog.mail_failed(m.id, now.saturating_add(wait), &e.to_string())?;
                d.failed += 1;
                d.last_error = Some(if m.channel == "email" {
                    e.to_string()
                } else {
                    format!("{}: {e}", m.channel)
                });
                if m.channel != "email" {
                    blocked.push(m.channel.clone());
                }
            }
        }
    }
    d.waiting = catalog.outbox_len()?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(sev: Severity) -> Reading {
        Reading {
            name: "disk /".into(),
            severity: sev,
            value: "x".into(),
            threshold: "y".into(),
            window: Window::default(),
        }
    }

    /// Feeds `seq` one per cycle (60 s apart); returns the events by kind.
    fn run(seq: &[Severity], window: Window, remind: Duration) -> Vec<(i64, Kind)> {
        let mut state: Option<State> = None;
        let mut out = Vec::new();
        for (i, s) in seq.iter().enumerate() {
            let now = i as i64 * 60;
            let (st, ev) = step(state.as_ref(), &r(*s), window, now, remind);
            if let Some(e) = ev {
                out.push((now, e.kind));
            }
            state = Some(st);
        }
        out
    }

    use Severity::{Crit as C, Ok as O, Warn as W};

    #[test]
    fn one_mail_when_it_breaks_one_when_it_recovers_nothing_in_between() {
        let ev = run(
            &[O, C, C, C, O, O],
            Window::default(),
            Duration::from_hours(1),
        );
        assert_eq!(ev, [(60, Kind::Problem), (240, Kind::Recovered)]);
    }

    #[test]
    fn escalation_and_improvement_are_told() {
        let ev = run(
            &[O, W, W, C, W, O],
            Window::default(),
            Duration::from_hours(1),
        );
        let kinds: Vec<Kind> = ev.iter().map(|e| e.1).collect();
        assert_eq!(
            kinds,
            [
                Kind::Problem,
                Kind::Escalated,
                Kind::Improved,
                Kind::Recovered
            ]
        );
    }

    #[test]
    fn reminders_come_every_remind_every_while_not_ok() {
        // 10 cycles a minute apart, remind every 3 minutes.
        let ev = run(&[C; 10], Window::default(), Duration::from_mins(3));
        assert_eq!(
            ev,
            [
                (0, Kind::Problem),
                (180, Kind::Reminder),
                (360, Kind::Reminder),
                (540, Kind::Reminder)
            ]
        );
    }

    #[test]
    fn flapping_within_3_of_5_mails_only_when_it_holds() {
        let w = Window { n: 3, m: 5 };
        // Failing every other cycle: bad in 3 of the last 5 from the fifth cycle on.
        let seq = [C, O, C, O, C, O, C, O, C, O, O, O, O, O];
        let ev = run(&seq, w, Duration::from_hours(24));
        assert_eq!(ev, [(240, Kind::Problem), (660, Kind::Recovered)]);
        // The same input without a window would have mailed at every change.
        let plain = run(&seq, Window::default(), Duration::from_hours(24));
        assert_eq!(plain.len(), 10);
        // `for = 3`: three bad cycles in a row.
        let ev = run(
            &[C, C, O, C, C, C, C],
            Window { n: 3, m: 3 },
            Duration::from_hours(1),
        );
        assert_eq!(ev, [(300, Kind::Problem)]);
    }

    #[test]
    fn digest_subject_names_host_worst_state_and_counts() {
        let states = vec![
            State {
                name: "a".into(),
                state: C,
                since: 0,
                history: "C".into(),
                last_notified: Some(0),
                value: "99 %".into(),
                threshold: "95 %".into(),
            },
            State {
                name: "b".into(),
                state: O,
                since: 0,
                history: "O".into(),
                last_notified: None,
                value: "ok".into(),
                threshold: "ok".into(),
            },
        ];
        let events = vec![
            Event {
                kind: Kind::Problem,
                name: "a".into(),
                from: O,
                to: C,
                value: "99 %".into(),
                threshold: "95 %".into(),
                since: 0,
            },
            Event {
                kind: Kind::Recovered,
                name: "b".into(),
                from: W,
                to: O,
                value: "ok".into(),
                threshold: "ok".into(),
                since: 0,
            },
        ];
        let (subject, body) = digest("mini", &events, &states, 0).unwrap();
        assert_eq!(
            subject,
            "[steward] mini: CRITICAL - 1 critical, 0 warning, 1 recovered"
        );
        assert!(body.contains("CRITICAL   a: 99 % (limit: 95 %)"), "{body}");
        assert!(
            body.contains("RECOVERED  b: ok (limit: ok) was WARNING"),
            "{body}"
        );
        assert!(digest("mini", &[], &states, 0).is_none());
    }
}
