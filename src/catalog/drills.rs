//! The catalog's restore drills: one row per set per drill (what was restored, from
//! where, how long each phase took, what the checks found), and the quiesce and start
//! times of the last real restore of each set, which turn a drill's time to restore into
//! an estimate of a whole incident.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Catalog, CatalogError};

/// The time each phase of a drill took, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DrillPhases {
    /// Downloading and decrypting from offsite (0 for a local drill).
    pub fetch_ms: u64,
    /// Reading the archives back in full with every entry checked (as a restore does
    /// before anything is stopped).
    pub verify_ms: u64,
    /// Decompressing and writing the copy, every file against the manifest.
    pub write_ms: u64,
    /// The checks on the copy: databases, dumps.
    pub check_ms: u64,
    /// The set's `drill-command`.
    pub command_ms: u64,
}

impl DrillPhases {
    /// What a restore of the same backup would take before the services start again:
    /// fetch, verify and write.
    pub fn restore_ms(&self) -> u64 {
        self.fetch_ms + self.verify_ms + self.write_ms
    }

    /// Every phase.
    pub fn total_ms(&self) -> u64 {
        self.restore_ms() + self.check_ms + self.command_ms
    }
}

/// One set's drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillRecord {
    pub id: i64,
    pub set: String,
    /// The backup restored (a differential's ID: its base was restored with it).
    pub backup_id: String,
    /// `local`, or `offsite NAME`.
    pub source: String,
    pub started_at: i64,
    pub ok: bool,
    /// Bytes and files of the restored copy.
    pub bytes: u64,
    pub files: u64,
    pub phases: DrillPhases,
    /// What failed, `; `-joined (empty when it passed).
    pub detail: String,
    /// What the checks found, one line each (passed, failed or skipped and why).
    pub findings: Vec<String>,
    /// What the set's `drill-command` printed.
    pub output: Option<String>,
}

/// How long the last real in-place restore of a set kept its services down around the
/// data: stopping them, and starting them again.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestoreTimes {
    pub set: String,
    pub at: i64,
    pub backup_id: String,
    pub stop_ms: u64,
    pub start_ms: u64,
}

impl RestoreTimes {
    /// A whole incident's estimate (ms): the services stopped as at this restore, a drill's
    /// time to restore, the services started again.
    pub fn incident_ms(&self, drill: &DrillPhases) -> u64 {
        self.stop_ms + drill.restore_ms() + self.start_ms
    }
}

const DRILL_COLUMNS: &str = "id, set_name, backup_id, source, started_at, ok, bytes, files,
    fetch_ms, verify_ms, write_ms, check_ms, command_ms, detail, findings, output";

