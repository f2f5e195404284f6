//! steward's integration tests: one binary, each test in its own temp dir with a clean
//! environment (HOME inside the temp dir, no inherited STEWARD_* variables), driving the
//! real `steward` binary and real tools (tar, zstd, sha256sum, sqlite).

// A test that unwraps fails loudly at the place that broke, which is what a test wants.
#![allow(clippy::unwrap_used)]
// The file names compared are the tests' own, in lower case.
#![allow(clippy::case_sensitive_file_extension_comparisons)]

#[path = "integration/common.rs"]
mod common;

#[path = "integration/alerts.rs"]
mod alerts;
#[path = "integration/mail.rs"]
mod mail;
#[path = "integration/s3.rs"]
mod s3;

#[path = "integration/backup.rs"]
mod backup;
#[path = "integration/config.rs"]
mod config;
#[path = "integration/crash.rs"]
mod crash;
#[path = "integration/daemon.rs"]
mod daemon;
#[path = "integration/docs.rs"]
mod docs;
#[path = "integration/fuzz.rs"]
mod fuzz;
#[path = "integration/heal.rs"]
mod heal;
#[path = "integration/hooks.rs"]
mod hooks;
#[path = "integration/hostile.rs"]
mod hostile;
#[path = "integration/hosts.rs"]
mod hosts;
#[path = "integration/live.rs"]
mod live;
#[path = "integration/maintain.rs"]
mod maintain;
#[path = "integration/month.rs"]
mod month;
#[path = "integration/notify.rs"]
mod notify;
#[path = "integration/offsite.rs"]
mod offsite;
#[path = "integration/offsite_attack.rs"]
mod offsite_attack;
#[path = "integration/packaging.rs"]
mod packaging;
#[path = "integration/postgres.rs"]
mod postgres;
#[path = "integration/prune.rs"]
mod prune;
#[path = "integration/redis.rs"]
mod redis;
#[path = "integration/restic.rs"]
mod restic;
#[path = "integration/restore.rs"]
mod restore;
#[path = "integration/robust.rs"]
mod robust;
#[path = "integration/runbook.rs"]
mod runbook;
#[path = "integration/suspect.rs"]
mod suspect;
#[path = "integration/sweep.rs"]
mod sweep;
#[path = "integration/verify.rs"]
mod verify;
