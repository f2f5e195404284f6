//! The command line (clap types only); `commands/` turns each subcommand into work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// steward keeps a small self-hosted server healthy and recoverable: checks, maintenance,
/// verified compressed backups and incident restores.
#[derive(Debug, Parser)]
#[command(name = "steward", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: $STEWARD_CONFIG, /etc/steward/steward.toml,
    /// ~/.config/steward/steward.toml, else the embedded default).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "steward", out);
}

/// Writes the man page (roff).
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(out)
}

/// A point in time on the command line: RFC 3339, local civil time, or `@` Unix seconds.
fn parse_when(s: &str) -> Result<jiff::Timestamp, String> {
    if let Some(secs) = s.strip_prefix('@') {
        return secs
            .parse::<i64>()
            .ok()
            .and_then(|n| jiff::Timestamp::from_second(n).ok())
            .ok_or_else(|| format!("{s:?}: not a Unix time in seconds after `@`"));
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::system()).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            format!("{s:?}: not a time (RFC 3339 `2026-12-01T03:00Z`, local `2026-12-01 03:00`, or `@SECONDS`)")
        })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up the configured sets (all, or those named), verify each archive, record it.
    Backup(BackupArgs),
    /// List or rebuild the catalog of backups.
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// Read archives back in full and check them against their sidecar and manifest.
    Verify(VerifyArgs),
    /// Apply the retention policy: a table of every backup, KEEP or REMOVE and why.
    Prune(PruneArgs),
    /// Prove the newest good backup of each set restorable: restore it into a scratch
    /// folder (never over live data, no service stopped), check every file, database and
    /// dump there, run the set's drill-command, and record the time to restore.
    Drill(DrillArgs),
    /// Restore a backup: check it, stop the services using the data, swap it in, start them.
    Restore(RestoreArgs),
    /// Offsite copies on S3-compatible storage: upload, list, fetch back.
    #[command(subcommand)]
    Offsite(OffsiteCommand),
    /// One check cycle: a table of checks; exit 0 OK, 1 warning, 2 critical (Nagios).
    Check {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the daily, weekly or monthly maintenance tasks.
    Maintain {
        /// Which period's tasks.
        #[arg(value_enum)]
        period: Period,
        /// Show what would be done, change nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The capacity and activity report (runs, backup growth, disk forecast).
    Report {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one job once (the entry point for systemd timers and launchd): check, backup,
    /// backup:SET, daily, weekly, monthly, verify, prune, offsite, drill or drill-offsite.
    Run {
        /// The job to run.
        #[arg(
            value_name = "JOB",
            long_help = "The job to run:\n  \
              check       one check cycle (alerts, pings)\n  \
              backup      back up every set that has no schedule of its own, then prune\n  \
              backup:SET  back up the one set SET (its own [backup.set] schedule)\n  \
              daily       the daily maintenance tasks\n  \
              weekly      the weekly maintenance tasks\n  \
              monthly     the monthly maintenance tasks\n  \
              verify      read the newest backup of each set back in full\n  \
              prune       apply the retention policy to every set\n  \
              offsite     copy the newest backups to the offsite targets\n  \
              drill       restore drills of every set, from the local disk\n  \
              drill-offsite  restore drills from the [drill] offsite target"
        )]
        job: String,
    },
    /// Serve the status page (`/`), `/metrics` and `/health` over HTTP, read-only, until
    /// stopped. Loopback unless [serve] token-file is set.
    Serve {
        /// The address and port (default: [serve] listen, else 127.0.0.1:9910).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Every host of the fleet ([fleet]): its state as its signed status object in the
    /// bucket says, how long ago, and whether the signature is trusted. Exit 0 when every
    /// host is heard and trusted, 2 when one is silent or untrusted.
    Fleet {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Jobs (last run, next run, skipped ticks), newest backups and open problems.
    Status {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the runs the [schedule] makes in a time window, one `TIME JOB` line each, in
    /// the order the daemon and the generated timers start them.
    Schedule {
        /// The window's start (inclusive) and end (exclusive): RFC 3339 (`2026-12-01T03:00Z`),
        /// local time (`2026-12-01 03:00`) or Unix seconds (`@1764558000`).
        #[arg(long, num_args = 2, value_names = ["FROM", "TO"], required = true,
              value_parser = parse_when)]
        between: Vec<jiff::Timestamp>,
        /// Only these jobs (repeatable), e.g. `--job backup --job daily`.
        #[arg(long, value_name = "JOB")]
        job: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the jobs on their [schedule] until SIGTERM; SIGHUP reloads the config.
    Daemon,
    /// Write and enable systemd units or launchd plists for the [schedule].
    #[command(subcommand)]
    Install(InstallCommand),
    /// Remove exactly what `install` wrote.
    Uninstall {
        #[arg(value_enum)]
        target: InstallTarget,
        /// Print what would be removed and run, change nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Alert mail tools.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (e.g. `steward completions bash >
    /// /etc/bash_completion.d/steward`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; `steward man | man -l -`).
    Man,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Sets to back up (default: every configured set).
    #[arg(value_name = "SET")]
    pub sets: Vec<String>,
    /// Write a new archive even when nothing changed since the newest verified one.
    #[arg(long)]
    pub force: bool,
    /// A full backup, not a differential, for sets with differentials on.
    #[arg(long)]
    pub full: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Backups in the catalog, newest first.
    List {
        /// Only this set.
        #[arg(long, value_name = "SET")]
        set: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the catalog from the archives' own backup.json (a host rebuilt from the
    /// backup disk).
    Reindex {
        /// Rebuild the record of offsite copies from the buckets instead (this host's
        /// copies with their descriptions).
        #[arg(long)]
        offsite: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept a suspect backup after looking at it (e.g. a legitimate clean-up): it then
    /// counts as good for retention and checks.
    Accept {
        /// The backup (an id from `steward backups list`).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Keep a backup out of retention: prune never removes it.
    Pin {
        /// The backup (an id from `steward backups list`).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Let retention decide about a pinned backup again.
    Unpin {
        /// The backup (an id from `steward backups list`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The sets to drill (default: every set).
    #[arg(value_name = "SET")]
    pub sets: Vec<String>,
    /// Drill from this offsite target instead: the newest trusted copy of each set is
    /// downloaded, decrypted and restored in the scratch folder.
    #[arg(long, value_name = "TARGET")]
    pub offsite: Option<String>,
    /// With --offsite: the age identity file that decrypts the copies (default:
    /// [drill] identity).
    #[arg(long, value_name = "FILE", requires = "offsite")]
    pub identity: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup to verify (an id from `steward backups list`).
    #[arg(value_name = "ID", conflicts_with_all = ["latest", "all"])]
    pub id: Option<String>,
    /// The newest backup of each set (or of --set).
    #[arg(long, conflicts_with = "all")]
    pub latest: bool,
    /// Every backup in the catalog (or of --set).
    #[arg(long)]
    pub all: bool,
    /// Only backups of this set.
    #[arg(long, value_name = "SET")]
    pub set: Option<String>,
    /// Check the offsite copies instead: download each and compare its digest with the
    /// upload's (no identity needed).
    #[arg(long, conflicts_with = "id")]
    pub offsite: bool,
    /// With --offsite: only this target.
    #[arg(long, value_name = "NAME", requires = "offsite")]
    pub target: Option<String>,
    /// With --offsite: also decrypt each copy with this age identity file and check the
    /// whole archive (zstd frames, tar, every file against the manifest).
    #[arg(long, value_name = "FILE", requires = "offsite")]
    pub identity: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum OffsiteCommand {
    /// Upload the newest verified backup of each covered set that has no copy yet (all
    /// missing ones with --all).
    Push {
        /// Only this target (an `[[offsite]]` name).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Only this set.
        #[arg(long, value_name = "SET")]
        set: Option<String>,
        /// Every verified backup without a copy, not only the newest; and again those
        /// whose copy the bucket lost.
        #[arg(long)]
        all: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply each set's retention policy to its offsite copies (the same rules as
    /// `prune`: the newest good copy stays, suspect copies never count).
    Prune {
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// The host whose copies are pruned (default: this one); on the trusted machine
        /// that prunes for append-only hosts, `--all-hosts` or one `--host`.
        #[arg(long, value_name = "HOST", conflicts_with = "all_hosts")]
        host: Option<String>,
        /// Every host under the prefix.
        #[arg(long)]
        all_hosts: bool,
        /// Show what would be deleted, delete nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The complete copies in the bucket (this host's, or every host's).
    List {
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Every host under the prefix, not only this one.
        #[arg(long)]
        all_hosts: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a copy, decrypt it, check it against the digest it was verified with and
    /// put the archive in the backup destination (then `steward restore ID`).
    Fetch {
        /// The backup ID (see `steward offsite list`).
        #[arg(value_name = "ID")]
        id: String,
        /// The target to fetch from (default: the first).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// The age identity file (`age-keygen -o key.txt`) the copies are encrypted to.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The host whose copy it is (required when two hosts have a copy with this ID).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
    },
    /// This host's signing public key, made if it has none: put it in the recovery kit
    /// and in `signing-keys` of the config you would restore with.
    Key {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this set.
    #[arg(long, value_name = "SET")]
    pub set: Option<String>,
    /// Show what would be removed, remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (an id from `steward backups list`); without it, a picker on a
    /// terminal.
    #[arg(value_name = "ID", conflicts_with_all = ["latest", "resume", "cleanup"])]
    pub id: Option<String>,
    /// Only backups of this set (for the picker and --latest).
    #[arg(long, value_name = "SET")]
    pub set: Option<String>,
    /// The newest verified backup (of --set).
    #[arg(long)]
    pub latest: bool,
    /// Restore under DIR instead of in place: no services stopped, nothing replaced.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Restore only entries whose absolute path matches GLOB (repeatable).
    #[arg(long = "path", value_name = "GLOB")]
    pub paths: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Leave the services running.
    #[arg(long)]
    pub no_quiesce: bool,
    /// Accept symlinks pointing outside the restored paths (recreated, never followed).
    #[arg(long)]
    pub allow_external_symlinks: bool,
    /// Restore a backup the change guard found suspect, given by its ID, after looking at
    /// its reasons (`--yes` alone does not restore one).
    #[arg(long, requires = "id")]
    pub suspect_ok: bool,
    /// Swap although processes hold files under the restored paths open (their later
    /// writes go to the copy moved aside, which is kept and reported as changed).
    #[arg(long)]
    pub ignore_open_files: bool,
    /// Also replace live entries the set's exclude rules leave out (never backed up);
    /// by default an in-place restore keeps them.
    #[arg(long)]
    pub replace_excluded: bool,
    /// Also start the services the set names that were not running before the restore
    /// (otherwise they stay stopped, and the result says how to start them).
    #[arg(long)]
    pub start_stopped: bool,
    /// Fetch the backup ID from the offsite copies first (the host is gone): download,
    /// decrypt with --identity and verify it before anything is stopped.
    #[arg(long, requires = "id")]
    pub from_offsite: bool,
    /// The age identity file for --from-offsite.
    #[arg(long, value_name = "FILE", requires = "from_offsite")]
    pub identity: Option<PathBuf>,
    /// With --from-offsite: the host whose copy it is (required when two hosts have a
    /// copy with this ID).
    #[arg(long, value_name = "HOST", requires = "from_offsite")]
    pub host: Option<String>,
    /// With --from-offsite: the target to fetch from (default: the first).
    #[arg(long, value_name = "NAME", requires = "from_offsite")]
    pub target: Option<String>,
    /// Finish a restore that was interrupted (power loss, SIGKILL) and start its services.
    #[arg(long, conflicts_with_all = ["cleanup", "latest"])]
    pub resume: bool,
    /// List the copies of replaced data that earlier restores kept (size, age, changed
    /// after the swap) and remove them once confirmed (a terminal's y, or --yes).
    #[arg(long, conflicts_with = "latest")]
    pub cleanup: bool,
    /// Before service NAME starts (systemd ExecStartPre=, a launchd or shell wrapper):
    /// exit 0 when its data is whole, finishing or undoing an interrupted restore that
    /// stopped it; exit 75 while a running restore has it stopped; 2 when the data cannot
    /// be brought to rest.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with_all = ["id", "latest", "resume", "cleanup", "to", "paths", "dry_run"]
    )]
    pub guard: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// systemd units: one oneshot service + timer per job, or the daemon.
    Systemd {
        /// Units for the user's systemd (`systemctl --user`).
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// System units (the default).
        #[arg(long)]
        system: bool,
        #[arg(long, value_enum, default_value = "timers")]
        mode: InstallMode,
        /// Print the files and commands, write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Where to write the units (default /etc/systemd/system or ~/.config/systemd/user).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// The steward binary the units run (default: this one).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// systemd's RandomizedDelaySec for the timers.
        #[arg(long, default_value = "0")]
        randomized_delay: String,
    },
    /// launchd plists: one per job, or the daemon.
    Launchd {
        /// A LaunchAgent in the user's session (the default).
        #[arg(long, conflicts_with = "daemon")]
        agent: bool,
        /// A LaunchDaemon (system).
        #[arg(long)]
        daemon: bool,
        #[arg(long, value_enum, default_value = "timers")]
        mode: InstallMode,
        /// Print the files and commands, write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Where to write the plists (default ~/Library/LaunchAgents or /Library/LaunchDaemons).
        #[arg(long, value_name = "DIR")]
        plist_dir: Option<PathBuf>,
        /// The steward binary the plists run (default: this one).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
}

/// What drives the jobs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InstallMode {
    Timers,
    Daemon,
}

/// Which service manager.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InstallTarget {
    Systemd,
    Launchd,
}

/// A maintenance period.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl From<Period> for crate::schedule::Period {
    fn from(p: Period) -> Self {
        match p {
            Period::Daily => crate::schedule::Period::Daily,
            Period::Weekly => crate::schedule::Period::Weekly,
            Period::Monthly => crate::schedule::Period::Monthly,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a test mail now and report how the SMTP conversation went.
    Test,
    /// Send the mails waiting in the outbox now.
    Flush,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values.
    Check {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}