fn drill_from_row(r: &Row<'_>) -> rusqlite::Result<DrillRecord> {
    let findings: String = r.get(14)?;
    Ok(DrillRecord {
        id: r.get(0)?,
        set: r.get(1)?,
        backup_id: r.get(2)?,
        source: r.get(3)?,
        started_at: r.get(4)?,
        ok: r.get(5)?,
        bytes: r.get::<_, i64>(6)?.max(0) as u64,
        files: r.get::<_, i64>(7)?.max(0) as u64,
        phases: DrillPhases {
            fetch_ms: r.get::<_, i64>(8)?.max(0) as u64,
            verify_ms: r.get::<_, i64>(9)?.max(0) as u64,
            write_ms: r.get::<_, i64>(10)?.max(0) as u64,
            check_ms: r.get::<_, i64>(11)?.max(0) as u64,
            command_ms: r.get::<_, i64>(12)?.max(0) as u64,
        },
        detail: r.get(13)?,
        findings: findings
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        output: r.get(15)?,
    })
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Catalog {
    /// Records a drill; returns its id.
    pub fn add_drill(&self, d: &DrillRecord) -> Result<i64, CatalogError> {
        let p = &d.phases;
        self.conn
            .execute(
                "INSERT INTO drills (set_name, backup_id, source, started_at, ok, bytes, files,
                    fetch_ms, verify_ms, write_ms, check_ms, command_ms, detail, findings, output)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    d.set,
                    d.backup_id,
                    d.source,
                    d.started_at,
                    d.ok,
                    ms(d.bytes),
                    ms(d.files),
                    ms(p.fetch_ms),
                    ms(p.verify_ms),
                    ms(p.write_ms),
                    ms(p.check_ms),
                    ms(p.command_ms),
                    d.detail,
                    d.findings.join("\n"),
                    d.output,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Drills of `set` (every set's when `None`), newest first.
    pub fn drills(&self, set: Option<&str>, limit: u32) -> Result<Vec<DrillRecord>, CatalogError> {
        self.rows(
            &format!(
                "SELECT {DRILL_COLUMNS} FROM drills WHERE (?1 IS NULL OR set_name = ?1)
                 ORDER BY started_at DESC, id DESC LIMIT ?2"
            ),
            params![set, limit],
            drill_from_row,
        )
    }

    /// The newest local (or `offsite`) drill of `set` (`passed`: the newest that passed).
    pub fn newest_drill(
        &self,
        set: &str,
        offsite: bool,
        passed: bool,
    ) -> Result<Option<DrillRecord>, CatalogError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {DRILL_COLUMNS} FROM drills WHERE set_name = ?1 AND (?2 = 0 OR ok = 1)
                     AND (source = 'local') = (?3 = 0)
                     ORDER BY started_at DESC, id DESC LIMIT 1"
                ),
                params![set, passed, offsite],
                drill_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Remembers how long the restore of `set` just finished kept its services stopping
    /// and starting.
    pub fn note_restore_times(&self, t: &RestoreTimes) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO restore_times (set_name, at, backup_id, stop_ms, start_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.set, t.at, t.backup_id, ms(t.stop_ms), ms(t.start_ms)],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The last real restore's service times of `set`.
    pub fn restore_times(&self, set: &str) -> Result<Option<RestoreTimes>, CatalogError> {
        self.conn
            .query_row(
                "SELECT set_name, at, backup_id, stop_ms, start_ms FROM restore_times
                 WHERE set_name = ?1",
                params![set],
                |r| {
                    Ok(RestoreTimes {
                        set: r.get(0)?,
                        at: r.get(1)?,
                        backup_id: r.get(2)?,
                        stop_ms: r.get::<_, i64>(3)?.max(0) as u64,
                        start_ms: r.get::<_, i64>(4)?.max(0) as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill(set: &str, at: i64, ok: bool) -> DrillRecord {
        DrillRecord {
            id: 0,
            set: set.into(),
            backup_id: format!("{set}-{at}"),
            source: "local".into(),
            started_at: at,
            ok,
            bytes: 10,
            files: 2,
            phases: DrillPhases {
                fetch_ms: 1,
                verify_ms: 2,
                write_ms: 3,
                check_ms: 4,
                command_ms: 5,
            },
            detail: if ok { String::new() } else { "bad".into() },
            findings: vec!["a: ok".into(), "b: skipped".into()],
            output: Some("out".into()),
        }
    }

    #[test]
    fn drills_round_trip_and_the_newest_passing_one_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.add_drill(&drill("db", 100, true)).unwrap();
        c.add_drill(&drill("db", 200, false)).unwrap();
        c.add_drill(&drill("models", 300, true)).unwrap();
        let mut far = drill("db", 400, true);
        far.source = "offsite b2".into();
        c.add_drill(&far).unwrap();
        assert_eq!(
            c.newest_drill("db", true, false)
                .unwrap()
                .unwrap()
                .started_at,
            400
        );
        let newest = c.newest_drill("db", false, false).unwrap().unwrap();
        assert_eq!((newest.started_at, newest.ok), (200, false));
        assert_eq!(newest.findings, vec!["a: ok", "b: skipped"]);
        assert_eq!(newest.phases.restore_ms(), 6);
        assert_eq!(newest.phases.total_ms(), 15);
        assert_eq!(
            c.newest_drill("db", false, true)
                .unwrap()
                .unwrap()
                .started_at,
            100
        );
        assert_eq!(c.drills(None, 10).unwrap().len(), 4);
        assert!(c.newest_drill("none", false, false).unwrap().is_none());
        let t = RestoreTimes {
            set: "db".into(),
            at: 5,
            backup_id: "db-1".into(),
            stop_ms: 1200,
            start_ms: 3400,
        };
        c.note_restore_times(&t).unwrap();
        assert_eq!(c.restore_times("db").unwrap(), Some(t));
    }
}
