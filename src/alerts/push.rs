//! HTTP push channels for the digest: ntfy (the topic URL; title, priority and tags from
//! the worst state) and a JSON webhook whose payload carries `text` (Slack, Mattermost,
//! Matrix hookshot) and `content` (Discord) beside structured fields.

use std::time::Duration;

use super::{AlertError, secret};
use crate::catalog::QueuedMail;
use crate::config::PushConfig;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build(),
    )
}

fn check(
    url: &str,
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(), AlertError> {
    let err = |detail: String| AlertError::Push {
        url: url.to_string(),
        detail,
    };
    let resp = r.map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(err(format!("HTTP {status}")))
    }
}

/// A header value from any text: visible ASCII only (a host name in another script would
/// otherwise make every delivery of the notice fail); the body keeps the full text.
fn header_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// ntfy: priority 5 (urgent) for CRITICAL, 4 for WARNING, 3 otherwise.
pub(super) fn ntfy(p: &PushConfig, m: &QueuedMail) -> Result<(), AlertError> {
    let (priority, tags) = match m.level.as_str() {
        "CRITICAL" => ("5", "rotating_light"),
        "WARNING" => ("4", "warning"),
        _ => ("3", "white_check_mark"),
    };
    let mut req = agent(p.timeout)
        .post(&p.url)
        .header("Title", &header_text(&m.subject))
        .header("Priority", priority)
        .header("Tags", tags);
    if let Some(t) = secret(p.token.as_ref())? {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    check(&p.url, req.send(m.body.as_bytes()))
}

/// The webhook's JSON: `text`/`content` (subject and body), `title`, `body`, `level`,
/// `created_at` (Unix seconds) and `id` (the notice's number, for deduplication).
pub(super) fn webhook(p: &PushConfig, m: &QueuedMail) -> Result<(), AlertError> {
    let text = format!("{}\n\n{}", m.subject, m.body);
    let payload = serde_json::json!({
        "text": text,
        "content": text,
        "title": m.subject,
        "body": m.body,
        "level": m.level,
        "created_at": m.created_at,
        "id": m.id,
    });
    let mut req = agent(p.timeout)
        .post(&p.url)
        .header("Content-Type", "application/json");
    if let Some(t) = secret(p.token.as_ref())? {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    check(&p.url, req.send(payload.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a subject with a non-ASCII host name was an invalid header value, so
    /// the notice failed on every attempt and held back its channel for good.
    #[test]
    fn regression_a_non_ascii_subject_is_a_valid_header() {
        assert_eq!(
            header_text("[steward] сервер: CRITICAL\n"),
            "[steward] ??????: CRITICAL?"
        );
    }
}
