//! The catalog's alert side: each check's state, the mail outbox (queued in the same
//! transaction as the state change it reports) and the disk samples of the forecast.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::severity::Severity;

/// A check's alert state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckState {
    pub name: String,
    pub state: Severity,
    pub since: i64,
    /// Raw results, oldest first, one letter each (O, W, C), at most 32.
    pub history: String,
    pub last_notified: Option<i64>,
    pub value: String,
    pub threshold: String,
}

/// A notice to queue: one per channel.
pub struct Notice<'a> {
    pub channel: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub level: Severity,
}

/// A mail waiting to be sent.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedMail {
    pub id: i64,
    pub created_at: i64,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
    /// `email`, `ntfy` or `webhook`.
    pub channel: String,
    /// The worst state when it was queued (`OK`, `WARNING`, `CRITICAL`).
    pub level: String,
}

impl Catalog {
    /// Every stored check state.
    pub fn check_states(&self) -> Result<Vec<CheckState>, CatalogError> {
        self.rows(
            "SELECT name, state, since, history, last_notified, value, threshold FROM check_states ORDER BY name",
            [], |r| {
                Ok(CheckState {
                    name: r.get(0)?,
                    state: Severity::from_letter(
                        r.get::<_, String>(1)?.chars().next().unwrap_or('O'),
                    ),
                    since: r.get(2)?,
                    history: r.get(3)?,
                    last_notified: r.get(4)?,
                    value: r.get(5)?,
                    threshold: r.get(6)?,
                })
            },
        )
    }

    /// Saves check states and queues `mail` in one transaction, so a crash never records
    /// a change without its alert.
    pub fn save_states(
        &mut self,
        states: &[CheckState],
        mail: &[Notice<'_>],
        now: i64,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let sq = |source| CatalogError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sq)?;
        for s in states {
            tx.execute(
                "INSERT OR REPLACE INTO check_states (name, state, since, history, last_notified, value, threshold)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.name, s.state.letter().to_string(), s.since, s.history, s.last_notified, s.value, s.threshold],
            )
            .map_err(sq)?;
        }
        for n in mail {
            tx.execute(
                "INSERT INTO outbox (created_at, subject, body, next_attempt, channel, level)
                 VALUES (?1, ?2, ?3, ?1, ?4, ?5)",
                params![now, n.subject, n.body, n.channel, n.level.word()],
            )
            .map_err(sq)?;
        }
        tx.commit().map_err(sq)
    }

    /// Everything waiting, oldest first (the caller keeps each channel in order).
    pub fn queued(&self) -> Result<Vec<QueuedMail>, CatalogError> {
        self.rows(
            "SELECT id, created_at, subject, body, attempts, next_attempt, last_error, channel, level
                 FROM outbox ORDER BY id",
            [],
            |r| {
                Ok(QueuedMail {
                    id: r.get(0)?,
                    created_at: r.get(1)?,
                    subject: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                    next_attempt: r.get(5)?,
                    last_error: r.get(6)?,
                    channel: r.get(7)?,
                    level: r.get(8)?,
                })
            },
        )
    }

    /// How many mails wait.
    pub fn outbox_len(&self) -> Result<i64, CatalogError> {
        self.conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// A mail went out.
    pub fn mail_sent(&self, id: i64) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM outbox WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A mail failed; try again at `next`.
    pub fn mail_failed(&self, id: i64, next: i64, error: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next, error],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

impl Catalog {
    /// Records a disk sample (the check cycle does, for the forecast).
    pub fn add_disk_sample(
        &self,
        path: &str,
        at: i64,
        used: u64,
        free: u64,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO disk_samples (path, at, used, free) VALUES (?1, ?2, ?3, ?4)",
                params![path, at, used as i64, free as i64],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Samples of `path` since `from`, oldest first: (at, used, free).
    pub fn disk_samples(
        &self,
        path: &str,
        from: i64,
    ) -> Result<Vec<(i64, u64, u64)>, CatalogError> {
        self.rows(
            "SELECT at, used, free FROM disk_samples WHERE path = ?1 AND at >= ?2 ORDER BY at",
            params![path, from],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )
    }

    /// Forgets the check states `names` (items nothing measures any more).
    pub fn forget_states(&self, names: &[String]) -> Result<(), CatalogError> {
        for n in names {
            self.conn
                .execute("DELETE FROM check_states WHERE name = ?1", [n])
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Replaces the fleet as last read: (host, its view as JSON, the fleet module's).
    pub fn save_fleet(&self, rows: &[(String, String)]) -> Result<(), CatalogError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM fleet_peers", [])
            .map_err(|e| self.err(e))?;
        for (host, view) in rows {
            tx.execute(
                "INSERT INTO fleet_peers (host, view) VALUES (?1, ?2)",
                params![host, view],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The fleet as last read, one JSON view per host, by host.
    pub fn fleet(&self) -> Result<Vec<String>, CatalogError> {
        self.rows("SELECT view FROM fleet_peers ORDER BY host", [], |r| {
            r.get(0)
        })
    }

    /// Forgets runs and disk samples older than `before`; returns how many rows went.
    pub fn forget_before(&self, before: i64) -> Result<usize, CatalogError> {
        let runs = self
            .conn
            .execute("DELETE FROM runs WHERE started_at < ?1", [before])
            .map_err(|e| self.err(e))?;
        let samples = self
            .conn
            .execute("DELETE FROM disk_samples WHERE at < ?1", [before])
            .map_err(|e| self.err(e))?;
        Ok(runs + samples)
    }
}

impl Catalog {
    /// A service's failed health cycles in a row and its restart times (Unix seconds).
    pub fn restart_state(&self, service: &str) -> Result<(u32, Vec<i64>), CatalogError> {
        self.conn
            .query_row(
                "SELECT fails, restarts FROM service_restarts WHERE service = ?1",
                [service],
                |r| {
                    let restarts: String = r.get(1)?;
                    Ok((
                        r.get::<_, u32>(0)?,
                        serde_json::from_str(&restarts).unwrap_or_default(),
                    ))
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.err(e))
    }

    /// Saves a service's failed cycles and restart times.
    pub fn set_restart_state(
        &self,
        service: &str,
        fails: u32,
        restarts: &[i64],
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO service_restarts (service, fails, restarts) VALUES (?1, ?2, ?3)",
                params![service, fails, serde_json::to_string(restarts).unwrap_or_default()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
