//! steward's integration tests: one binary, each test in its own temp dir with a clean
//! environment (HOME inside the temp dir, no inherited STEWARD_* variables), driving the
//! real `steward` binary and real tools (tar, zstd, sha256sum, sqlite).

// A test that unwraps fails loudly at the place that broke, which is what a test wants.
#![allow(clippy::unwrap_used)]
// The file names compared are the tests' own, in lower case.
#![allow(clippy::case_sensitive_file_extension_comparisons)]

mod common;

mod alerts;
mod architecture;
mod mail;
mod s3;

mod backup;
mod config;
mod crash;
mod daemon;
mod differential;
mod docs;
mod drill;
mod fleet;
mod fuzz;
mod heal;
mod hooks;
mod hostile;
mod hosts;
mod live;
mod maintain;
mod month;
mod notify;
mod offsite;
mod offsite_attack;
mod packaging;
mod postgres;
mod prune;
mod redis;
mod restic;
mod restore;
mod robust;
mod runbook;
mod serve;
mod suspect;
mod sweep;
mod verify;
