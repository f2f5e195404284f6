//! `steward prune [--set S] [--dry-run]`: retention, with a table that explains itself.

use anyhow::{Context, bail};

use crate::backup::{Action, PruneReport};
use crate::cli::PruneArgs;
use crate::config::Config;
use crate::job::Job;
use crate::jobs::{Done, Session};

pub fn run(cfg: &Config, args: PruneArgs) -> anyhow::Result<Done> {
    if let Some(name) = &args.set
        && cfg.set(name).is_none()
    {
        bail!("no backup set {name:?} in {}", cfg.origin);
    }
    let session = Session::begin(cfg, Job::Prune, args.dry_run, &super::warn)?;
    let catalog = &session.catalog;
    let tz = jiff::tz::TimeZone::system();
    let mut reports = Vec::new();
    for set in cfg
        .backup
        .sets
        .iter()
        .filter(|s| args.set.as_ref().is_none_or(|n| n == &s.name))
    {
        let report = crate::backup::prune_set(cfg, catalog, set, &tz, args.dry_run)
            .with_context(|| format!("pruning set {:?}", set.name))?;
        reports.push(report);
    }
    if args.json {
        super::print_json(&reports)?;
    } else {
        for r in &reports {
            print_report(r, &tz);
        }
    }
    Ok(Done::OK)
}

/// The policy in one line, as written in the config.
fn policy_line(r: &PruneReport) -> String {
    let p = &r.policy;
    let mut parts = Vec::new();
    for (name, v) in p.counts() {
        if let Some(n) = v {
            parts.push(format!(
                "{name} {}",
                if n == -1 { "all".into() } else { n.to_string() }
            ));
        }
    }
    if let Some(w) = p.within {
        parts.push(format!("within {}", humantime::format_duration(w)));
    }
    if parts.is_empty() {
        "none (everything is kept)".into()
    } else {
        parts.join(", ")
    }
}

/// Prints one set's table.
pub fn print_report(r: &PruneReport, tz: &jiff::tz::TimeZone) {
    println!(
        "{}: policy {}{}",
        r.set,
        policy_line(r),
        if r.dry_run { " (dry run)" } else { "" }
    );
    if r.rows.is_empty() {
        println!("  no backups");
        return;
    }
    println!(
        "  {:<34} {:<22} {:<10} {:<8} REASONS",
        "ID", "CREATED", "STATUS", "ACTION"
    );
    for row in &r.rows {
        let created = jiff::Timestamp::from_second(row.created_at)
            .map(|t| {
                t.to_zoned(tz.clone())
                    .strftime("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_default();
        let action = match row.action {
            Action::Keep => "KEEP",
            Action::Remove => "REMOVE",
            Action::Removed => "REMOVED",
            Action::Missing => "MISSING",
            Action::Refused => "REFUSED",
        };
        println!(
            "  {:<34} {:<22} {:<10} {:<8} {}",
            row.id,
            created,
            serde_json::to_value(row.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            action,
            row.reasons.join(", ")
        );
    }
    if r.removed > 0 || r.dry_run {
        let n = r
            .rows
            .iter()
            .filter(|x| matches!(x.action, Action::Remove | Action::Removed))
            .count();
        let bytes: u64 = r
            .rows
            .iter()
            .filter(|x| matches!(x.action, Action::Remove | Action::Removed))
            .map(|x| x.bytes)
            .sum();
        println!(
            "  {} {n} backups, {}",
            if r.dry_run { "would remove" } else { "removed" },
            super::show_bytes(bytes)
        );
    }
}
