//! `steward status` as a table: jobs, sets, rollback copies, open problems.

use std::io::{self, Write};

use crate::status::Status;

/// Writes the status table.
pub fn status(out: &mut dyn Write, st: &Status) -> io::Result<()> {
    let t = |x: Option<i64>| x.map_or_else(|| "never".into(), super::time);
    writeln!(
        out,
        "{:<16} {:<16} {:<21} {:<9} {:>7} {:<21} SKIPPED",
        "JOB", "SCHEDULE", "LAST RUN", "RESULT", "SECONDS", "NEXT RUN"
    )?;
    for j in &st.jobs {
        writeln!(
            out,
            "{:<16} {:<16} {:<21} {:<9} {:>7} {:<21} {}",
            j.job,
            j.schedule,
            t(j.last_run),
            j.last_result.map_or("-", |s| s.word()),
            j.last_seconds.map_or_else(|| "-".into(), |s| s.to_string()),
            t(j.next_run),
            j.skipped_ticks
        )?;
    }
    for s in &st.sets {
        writeln!(
            out,
            "set {:<12} newest verified backup: {}",
            s.set,
            s.newest.as_deref().unwrap_or("none")
        )?;
        for (target, id) in &s.offsite {
            writeln!(
                out,
                "  offsite {target}: newest copy {}",
                id.as_deref().unwrap_or("none")
            )?;
        }
        match &s.proven {
            Some(p) => writeln!(out, "  {p}")?,
            None => writeln!(out, "  never proven restorable: `steward drill` proves it")?,
        }
        for d in s.drills.iter().filter(|d| !d.ok) {
            writeln!(
                out,
                "  the drill of {} ({}) at {} FAILED: {}",
                d.backup_id,
                d.source,
                super::time(d.started_at),
                d.detail
            )?;
        }
        if let Some(ms) = s.incident_ms {
            writeln!(
                out,
                "  a whole incident: about {} with stopping and starting its services",
                crate::drill::show_ms(ms)
            )?;
        }
        if let Some((id, why)) = &s.suspect {
            writeln!(
                out,
                "  {id} is SUSPECT ({}); last good: {}",
                why.join("; "),
                s.newest_good.as_deref().unwrap_or("none")
            )?;
        }
    }
    for k in &st.rollbacks {
        let left = k.expires_at - crate::clock::now();
        writeln!(
            out,
            "rollback copy {}: {}, from the restore of {} at {}; {}",
            k.path.display(),
            super::bytes(k.bytes),
            if k.id.is_empty() { "?" } else { &k.id },
            super::time(k.made_at),
            if k.changed {
                "CHANGED after the swap: kept until `steward restore --cleanup`".to_string()
            } else if left > 0 {
                format!(
                    "removed by daily maintenance in {:.1} days",
                    left as f64 / 86_400.0
                )
            } else {
                "removed by the next daily maintenance".to_string()
            }
        )?;
    }
    for p in &st.problems {
        // A backup check's finding older than the set's newest good backup is stale (the
        // next check clears it): said so, rather than beside the line it contradicts.
        let stale = st.is_stale(p);
        writeln!(
            out,
            "problem: {} {} {} since {}{}",
            p.state,
            p.check,
            p.value,
            super::time(p.since),
            if stale {
                " (as of the last check; a good backup was made since: the next check \
                 clears it)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

/// `steward fleet` as a table: each host, its state (or why it is not believed), when it
/// last wrote, and the signature's verdict. Hostile host names are shown escaped.
pub fn fleet(out: &mut dyn Write, views: &[crate::fleet::PeerView], now: i64) -> io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<10} {:<22} SIGNATURE",
        "HOST", "STATE", "LAST HEARD"
    )?;
    for v in views {
        let state = v.label();
        let heard = v.time.map_or_else(
            || "never".to_string(),
            |t| format!("{} ago", crate::checks::show_age(now - t, false)),
        );
        writeln!(
            out,
            "{:<20} {:<10} {:<22} {}",
            format!(
                "{}{}",
                v.host.escape_debug(),
                if v.own { " (this)" } else { "" }
            ),
            state,
            heard,
            v.trust.describe().escape_debug()
        )?;
    }
    Ok(())
}
